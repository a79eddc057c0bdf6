"""Writing whole chunks of a local Zarr v3 array straight to their files, as zarr would."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wmrobot.files import write_atomically

if TYPE_CHECKING:
    import zarr

_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}  # numcodecs' numbers for blosc's


class LocalChunks:
    """Row writes to a local Zarr v3 array (rows chunked along the first axis only, encoded
    as little-endian bytes then Blosc), one encode and one file write per chunk touched.

    zarr's own write path runs each chunk's read, decode, encode and file write as separate
    tasks handed to a thread pool and back, a fixed cost per chunk that dwarfs the encoding
    of a chunk of a few hundred kilobytes. This writes the same bytes zarr would (the same
    Blosc parameters, the same chunk keys), with zarr's crash safety: each file is written
    to a temporary name (``*.partial``, which opening a store for appending removes) and
    renamed over the chunk, so a crash leaves a chunk's old bytes or its new ones.
    Rows of a chunk past the written ones are left at the fill value: writers append, so
    nothing committed lies past them.
    """

    def __init__(self, array: zarr.Array, folder: Path, compressor: object) -> None:
        self.array, self.folder, self.compressor = array, folder, compressor
        self.rows = array.chunks[0]
        self.shape = (self.rows, *array.shape[1:])
        self.fill = array.metadata.fill_value
        self.made: set[Path] = set()  # chunk folders known to exist

    @classmethod
    def of(cls, array: zarr.Array) -> LocalChunks | None:
        """A writer for ``array``, or None where its layout is not the one this writes (a
        remote store, other codecs, chunks split along other axes, a big-endian machine):
        those go through zarr."""
        import numcodecs
        import zarr.codecs
        import zarr.storage

        meta = array.metadata
        codecs = getattr(meta, "codecs", ())
        if not (
            isinstance(array.store, zarr.storage.LocalStore)
            and sys.byteorder == "little"
            and len(codecs) == 2
            and isinstance(codecs[0], zarr.codecs.BytesCodec)
            and (codecs[0].endian is None or codecs[0].endian.value == "little")
            and isinstance(codecs[1], zarr.codecs.BloscCodec)
            and tuple(array.chunks[1:]) == tuple(array.shape[1:])
            and array.dtype.kind in "biuf"
        ):
            return None
        blosc = codecs[1]
        compressor = numcodecs.Blosc(
            cname=blosc.cname.value,
            clevel=blosc.clevel,
            shuffle=_SHUFFLE[blosc.shuffle.value],
            blocksize=blosc.blocksize,
            typesize=blosc.typesize,
        )
        return cls(array, Path(array.store.root) / array.path, compressor)

    def _file(self, index: int) -> Path:
        return self.folder / self.array.metadata.encode_chunk_key(
            (index,) + (0,) * (len(self.shape) - 1)
        )

    def write(self, at: int, values: np.ndarray) -> None:
        """Write ``values`` as rows ``[at, at + len(values))`` (within the array's shape)."""
        end = at + len(values)
        for index in range(at // self.rows, (end - 1) // self.rows + 1):
            first = index * self.rows
            chunk = np.full(self.shape, self.fill, dtype=self.array.dtype)
            path = self._file(index)
            if first < at:  # the rows already there, before ``at``
                try:
                    self.compressor.decode(path.read_bytes(), out=chunk)
                except FileNotFoundError:  # zarr wrote no chunk of fill values only
                    pass
                chunk[at - first :] = self.fill
            lo, hi = max(first, at), min(first + self.rows, end)
            chunk[lo - first : hi - first] = values[lo - at : hi - at]
            self._put(path, self.compressor.encode(chunk))

    def _put(self, path: Path, data: bytes) -> None:
        if path.parent not in self.made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.made.add(path.parent)
        # Not synced, as zarr's local store does not: the commit's own write is not either,
        # and what a killed process leaves is whole without it.
        write_atomically(path, lambda f: f.write(data), sync=False)
