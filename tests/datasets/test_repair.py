"""Checksums, `data validate --deep` and `data repair`: flipped bytes are found and rolled back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import wmrobot.datasets.store as store_module
from wmrobot.data_cli import main
from wmrobot.datasets import EpisodeStore, WindowSampler
from wmrobot.datasets.accel.store import DirectStore
from wmrobot.datasets.repair import DERIVED, diagnose, repair
from wmrobot.errors import DatasetError

ROW_SHAPES = {"obs": ((3,), "float32"), "action": ((2,), "float32"), "reward": ((), "float32")}
META = ("episode_ends", "length", "seed", "return", "success")


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """30 synthetic episodes (555 rows) in small chunks: 64 rows, 8 episodes; as the
    collector writes them (directly, a few appends, then the quantiles)."""
    from conftest import synthetic_episode

    path = tmp_path_factory.mktemp("good") / "d.zarr"
    rng = np.random.default_rng(0)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(store_module, "ROW_CHUNK", 64)
        m.setattr(store_module, "ROW_CHUNK_MAX", 64)
        m.setattr(store_module, "EPISODE_CHUNK", 8)
        store = DirectStore.create(
            path, env={"id": "synthetic", "kwargs": {}}, spaces={}, row_shapes=ROW_SHAPES
        )
        for batch in range(5):
            steps = rng.integers(5, 30, size=6)
            store.append(
                [synthetic_episode(int(n), rng, seed=10 * batch + i) for i, n in enumerate(steps)]
            )
        store.finalize_stats()
    return path


def _copy(good: Path, tmp_path: Path, name: str = "d.zarr") -> Path:
    copy = tmp_path / name
    shutil.copytree(good, copy)
    return copy


def _flip(file: Path, rng: np.random.Generator, count: int) -> None:
    """Flip ``count`` bytes of ``file`` at random places (each XORed with a non-zero byte)."""
    data = bytearray(file.read_bytes())
    for at in rng.choice(len(data), size=min(count, len(data)), replace=False):
        data[at] ^= int(rng.integers(1, 256))
    file.write_bytes(bytes(data))


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def _expected_keep(original: EpisodeStore, name: str, index: int) -> int:
    """Episodes a damaged chunk ``index`` of ``name`` leaves: those before its first row (data
    arrays), before its first entry (per-episode arrays), all of them (derived ones)."""
    size = original.node(name).chunks[0]
    if name.startswith("data/"):
        return int(np.searchsorted(original.episode_ends, index * size, side="right"))
    if name.split("/")[1] in DERIVED:
        return original.n_episodes
    return index * size


def _assert_prefix(repaired: EpisodeStore, original: EpisodeStore, keep: int) -> None:
    """``repaired`` holds exactly ``original``'s first ``keep`` episodes."""
    assert repaired.n_episodes == keep
    ends = original.episode_ends[:keep]
    np.testing.assert_array_equal(repaired.episode_ends, ends)
    rows = int(ends[-1]) if keep else 0
    assert repaired.n_rows == rows
    for key, values in repaired.load().items():
        np.testing.assert_array_equal(values, original.load([key])[key][:rows])
    for key in ("length", "seed", "success"):
        np.testing.assert_array_equal(repaired.meta(key), original.meta(key)[:keep])
    np.testing.assert_allclose(repaired.meta("return"), original.meta("return")[:keep], rtol=1e-5)


