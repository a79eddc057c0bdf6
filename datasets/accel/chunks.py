"""Local Zarr v3 groups and arrays written without zarr: their metadata documents, as zarr
writes them, and whole chunks written straight to their files.

Zarr's write path hands each chunk's read, decode, encode and write to a thread pool and
back, a fixed cost per chunk larger than encoding it, and loading zarr costs a collector's
writer CPU time that stepping would use. Here each file is written to a temporary name
(``*.partial``, which opening a store for appending removes) and renamed over the old one, as
zarr's local store does. ``tests/datasets/accel/test_chunks.py`` holds both to zarr's output.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from wmrobot.datasets.store import BLOSC_CLEVEL, BLOSC_CNAME, DamagedChunk
from wmrobot.files import write_atomically

ZARR_JSON = "zarr.json"
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}  # numcodecs' numbers for blosc's


def writes_directly(dtype: Any) -> bool:
    """Whether arrays of ``dtype`` are written here: booleans, integers and floats of up to 8
    bytes in this machine's order, on a little-endian machine (the bytes zarr's "bytes" codec
    writes, little-endian, are then the array's own). Other dtypes go through zarr."""
    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError):  # a data type NumPy does not name
        return False
    little = sys.byteorder == "little" and dtype.isnative
    return little and dtype.kind in "biuf" and dtype.itemsize <= 8


def read_document(folder: Path) -> dict[str, Any]:
    """A node's ``zarr.json`` (NaN and infinities as Python reads them)."""
    return json.loads((folder / ZARR_JSON).read_bytes())


def write_document(folder: Path, document: dict[str, Any]) -> dict[str, Any]:
    """Write a node's ``zarr.json`` atomically, formatted as zarr formats it; returns the
    document as a reader parses it (a copy of its own, tuples as lists)."""
    data = json.dumps(document, indent=2, allow_nan=True)
    folder.mkdir(parents=True, exist_ok=True)
    # Not synced, as zarr's local store does not sync either.
    write_atomically(folder / ZARR_JSON, lambda f: f.write(data.encode()), sync=False)
    return json.loads(data)


def group_document(attributes: dict[str, Any]) -> dict[str, Any]:
    return {"attributes": attributes, "zarr_format": 3, "node_type": "group"}


def _fill_json(dtype: np.dtype, value: Any) -> Any:
    """A fill value as Zarr v3 metadata spells it."""
    if dtype.kind == "f":
        value = float(value)
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value == math.inf else "-Infinity" if value == -math.inf else value
    return bool(value) if dtype.kind == "b" else int(value)


def _fill_value(dtype: np.dtype, spelled: Any) -> Any:
    names = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    return dtype.type(names.get(spelled, spelled) if isinstance(spelled, str) else spelled)


def array_document(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: Any,
    fill_value: Any,
    cname: str = BLOSC_CNAME,
    clevel: int = BLOSC_CLEVEL,
    shuffle: str = "shuffle",
    checksum: bool = True,
) -> dict[str, Any]:
    """The ``zarr.json`` zarr writes for an array of little-endian bytes compressed by Blosc
    and, with ``checksum``, followed by their CRC32C (``compressors=[BloscCodec(cname, clevel,
    shuffle), Crc32cCodec()]``), default chunk keys."""
    dtype = np.dtype(dtype)
    bytes_codec: dict[str, Any] = {"name": "bytes"}
    if dtype.itemsize > 1:
        bytes_codec["configuration"] = {"endian": "little"}
    blosc = {"typesize": dtype.itemsize, "cname": cname, "clevel": clevel, "shuffle": shuffle}
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": _fill_json(dtype, fill_value),
        "codecs": [
            bytes_codec,
            {"name": "blosc", "configuration": {**blosc, "blocksize": 0}},
            *([{"name": "crc32c"}] if checksum else []),
        ],
        "attributes": {},
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


