"""Local arrays, groups and stores written without zarr: the documents and bytes zarr writes."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from wmrobot.datasets import EpisodeStore
from wmrobot.datasets.accel.chunks import LocalArray, LocalGroup
from wmrobot.datasets.accel.store import DirectStore
from wmrobot.errors import DatasetError

ROW_SHAPES = {"obs": ((3,), "float32"), "action": ((2,), "float32"), "reward": ((), "float32")}


@pytest.fixture
def new_store(new_store):
    """conftest's synthetic store, writing its chunks directly."""
    return functools.partial(new_store, kind=DirectStore)


def _blosc(shuffle="shuffle"):
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle=shuffle)


def _codecs(shuffle="shuffle", checksum=True):
    """What the store gives a new array: Blosc, then (since checksums) zarr's CRC32C."""
    return [_blosc(shuffle), *([zarr.codecs.Crc32cCodec()] if checksum else [])]


def _documents(folder: Path) -> dict[str, dict]:
    """Every ``zarr.json`` under ``folder``, parsed, by path."""
    return {
        str(p.parent.relative_to(folder)): json.loads(p.read_text())
        for p in sorted(folder.rglob("zarr.json"))
    }


def _chunk_files(folder: Path) -> dict[str, bytes]:
    files = (folder / "c").rglob("*")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files if p.is_file()}