def test_flipped_bytes_in_20_random_chunks_are_found_and_rolled_back(
    good, tmp_path, capsys, read_plainly
):
    # The must-show: a random chunk of a random array (data/* and meta/*), 1 to 8 bytes
    # flipped; `validate --deep` names it, `repair` keeps exactly the committed episodes before
    # it (all of them for a derived array), keeps a copy of it, and appending works again.
    rng = np.random.default_rng(21)
    original = EpisodeStore.open(good)
    names = [f"data/{k}" for k in ROW_SHAPES] + [f"meta/{k}" for k in META]
    seen = set()
    for trial in range(20):
        copy = _copy(good, tmp_path / f"trial{trial}")
        name = names[rng.integers(len(names))]
        files = sorted(f for f in (copy / name / "c").rglob("*") if f.is_file())
        chunk = files[rng.integers(len(files))]
        key = chunk.relative_to(copy / name).as_posix()
        _flip(chunk, rng, int(rng.integers(1, 9)))
        damaged = chunk.read_bytes()
        seen.add(name)

        assert main(["validate", str(copy), "--deep"]) == 2, (name, key)
        assert f"chunk {key} of {name} is damaged (checksum mismatch)" in _one_line(capsys)
        assert main(["repair", str(copy)]) == 0
        out = capsys.readouterr().out
        keep = _expected_keep(original, name, int(key.split("/")[1]))
        assert f"kept {keep} episodes" in out, (name, key, out)
        assert main(["validate", str(copy), "--deep"]) == 0, capsys.readouterr().err
        _assert_prefix(EpisodeStore.open(copy), original, keep)
        assert len(read_plainly(copy)[0]) == keep  # shrunk: plain zarr sees what is kept
        (kept_copy,) = copy.parent.glob("d.zarr.repair-*")
        assert (kept_copy / name / key).read_bytes() == damaged
        assert json.loads((kept_copy / "repair.json").read_text())["kept"]["n_episodes"] == keep

        kind = (EpisodeStore, DirectStore)[trial % 2]  # appends after a repair, both writers
        again = kind.open(copy, mode="a")
        again.append([original.iter_episodes().__next__()])
        assert main(["validate", str(copy), "--deep"]) == 0, capsys.readouterr().err
    assert len(seen) >= 6  # most arrays were hit


def test_eight_bytes_flipped_in_an_observation_chunk_stop_every_read(good, tmp_path, capsys):
    # The case: validate said ok and training ran on the damaged values.
    copy = _copy(good, tmp_path)
    _flip(copy / "data" / "obs" / "c" / "2" / "0", np.random.default_rng(0), 8)
    line = "chunk c/2/0 of data/obs is damaged (checksum mismatch); run `wmrobot data validate"
    assert main(["validate", str(copy)]) == 2
    assert line in _one_line(capsys)
    store = EpisodeStore.open(copy)  # the quick checks at open do not read data/
    episode = int(np.searchsorted(store.episode_ends, 2 * 64, side="right"))
    reads = [
        lambda: store.load(),
        lambda: store.episode(episode),
        lambda: list(store.iter_episodes()),
        lambda: WindowSampler(store, ["obs", "action"], 4, cache=True),
        lambda: WindowSampler(store, ["obs"], 4, cache=False).batch(list(range(100, 300))),
    ]
    for read in reads:
        with pytest.raises(DatasetError, match=r"chunk c/2/0 of data/obs is damaged"):
            read()
    store.episode(0)  # the undamaged chunks still read
    WindowSampler(store, ["obs"], 4, cache=False).batch(list(range(100)))