class LocalArray:
    """A local Zarr v3 array whose rows are chunked along the first axis only and encoded as
    little-endian bytes then Blosc, then (since datasets carry checksums) zarr's CRC32C of
    them, default chunk keys: what wmrobot's datasets hold. Grows
    (:meth:`resize` rewrites its ``zarr.json``) and takes row writes (:meth:`write`, one
    encode and one file write per chunk touched) without zarr.
    """

    def __init__(self, folder: Path, document: dict[str, Any], name: str | None = None) -> None:
        import numcodecs

        self.folder, self.document = folder, document
        self.name = name or folder.name  # within its dataset, for messages: "data/obs"
        self.dtype = np.dtype(document["data_type"])
        self.chunks = tuple(document["chunk_grid"]["configuration"]["chunk_shape"])
        self.fill = _fill_value(self.dtype, document["fill_value"])
        blosc = document["codecs"][1]["configuration"]
        self.compressor = numcodecs.Blosc(
            cname=blosc["cname"],
            clevel=blosc["clevel"],
            shuffle=_SHUFFLE[blosc["shuffle"]],
            blocksize=blosc.get("blocksize", 0),
            typesize=blosc.get("typesize", self.dtype.itemsize),
        )
        self.checksum = document["codecs"][-1]["name"] == "crc32c"
        self.made: set[Path] = set()  # chunk folders known to exist

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.document["shape"])

    @classmethod
    def create(cls, folder: Path, name: str | None = None, **kwargs: Any) -> LocalArray:
        """A new array at ``folder`` (``name`` in its dataset), with :func:`array_document`'s
        arguments."""
        return cls(folder, write_document(folder, array_document(**kwargs)), name)

    @classmethod
    def open(cls, folder: Path, name: str | None = None) -> LocalArray | None:
        """The array at ``folder``, or None where its layout is not the one this writes
        (other codecs, chunks split along other axes or other chunk keys, a dtype it does not
        write): those go through zarr."""
        doc = read_document(folder)
        codecs = doc.get("codecs", [])
        names = [c.get("name") for c in codecs]
        endian = codecs[0].get("configuration", {}).get("endian", "little") if codecs else None
        keys = doc.get("chunk_key_encoding", {})
        grid = doc.get("chunk_grid", {})
        chunks = grid.get("configuration", {}).get("chunk_shape", [])
        if not (
            doc.get("node_type") == "array"
            and names in (["bytes", "blosc"], ["bytes", "blosc", "crc32c"])
            and endian == "little"
            and keys.get("name") == "default"
            and keys.get("configuration", {}).get("separator", "/") == "/"
            and grid.get("name") == "regular"
            and chunks[1:] == doc["shape"][1:]
            and not doc.get("storage_transformers")
            and writes_directly(doc.get("data_type"))
        ):
            return None
        return cls(folder, doc, name)

    def resize(self, shape: tuple[int, ...]) -> None:
        """Grow or shrink to ``shape`` (a metadata write; chunks past the old shape hold
        nothing). The shape held here changes only once the write has landed: after a failed
        write, the next append grows the array again rather than commit rows past its shape
        on disk. Shrinking first deletes the chunk files wholly past the new shape (their
        folders stay), as zarr does: the last chunk is kept whole."""
        rows = self.chunks[0]
        for index in range(-(-shape[0] // rows), -(-self.shape[0] // rows)):
            self._file(index).unlink(missing_ok=True)
        self.document = write_document(self.folder, {**self.document, "shape": list(shape)})

    def _file(self, index: int) -> Path:
        return self.folder.joinpath("c", str(index), *["0"] * (len(self.chunks) - 1))

    def write(self, at: int, values: np.ndarray) -> None:
        """Write ``values`` as rows ``[at, at + len(values))`` (within the array's shape).

        Rows of a chunk past the written ones are left at the fill value: writers append,
        so nothing committed lies past them."""
        rows, end = self.chunks[0], at + len(values)
        for index in range(at // rows, (end - 1) // rows + 1):
            first = index * rows
            chunk = np.full(self.chunks, self.fill, dtype=self.dtype)
            path = self._file(index)
            if first < at:  # the rows already there, before ``at``
                try:
                    self.compressor.decode(self._verified(path, path.read_bytes()), out=chunk)
                except FileNotFoundError:  # zarr writes no chunk of fill values only
                    pass
                chunk[at - first :] = self.fill
            lo, hi = max(first, at), min(first + rows, end)
            chunk[lo - first : hi - first] = values[lo - at : hi - at]
            data = self.compressor.encode(chunk)
            self._put(path, data + _crc32c(data) if self.checksum else data)

    def _verified(self, path: Path, data: bytes) -> bytes:
        """A chunk file's encoded bytes, its checksum checked and removed (if it has one)."""
        if not self.checksum:
            return data
        if _crc32c(data[:-4]) != data[-4:]:
            dataset = self.folder.parents[self.name.count("/")]
            key = path.relative_to(self.folder).as_posix()
            raise DamagedChunk(str(dataset), self.name, key, "checksum mismatch")
        return data[:-4]

    def _put(self, path: Path, data: bytes) -> None:
        if path.parent not in self.made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(path.parent)
        # Not synced, as zarr's local store does not: the commit's own write is not either,
        # and what a killed process leaves is whole without it.
        write_atomically(path, lambda f: f.write(data), sync=False)


def _crc32c(data: bytes) -> bytes:
    """The CRC32C of ``data`` as zarr's ``crc32c`` codec appends it: 4 bytes, little-endian."""
    import google_crc32c

    return struct.pack("<I", google_crc32c.value(data))


class LocalGroup:
    """A local dataset's root group, for its one writer: the attributes, read once and
    rewritten whole (one atomic write of ``zarr.json``), and its arrays as
    :class:`LocalArray` (None for one of another layout)."""

    def __init__(self, folder: Path, attributes: dict[str, Any]) -> None:
        self.folder, self.attributes = folder, attributes
        self._arrays: dict[str, LocalArray | None] = {}

    @classmethod
    def create(cls, folder: Path, attributes: dict[str, Any]) -> LocalGroup:
        return cls(folder, write_document(folder, group_document(attributes))["attributes"])

    def put(self, attributes: dict[str, Any]) -> None:
        """Replace the attributes (one atomic write). What is held here afterwards is what a
        reader of the file gets, not the caller's objects, which the caller may change."""
        self.attributes = write_document(self.folder, group_document(attributes))["attributes"]

    def create_array(self, name: str, **kwargs: Any) -> LocalArray:
        """A new array at ``name`` (``a/b``), with :func:`array_document`'s arguments; the
        groups on its path are made as zarr makes them (empty attributes)."""
        *parents, _ = name.split("/")
        for i in range(len(parents)):
            folder = self.folder.joinpath(*parents[: i + 1])
            if not (folder / ZARR_JSON).exists():
                write_document(folder, group_document({}))
        self._arrays[name] = LocalArray.create(self.folder / name, name, **kwargs)
        return self._arrays[name]

    def array(self, name: str) -> LocalArray | None:
        if name not in self._arrays:
            self._arrays[name] = LocalArray.open(self.folder / name, name)
        return self._arrays[name]
