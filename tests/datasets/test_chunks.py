"""LocalChunks: chunk files written straight to disk, the same bytes zarr writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from wmrobot.datasets import EpisodeStore
from wmrobot.datasets.chunks import LocalChunks

BLOSC = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


def _pair(root: zarr.Group, name: str, rows: int, chunk: int, shape=(), dtype="float64", **kw):
    """Two empty arrays alike: one for zarr to write, one for LocalChunks."""
    fill = np.nan if np.dtype(dtype).kind == "f" else 0
    kw = dict(shape=(rows, *shape), chunks=(chunk, *shape), dtype=dtype, fill_value=fill, **kw)
    kw.setdefault("compressors", BLOSC)
    return root.create_array(f"{name}_zarr", **kw), root.create_array(f"{name}_ours", **kw)


def _chunk_files(array: zarr.Array, folder: Path) -> dict[str, bytes]:
    base = folder / array.path
    return {
        str(p.relative_to(base)): p.read_bytes() for p in (base / "c").rglob("*") if p.is_file()
    }


@pytest.mark.parametrize(
    "dtype, shape, chunk",
    [("float64", (17,), 64), ("float32", (6,), 256), ("bool", (), 1024), ("int64", (), 32)],
)
def test_appends_write_the_bytes_zarr_writes(tmp_path, dtype, shape, chunk):
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    theirs, ours = _pair(root, "x", 3 * chunk, chunk, shape, dtype)
    writer = LocalChunks.of(ours)
    assert writer is not None
    values = (np.random.default_rng(0).random((5 * chunk // 2, *shape)) * 100).astype(dtype)
    # appends that start and end inside chunks, and one that spans a whole chunk
    for lo, hi in [(0, chunk // 3), (chunk // 3, chunk + 7), (chunk + 7, 5 * chunk // 2)]:
        theirs[lo:hi] = values[lo:hi]
        writer.write(lo, values[lo:hi])

    np.testing.assert_array_equal(ours[:], theirs[:])
    files = _chunk_files(ours, tmp_path / "g.zarr")
    assert sorted(files) == [
        "c/0" + "/0" * len(shape),
        "c/1" + "/0" * len(shape),
        "c/2" + "/0" * len(shape),
    ]
    assert files == _chunk_files(theirs, tmp_path / "g.zarr")


def test_an_append_after_a_chunk_zarr_left_unwritten_keeps_its_fill(tmp_path):
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    array = root.create_array(
        "x", shape=(16,), chunks=(8,), dtype="float64", fill_value=np.nan, compressors=BLOSC
    )
    array[:3] = np.nan  # fill values only: zarr writes no chunk file
    assert not (tmp_path / "g.zarr" / "x" / "c" / "0").exists()
    LocalChunks.of(array).write(3, np.arange(7.0))
    np.testing.assert_array_equal(array[:], [np.nan] * 3 + list(range(7)) + [np.nan] * 6)


def test_other_layouts_go_through_zarr(tmp_path):
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    zstd = root.create_array("zstd", shape=(8,), chunks=(4,), dtype="float64")  # zarr's default
    split = root.create_array(
        "split", shape=(8, 4), chunks=(4, 2), dtype="float64", compressors=BLOSC
    )
    memory = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    remote = memory.create_array("x", shape=(8,), chunks=(4,), dtype="float64", compressors=BLOSC)
    assert [LocalChunks.of(a) for a in (zstd, split, remote)] == [None, None, None]


def test_a_write_cut_short_leaves_the_old_chunk_and_a_file_opening_removes(
    new_store, make_episode, tmp_path, monkeypatch
):
    rng = np.random.default_rng(0)
    first = make_episode(3, rng)
    store = new_store()
    store.append([first])

    def crash(*args):
        raise OSError("disk died")

    monkeypatch.setattr("wmrobot.files.os.replace", crash)
    with pytest.raises(OSError, match="disk died"):
        store.append([make_episode(4, rng)])
    monkeypatch.undo()
    assert list((tmp_path / "d.zarr").rglob("*.partial"))

    again = EpisodeStore.open(tmp_path / "d.zarr", mode="a")
    assert not list((tmp_path / "d.zarr").rglob("*.partial"))
    assert again.n_episodes == 1
    np.testing.assert_array_equal(again.episode(0)["obs"], first["obs"])
    second = make_episode(2, rng)
    again.append([second])
    np.testing.assert_array_equal(
        EpisodeStore.open(tmp_path / "d.zarr").episode(1)["obs"], second["obs"]
    )


def test_a_new_datasets_arrays_are_all_written_directly(new_store):
    arrays = [a for _, a in new_store().group.members(max_depth=None) if isinstance(a, zarr.Array)]
    assert len(arrays) == 3 + 5  # data/obs, action, reward; meta/episode_ends ... success
    assert all(LocalChunks.of(a) is not None for a in arrays)