@pytest.mark.parametrize("checksum", [True, False], ids=["crc32c", "before-checksums"])
@pytest.mark.parametrize(
    "dtype, shape, chunk, shuffle",
    [
        ("float64", (17,), 64, "shuffle"),
        ("float32", (6,), 256, "shuffle"),
        ("bool", (), 1024, "shuffle"),
        ("int64", (), 32, "shuffle"),
        ("uint8", (4, 4, 3), 16, "noshuffle"),
    ],
)
def test_an_array_grown_and_appended_to_is_what_zarr_writes(
    tmp_path, dtype, shape, chunk, shuffle, checksum
):
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    fill = np.nan if np.dtype(dtype).kind == "f" else 0
    kw = dict(shape=(chunk, *shape), chunks=(chunk, *shape), dtype=dtype, fill_value=fill)
    theirs = root.create_array("theirs", compressors=_codecs(shuffle, checksum), **kw)
    ours = LocalArray.create(tmp_path / "g.zarr" / "ours", shuffle=shuffle, checksum=checksum, **kw)
    folders = {"theirs": tmp_path / "g.zarr" / "theirs", "ours": tmp_path / "g.zarr" / "ours"}
    assert _documents(folders["ours"]) == _documents(folders["theirs"])

    theirs.resize((3 * chunk, *shape))
    ours.resize((3 * chunk, *shape))
    assert _documents(folders["ours"]) == _documents(folders["theirs"])
    values = (np.random.default_rng(0).random((5 * chunk // 2, *shape)) * 100).astype(dtype)
    # appends that start and end inside chunks, and one that spans a whole chunk
    for lo, hi in [(0, chunk // 3), (chunk // 3, chunk + 7), (chunk + 7, 5 * chunk // 2)]:
        theirs[lo:hi] = values[lo:hi]
        ours.write(lo, values[lo:hi])

    read = zarr.open_array(folders["ours"], mode="r")
    assert read.shape == (3 * chunk, *shape)
    np.testing.assert_array_equal(read[:], theirs[:])
    files = _chunk_files(folders["ours"])
    assert sorted(files) == [f"c/{i}" + "/0" * len(shape) for i in range(3)]
    assert files == _chunk_files(folders["theirs"])
    assert LocalArray.open(folders["theirs"]).document == ours.document  # and it reads zarr's
    assert [c["name"] for c in ours.document["codecs"]][2:] == (["crc32c"] if checksum else [])


def test_a_damaged_chunk_under_a_partial_write_is_refused_not_rewritten(tmp_path):
    # An append that starts inside a chunk reads the chunk back: one that fails its checksum
    # is named, and left as it is, rather than decoded into garbage and written over.
    root = zarr.open_group(tmp_path / "d.zarr", mode="w")
    kw = dict(shape=(16, 3), chunks=(8, 3), dtype="float64", fill_value=np.nan)
    root.create_group("data").create_array("obs", compressors=_codecs(), **kw)
    ours = LocalArray.open(tmp_path / "d.zarr" / "data" / "obs", "data/obs")
    ours.write(0, np.ones((3, 3)))
    chunk = tmp_path / "d.zarr" / "data" / "obs" / "c" / "0" / "0"
    damaged = bytearray(chunk.read_bytes())
    damaged[10] ^= 0xFF
    chunk.write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match=r"chunk c/0/0 of data/obs is damaged \(checksum"):
        ours.write(3, np.ones((2, 3)))
    assert chunk.read_bytes() == bytes(damaged)


@pytest.mark.parametrize("dtype, shape, chunk", [("float32", (6,), 8), ("uint8", (4, 4, 3), 4)])
def test_an_array_shrunk_is_what_zarr_leaves(tmp_path, dtype, shape, chunk):
    # zarr deletes the chunk files wholly past the new shape (their folders stay), keeps the
    # last one whole, then writes the document: the same files, and the same after growing.
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    kw = dict(shape=(4 * chunk, *shape), chunks=(chunk, *shape), dtype=dtype, fill_value=0)
    theirs = root.create_array("theirs", compressors=_codecs(), **kw)
    ours = LocalArray.create(tmp_path / "g.zarr" / "ours", **kw)
    folders = {"theirs": tmp_path / "g.zarr" / "theirs", "ours": tmp_path / "g.zarr" / "ours"}
    values = (np.random.default_rng(0).random((4 * chunk, *shape)) * 100).astype(dtype)
    theirs[:] = values
    ours.write(0, values)
    for length in (chunk + 1, chunk, 0):
        theirs.resize((length, *shape))
        ours.resize((length, *shape))
        assert ours.shape == (length, *shape)
        assert _documents(folders["ours"]) == _documents(folders["theirs"])
        assert _chunk_files(folders["ours"]) == _chunk_files(folders["theirs"])
        assert _tree(folders["ours"]) == _tree(folders["theirs"])
        np.testing.assert_array_equal(zarr.open_array(folders["ours"], mode="r")[:], theirs[:])
    theirs.resize((2 * chunk, *shape))  # grown again: chunks past the old shape hold fill
    ours.resize((2 * chunk, *shape))
    theirs[1:3] = values[:2]
    ours.write(1, values[:2])
    assert _chunk_files(folders["ours"]) == _chunk_files(folders["theirs"])


def _tree(folder: Path) -> list[str]:
    """Every file and folder under ``folder``, as relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_new_datasets_documents_are_the_ones_zarr_writes(tmp_path, make_episode):
    # Every array of a dataset with images, several dtypes and factors of variation, made again
    # by zarr from what zarr reads of it: the same documents.
    episode = make_episode(5, np.random.default_rng(0))
    episode["pixels"] = np.zeros((6, 8, 8, 3), dtype=np.uint8)
    episode["done"] = np.zeros(6, dtype=bool)
    episode["factors"] = {"mass": 1.5}
    shapes = {k: (v.shape[1:], str(v.dtype)) for k, v in episode.items() if hasattr(v, "shape")}
    store = DirectStore.create(
        tmp_path / "d.zarr",
        env={"id": "synthetic", "kwargs": {}},
        spaces={},
        row_shapes=shapes,
        factors={"names": ["mass"], "ranges": {"mass": [1.0, 2.0]}},
    )
    store.append([episode] * 3)  # grown from empty
    ours = _documents(tmp_path / "d.zarr")
    again = zarr.open_group(tmp_path / "again.zarr", mode="w", attributes=ours["."]["attributes"])
    for name, document in ours.items():
        if document["node_type"] == "array":
            made = zarr.open_array(tmp_path / "d.zarr" / name, mode="r")
            again.create_array(
                name,
                shape=made.shape,
                chunks=made.chunks,
                dtype=made.dtype,
                fill_value=made.fill_value,
                compressors=made.compressors,
            )
    assert ours == _documents(tmp_path / "again.zarr")
    assert all(  # every array carries zarr's checksums
        d["codecs"][-1] == {"name": "crc32c"} for d in ours.values() if d["node_type"] == "array"
    )
    # the layout the store chose, spelled as zarr spells it
    assert ours["data/pixels"]["codecs"][1]["configuration"]["shuffle"] == "noshuffle"
    assert ours["data/obs"]["codecs"][1]["configuration"]["shuffle"] == "shuffle"
    assert ours["data/obs"]["fill_value"] == "NaN" and ours["meta/success"]["fill_value"] is False
    assert sorted(ours) == sorted(
        [".", "data", "meta", *(f"data/{k}" for k in shapes), "meta/factors"]
        + [f"meta/{k}" for k in ("episode_ends", "length", "seed", "return", "success")]
    )
    np.testing.assert_array_equal(
        EpisodeStore.open(tmp_path / "d.zarr").episode(2)["obs"], episode["obs"]
    )


def test_an_append_after_a_chunk_zarr_left_unwritten_keeps_its_fill(tmp_path):
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    array = root.create_array(
        "x", shape=(16,), chunks=(8,), dtype="float64", fill_value=np.nan, compressors=_blosc()
    )
    array[:3] = np.nan  # fill values only: zarr writes no chunk file
    assert not (tmp_path / "g.zarr" / "x" / "c" / "0").exists()
    LocalArray.open(tmp_path / "g.zarr" / "x").write(3, np.arange(7.0))
    np.testing.assert_array_equal(array[:], [np.nan] * 3 + list(range(7)) + [np.nan] * 6)


def test_other_layouts_go_through_zarr(tmp_path, new_store, make_episode):
    root = zarr.open_group(tmp_path / "g.zarr", mode="w")
    root.create_array("zstd", shape=(8,), chunks=(4,), dtype="float64")  # zarr's default
    root.create_array("split", shape=(8, 4), chunks=(4, 2), dtype="float64", compressors=_blosc())
    root.create_array(
        "dots",
        shape=(8,),
        chunks=(4,),
        dtype="float64",
        compressors=_blosc(),
        chunk_key_encoding={"name": "default", "separator": "."},
    )
    group = LocalGroup(tmp_path / "g.zarr", {})
    assert [group.array(a) for a in ("zstd", "split", "dots")] == [None, None, None]

    # A dataset whose obs array zarr made in such a layout: appends to it go through zarr.
    store = new_store()
    obs = store.node("data/obs")
    store.group.create_array(
        "data/obs",
        shape=obs.shape,
        chunks=obs.chunks,
        dtype=obs.dtype,
        fill_value=np.nan,
        overwrite=True,
    )
    again = DirectStore.open(store.path, mode="a")
    episode = make_episode(7, np.random.default_rng(0))
    again.append([episode])
    assert again._local.array("data/obs") is None and again._local.array("data/action")
    np.testing.assert_array_equal(EpisodeStore.open(store.path).episode(0)["obs"], episode["obs"])


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


def test_a_zarr_handle_opened_before_a_commit_reads_what_it_committed(new_store, make_episode):
    # The store reads through zarr and grows arrays without it: a handle it opened before an
    # array grew must not be the one that reads the rows past the old shape.
    rng = np.random.default_rng(0)
    store = new_store()
    chunk = store.node("data/obs").chunks[0]
    episodes = [make_episode(chunk // 2, rng, seed=s) for s in range(3)]
    for episode in episodes:
        store.append([episode])
        assert store.node("data/obs").shape[0] >= store.n_rows
    for index, episode in enumerate(episodes):
        np.testing.assert_array_equal(store.episode(index)["obs"], episode["obs"])
    store.validate()


def test_a_failed_growth_is_grown_again_by_the_next_append(new_store, make_episode, monkeypatch):
    # The array's zarr.json write fails (disk full): the store must not go on believing the
    # array grew, or the retried append commits rows past the shape on disk.
    rng = np.random.default_rng(0)
    store = new_store()
    episode = make_episode(9, rng)
    real_replace, failed = os.replace, []

    def full_disk_once(src, dst):
        if str(dst).endswith(os.path.join("data", "obs", "zarr.json")) and not failed:
            failed.append(dst)
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("wmrobot.files.os.replace", full_disk_once)
    with pytest.raises(OSError, match="No space"):
        store.append([episode])
    store.append([episode])  # retried on the same handle
    assert failed
    again = EpisodeStore.open(store.path)  # validates: every array holds the committed rows
    assert again.n_episodes == 1
    np.testing.assert_array_equal(again.episode(0)["obs"], episode["obs"])


def test_the_attributes_held_are_what_was_written_not_the_callers_objects(tmp_path):
    kwargs = {"size": (3, 4)}
    store = DirectStore.create(
        tmp_path / "d.zarr",
        env={"id": "synthetic", "kwargs": kwargs},
        spaces={},
        row_shapes={"obs": ((3,), "float32"), "action": ((2,), "float32")},
    )
    kwargs["size"] = "changed later by the caller"
    assert store.attrs["env"]["kwargs"] == {"size": [3, 4]}
    store.update_attrs(note="x")  # a commit writes what is held
    assert EpisodeStore.open(tmp_path / "d.zarr").attrs["env"]["kwargs"] == {"size": [3, 4]}


def test_dtypes_it_does_not_write_go_through_zarr(tmp_path, make_episode):
    rng = np.random.default_rng(0)
    episode = make_episode(4, rng)
    episode["big"] = rng.random((5, 3)).astype(">f4")  # big-endian: zarr spells its codec
    episode["count"] = np.arange(5).astype(">i8")
    shapes = {k: (v.shape[1:], v.dtype.str) for k, v in episode.items() if hasattr(v, "shape")}
    store = DirectStore.create(tmp_path / "d.zarr", env={}, spaces={}, row_shapes=shapes)
    assert store._local is None  # the whole dataset through zarr, as before
    store.append([episode])
    read = EpisodeStore.open(tmp_path / "d.zarr").episode(0)
    for key in ("big", "count", "obs"):
        np.testing.assert_array_equal(read[key], episode[key])


def test_a_dataset_written_directly_is_the_one_zarr_writes_file_for_file(tmp_path, make_episode):
    # The same appends through the plain store (zarr's writes) and the direct one: every chunk
    # file and every document the same bytes, but for the creation time.
    rng = np.random.default_rng(0)
    batches = [[make_episode(n, rng, seed=n) for n in sizes] for sizes in ([5, 3], [700], [9])]
    for store_type in (EpisodeStore, DirectStore):
        store = store_type.create(
            tmp_path / f"{store_type.__name__}.zarr",
            env={"id": "synthetic", "kwargs": {}},
            spaces={},
            row_shapes=ROW_SHAPES,
        )
        for i, batch in enumerate(batches):
            store.append(batch)
            if i == 1:  # shrunk, then grown again by the next append
                store.shrink()
        store.finalize_stats()
        store.shrink()
        assert store.node("data/obs").shape[0] == store.n_rows
        store.close()  # its writer lock file then names no writer, as the other's
    plain, direct = (tmp_path / "EpisodeStore.zarr", tmp_path / "DirectStore.zarr")
    files = sorted(str(p.relative_to(plain)) for p in plain.rglob("*") if p.is_file())
    assert files == sorted(str(p.relative_to(direct)) for p in direct.rglob("*") if p.is_file())
    assert _tree(plain) == _tree(direct)
    assert any("/c/" in f for f in files)
    for name in files:
        if name == "zarr.json":
            documents = [json.loads((root / name).read_text()) for root in (plain, direct)]
            for d in documents:
                d["attributes"].pop("created")
            assert documents[0] == documents[1]
        else:
            assert (plain / name).read_bytes() == (direct / name).read_bytes(), name
