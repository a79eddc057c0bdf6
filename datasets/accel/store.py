"""An EpisodeStore that writes a local dataset's chunks and metadata itself (``chunks.py``),
reading through zarr as the plain store does; the same files, byte for byte."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from wmrobot.datasets.accel.chunks import LocalGroup, writes_directly
from wmrobot.datasets.store import ArraySpec, EpisodeStore, grown_shape, is_local


class DirectStore(EpisodeStore):
    """:class:`EpisodeStore` whose writes to a local dataset skip zarr: each chunk an append
    touches is encoded and written in one go, and attributes are written whole.

    Arrays of a layout :class:`LocalGroup` does not write (other codecs, chunkings or dtypes),
    and datasets at URLs, are written through zarr, as the plain store writes them.
    """

    def __init__(self, group: Any, path: str, writable: bool) -> None:
        super().__init__(group, path, writable)
        # Where set, the attributes are read and written here, never through ``group``,
        # whose copy of them would go stale.
        self._local: LocalGroup | None = None

    @classmethod
    def _build(
        cls, build: str, marker: dict[str, Any], arrays: list[ArraySpec], replace: bool
    ) -> EpisodeStore:
        if not (is_local(build) and all(writes_directly(a.dtype) for a in arrays)):
            return super()._build(build, marker, arrays, replace)
        root = LocalGroup.create(Path(build), marker)
        for a in arrays:
            root.create_array(
                a.name,
                shape=a.shape,
                chunks=a.chunks,
                dtype=a.dtype,
                fill_value=a.fill_value,
                shuffle=a.shuffle,
            )
        store = cls(None, build, writable=True)
        store._local = root
        return store

    @classmethod
    def warm_up(cls, path: str) -> None:
        """Import what writing ``path`` needs: Blosc only, for a local dataset."""
        if not is_local(path):
            super().warm_up(path)
            return
        import numcodecs  # noqa: F401

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", check: bool = True) -> DirectStore:
        """As :meth:`EpisodeStore.open`; a local dataset opened for appending is written here."""
        store = cast(DirectStore, super().open(path, mode, check))
        if mode == "a" and is_local(store.path):
            store._local = LocalGroup(Path(store.path), store.group.attrs.asdict())
        return store

    @property
    def _attributes(self) -> Mapping[str, Any]:
        return self._local.attributes if self._local is not None else super()._attributes

    def _put_attributes(self, attributes: dict[str, Any]) -> None:
        if self._local is not None:
            self._local.put(attributes)
        else:
            super()._put_attributes(attributes)

    def _write_grown(self, name: str, at: int, values: np.ndarray) -> None:
        direct = self._local.array(name) if self._local is not None else None
        if direct is None:
            super()._write_grown(name, at, values)
            return
        if (shape := grown_shape(direct.shape, direct.chunks[0], at + len(values))) is not None:
            direct.resize(shape)
            self._nodes.pop(name, None)  # a zarr handle opened before holds the old shape
        direct.write(at, values)

    def _shrink_array(self, name: str, length: int) -> None:
        direct = self._local.array(name) if self._local is not None else None
        if direct is None:
            super()._shrink_array(name, length)
        elif direct.shape[0] > length:
            direct.resize((length, *direct.shape[1:]))
            self._nodes.pop(name, None)  # a zarr handle opened before holds the old shape

    def _move_into_place(self) -> None:
        super()._move_into_place()
        if self._local is not None and self._local.folder != Path(self.path):
            self._local = LocalGroup(Path(self.path), self._local.attributes)