def test_four_bytes_flipped_in_meta_return_are_found_and_recomputed(good, tmp_path, capsys):
    copy = _copy(good, tmp_path)
    _flip(copy / "meta" / "return" / "c" / "1", np.random.default_rng(1), 4)
    assert main(["validate", str(copy)]) == 2  # plain validate reads the per-episode arrays
    assert "chunk c/1 of meta/return is damaged" in _one_line(capsys)
    assert main(["validate", str(copy), "--deep"]) == 2
    assert "keeps 30 episodes" in _one_line(capsys)
    assert main(["repair", str(copy)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "kept 30 episodes" in out and "dropped 0 episodes" in out and "meta/return" in out
    _assert_prefix(EpisodeStore.open(copy), EpisodeStore.open(good), 30)


def test_derived_entries_that_disagree_are_recomputed(good, tmp_path, capsys):
    # Written with good checksums but wrong (an old bug, a hand edit): recomputed, nothing lost.
    import zarr

    copy = _copy(good, tmp_path)
    group = zarr.open_group(copy, mode="r+")
    group["meta/length"][3] = 999
    group["meta/return"][5] = 1e6
    assert main(["validate", str(copy), "--deep"]) == 2
    assert "meta/length of episode 3 disagrees with meta/episode_ends" in _one_line(capsys)
    assert main(["repair", str(copy)]) == 0
    _assert_prefix(EpisodeStore.open(copy), EpisodeStore.open(good), 30)


def test_a_healthy_dataset_needs_no_repair_and_is_left_as_it_was(good, tmp_path, capsys, tree_of):
    copy = _copy(good, tmp_path)
    before = tree_of(copy.parent)
    for args in (["repair", str(copy)], ["repair", str(copy), "--dry-run"]):
        assert main(args) == 0
        assert "nothing needs repair" in capsys.readouterr().out
    assert tree_of(copy.parent) == before
    assert main(["validate", str(copy), "--deep"]) == 0
    out = capsys.readouterr().out
    assert "deep" in out and "carry none" not in out


def test_a_dry_run_says_what_it_would_do_and_changes_nothing(good, tmp_path, capsys, tree_of):
    copy = _copy(good, tmp_path)
    _flip(copy / "data" / "action" / "c" / "4" / "0", np.random.default_rng(2), 3)
    before = tree_of(copy.parent)
    assert main(["repair", str(copy), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    keep = _expected_keep(EpisodeStore.open(good), "data/action", 4)
    assert f"would keep {keep} episodes" in out and "nothing changed" in out
    assert tree_of(copy.parent) == before


def test_a_damaged_root_document_is_refused_in_one_line(good, tmp_path, capsys, tree_of):
    copy = _copy(good, tmp_path)
    root = copy / "zarr.json"
    root.write_bytes(root.read_bytes()[:-40])  # cut short: no longer JSON
    before = tree_of(copy.parent)
    assert main(["repair", str(copy)]) == 2
    assert "root zarr.json" in _one_line(capsys) and tree_of(copy.parent) == before


def test_a_damaged_spine_keeps_the_episodes_it_still_bounds(good, tmp_path):
    copy = _copy(good, tmp_path)
    _flip(copy / "meta" / "episode_ends" / "c" / "2", np.random.default_rng(3), 2)
    with pytest.raises(DatasetError, match="chunk c/2 of meta/episode_ends"):
        EpisodeStore.open(copy)  # every open reads the spine
    result = repair(copy)
    assert result.kept[0] == 16 and result.dropped[0] == 14
    _assert_prefix(EpisodeStore.open(copy), EpisodeStore.open(good), 16)


def test_a_dataset_written_before_checksums_opens_appends_and_validates(
    good, tmp_path, capsys, without_checksums, make_episode
):
    copy = _copy(good, tmp_path)
    without_checksums(copy)
    original = EpisodeStore.open(good)
    old = EpisodeStore.open(copy)
    np.testing.assert_array_equal(old.load()["obs"], original.load()["obs"])
    assert diagnose(old).unchecked == [f"data/{k}" for k in ROW_SHAPES] + [
        f"meta/{k}" for k in META
    ]
    episode = make_episode(40, np.random.default_rng(4))
    DirectStore.open(copy, mode="a").append([episode])  # through the direct writer
    EpisodeStore.open(copy, mode="a").append([episode])  # and through zarr
    for document in copy.rglob("zarr.json"):  # still the old layout
        assert "crc32c" not in document.read_text()
    np.testing.assert_array_equal(EpisodeStore.open(copy).episode(-1)["obs"], episode["obs"])
    assert main(["validate", str(copy), "--deep"]) == 0
    assert "carry none" in capsys.readouterr().out
    assert main(["validate", str(copy)]) == 0


def test_a_row_that_breaks_a_rule_drops_its_episode_and_those_after(good, tmp_path, capsys):
    # Values written with good checksums but against the format: the earliest decides.
    import zarr

    copy = _copy(good, tmp_path)
    original = EpisodeStore.open(good)
    ends = original.episode_ends
    group = zarr.open_group(copy, mode="r+")
    group["data/obs"][int(ends[20]) + 1] = np.nan  # in episode 21
    group["data/action"][int(ends[12]) - 1] = 0.5  # episode 12's final row: must be NaN
    assert main(["validate", str(copy), "--deep"]) == 2
    err = _one_line(capsys)
    assert "an episode's last row has an action" in err and "keeps the first 12 of 30" in err
    assert main(["repair", str(copy)]) == 0
    _assert_prefix(EpisodeStore.open(copy), original, 12)


def test_a_damaged_array_document_is_refused_in_one_line(good, tmp_path, capsys, tree_of):
    copy = _copy(good, tmp_path)
    document = copy / "meta" / "seed" / "zarr.json"
    _flip(document, np.random.default_rng(5), 4)
    document.write_bytes(b"\xff" + document.read_bytes())  # whatever was flipped: not UTF-8
    before = tree_of(copy.parent)
    for args in (["validate", str(copy), "--deep"], ["repair", str(copy)]):
        assert main(args) == 2
        assert "meta/seed/zarr.json is damaged" in _one_line(capsys)
    assert tree_of(copy.parent) == before
