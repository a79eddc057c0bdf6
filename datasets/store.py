"""EpisodeStore: the crash-safe, appendable Zarr v3 episode dataset of DESIGN.md section 3."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from wmrobot.datasets import lock
from wmrobot.datasets.stats import (
    as_columns,
    merge_moments,
    quantiles,
    stat_columns,
    stats_from_moments,
)
from wmrobot.errors import DatasetError
from wmrobot.files import existing_ancestor

if TYPE_CHECKING:  # zarr itself loads on first use: collector workers never need it
    import zarr

FORMAT = "wmrobot.episodes"
FORMAT_VERSION = 1
# Rows per chunk for per-row arrays: at least ROW_CHUNK, and narrow rows (actions, rewards,
# flags) get more, up to ROW_CHUNK_BYTES a chunk: a commit's cost grows with the number of
# chunks it writes, and a chunk of a few kilobytes costs as much as one of half a megabyte.
ROW_CHUNK = 4096
ROW_CHUNK_MAX = 65536
ROW_CHUNK_BYTES = 2**19
PIXEL_CHUNK = 16  # frames per chunk for images: random access reads a few frames, not thousands
EPISODE_CHUNK = 1024  # episodes per chunk for per-episode arrays
BLOSC_CNAME, BLOSC_CLEVEL = "lz4", 5  # every array's compressor (see _array_specs)

log = logging.getLogger(__name__)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file:")


def normalise_path(path: str | os.PathLike) -> str:
    """A dataset path without a trailing slash (a local one also normalised; a ``file:`` URL
    becomes the path it names)."""
    path = str(path)
    if path.startswith("file:"):  # file:///a/b, file:/a/b or file://localhost/a/b
        url = urllib.parse.urlsplit(path)
        if url.netloc not in ("", "localhost") or not url.path:
            raise DatasetError(
                f"{path!r} names no local path; give a path such as /data/d.zarr or "
                f"file:///data/d.zarr"
            )
        path = urllib.parse.unquote(url.path)
    path = path.rstrip("/") or "/"
    return os.path.normpath(path) if is_local(path) else path


def dataset_exists(path: str | os.PathLike) -> bool:
    """Whether something is at ``path``: a local file or folder, or a Zarr node at a URL (not
    counting a remote dataset whose creation was cut short: creating it again replaces it)."""
    path = normalise_path(path)
    if is_local(path):
        return Path(path).exists()
    attrs = _remote_attrs(path)
    return attrs is not None and not attrs.get(_CREATING)


# The first write of a new dataset's zarr.json holds only this marker; the last write of its
# creation replaces it with the real attributes. Locally that happens in a folder renamed into
# place afterwards; at a URL, where nothing renames atomically, it happens in place, and the
# marker is what tells a creation cut short from a dataset (or from another tool's group).
_CREATING = f"{FORMAT}.creating"
_BUCKET_URLS = ("s3://", "s3a://", "gs://", "gcs://")  # object stores: the bucket comes first


def _remote_attrs(url: str) -> dict[str, Any] | None:
    """The attributes in ``url``'s zarr.json, None if there is none. Raises a one-line
    :class:`DatasetError` when the URL cannot be read at all (no filesystem package, no
    credentials, no answer from the endpoint, no such bucket)."""
    try:
        import fsspec

        fs, root = fsspec.core.url_to_fs(url)
        try:
            return json.loads(fs.cat_file(f"{root}/zarr.json")).get("attributes", {})
        except FileNotFoundError:
            pass
        bucket = root.split("/", 1)[0]
        if url.startswith(_BUCKET_URLS) and not fs.exists(bucket):
            raise DatasetError(
                f"bucket {bucket!r} of {url!r} does not exist or these credentials cannot see "
                f"it; create it or fix the URL"
            )
        return None
    except DatasetError:
        raise
    except ImportError as e:  # fsspec URLs need their filesystem package (s3fs, gcsfs, ...)
        raise DatasetError(f"cannot open {url!r}: {e}") from None
    except Exception as e:  # credentials, endpoint, permissions: types vary by backend
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DatasetError(
            f"cannot read {url!r}: {reason}; check the URL, the credentials and, for a non-AWS "
            f"server, AWS_ENDPOINT_URL (docs/DATASET.md, Remote datasets)"
        ) from None


def _is_ours(path: str) -> bool:
    """Whether the local ``path`` holds a wmrobot dataset's root document (a cheap look before
    the writer lock makes ``writer.lock`` in it)."""
    try:
        return json.loads((Path(path) / "zarr.json").read_bytes())["attributes"]["format"] == FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _check_parent(path: str) -> None:
    """Refuse, in one line, a local dataset path that cannot be made: one under a file, or in
    a folder this process may not write."""
    parent = existing_ancestor(Path(path).parent)
    if not parent.is_dir():
        raise DatasetError(f"cannot create {path!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise DatasetError(f"cannot create {path!r}: {str(parent)!r} is not writable")


def _open_group(path: str, mode: str, **kwargs: Any) -> zarr.Group:
    import zarr

    try:
        return zarr.open_group(path, mode=mode, zarr_format=3, **kwargs)
    except ImportError as e:  # fsspec URLs need their filesystem package (s3fs, gcsfs, ...)
        raise DatasetError(f"cannot open {path!r}: {e}") from None


class EpisodeStore:
    """A dataset of episodes: time-major ``data/<key>`` rows, ``meta/<key>`` per episode.

    Writers call :meth:`append` with whole episodes; a reader sees only what the last
    commit (one atomic write of the group attributes) covers. Open with :meth:`create`
    or :meth:`open`. Everything is read and written through zarr's API (the collector's
    acceleration layer writes local chunks itself: ``accel/store.py``).

    >>> store = EpisodeStore.create("d.zarr", env={"id": "wmrobot/PointMaze-v0"}, ...)
    >>> store.append([episode])
    >>> EpisodeStore.open("d.zarr").n_episodes
    1
    """

    def __init__(self, group: zarr.Group | None, path: str, writable: bool) -> None:
        self._group = group  # None: opened on first use
        self.path = path
        self.writable = writable
        self._nodes: dict[str, zarr.Array] = {}
        self._destination: str | None = None  # where an unsealed new dataset goes
        self._release: weakref.finalize | None = None  # gives up the writer lock

    def _hold(self, writer: lock.WriterLock | None) -> None:
        """Keep ``writer`` until :meth:`close`, or until this store is garbage."""
        if writer is not None:
            self._release = weakref.finalize(self, writer.release)

    def close(self) -> None:
        """Stop writing: give up the writer lock (if this process holds it no more, another
        may write). The store stays open for reading; closing again does nothing."""
        self.writable = False
        if self._release is not None:
            self._release()

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def group(self) -> zarr.Group:
        """The dataset's root Zarr group (for reading: writes go through the store)."""
        if self._group is None:
            self._group = _open_group(self.path, mode="r+" if self.writable else "r")
        return self._group

    @property
    def _attributes(self) -> Mapping[str, Any]:
        return self.group.attrs

    # ----------------------------------------------------------------------------- opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        env: Mapping[str, Any],
        spaces: Mapping[str, Any],
        row_shapes: Mapping[str, tuple[tuple[int, ...], str]],
        collector: Mapping[str, Any] | None = None,
        factors: Mapping[str, Any] | None = None,
        sealed: bool = True,
    ) -> EpisodeStore:
        """A new, empty dataset. ``row_shapes`` maps each ``data/`` key to (shape, dtype).

        ``factors`` (``{"names": [...], "ranges": {name: [min, max]}}``) is for envs with
        factors of variation: each episode's values go to ``meta/factors`` (episodes, F), one
        column per name.

        ``sealed=False`` is for a dataset filled in one go (a merge, a conversion): it stays
        aside (locally in its temporary folder, at a URL under the creation marker) until
        :meth:`seal` puts it in place, so one cut short is never taken for a finished one;
        :meth:`discard` removes it after a failure.
        """
        path = normalise_path(path)
        local = is_local(path)
        remote_attrs = None if local else _remote_attrs(path)  # one read of what is there
        if Path(path).exists() if local else remote_attrs and not remote_attrs.get(_CREATING):
            raise DatasetError(f"{path!r} already exists; choose a new path or open it to append")
        # Locally, build in a temporary folder, holding its writer lock, and rename it into
        # place: a crash during creation leaves no half-made dataset at ``path``, and the lock
        # moves with the folder. At a URL, build in place under the _CREATING marker, replacing
        # what a creation cut short left (one writer per dataset, unchecked: no lock there).
        writer = None
        if local:  # remains of creations that a crash cut short, not those under way
            _check_parent(path)
            lock.remove_abandoned(Path(path).parent.glob(f"{Path(path).name}.creating-*"))
            build, writer = lock.make_locked_folder(f"{path}.creating-")
        else:
            build = path
            _unlocked(path)
        marker = {_CREATING: True}
        arrays = _array_specs(row_shapes, factors)
        try:
            store = cls._build(build, marker, arrays, replace=remote_attrs is not None)
        except BaseException:
            if writer is not None:
                writer.release()
            raise
        store._hold(writer)
        store._destination = path
        try:
            # The creation's commit: one write of zarr.json swaps the marker for the attributes.
            store._put_attributes(
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "n_rows": 0,
                    "n_episodes": 0,
                    "env": dict(env),
                    "spaces": dict(spaces),
                    "keys": list(row_shapes),
                    "collector": dict(collector or {}),
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "stats": {},
                    "_moments": {},
                    **({"factors": dict(factors)} if factors else {}),
                    **({} if sealed else marker),
                }
            )
            if sealed:
                store._move_into_place()
        except BaseException:
            store.discard()
            raise
        return store

    @classmethod
    def _build(
        cls, build: str, marker: dict[str, Any], arrays: list[ArraySpec], replace: bool
    ) -> EpisodeStore:
        """A writable store at ``build`` whose group holds only ``marker`` and the empty
        ``arrays``; ``replace``: what a creation cut short left at a URL is replaced."""
        import zarr.codecs

        # A local build folder is new and holds only its writer lock: "w-" would refuse it.
        mode = "w" if replace else "a" if is_local(build) else "w-"
        try:
            group = _open_group(build, mode=mode, attributes=marker)
        except FileExistsError:  # zarr's "w-" refuses a prefix that holds anything
            raise DatasetError(
                f"{build!r} holds objects but no zarr.json (not a dataset); delete them or "
                f"choose a new path"
            ) from None
        for a in arrays:
            group.create_array(
                a.name,
                shape=a.shape,
                chunks=a.chunks,
                dtype=a.dtype,
                fill_value=a.fill_value,
                # zarr's CRC32C of each encoded chunk: a damaged chunk fails to read
                compressors=[
                    zarr.codecs.BloscCodec(
                        cname=BLOSC_CNAME, clevel=BLOSC_CLEVEL, shuffle=a.shuffle
                    ),
                    zarr.codecs.Crc32cCodec(),
                ],
            )
        return cls(group, build, writable=True)

    @classmethod
    def warm_up(cls, path: str) -> None:
        """Import what writing ``path`` needs, so that the first commit does not wait for it."""
        import zarr  # noqa: F401

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", check: bool = True) -> EpisodeStore:
        """Open a dataset for reading (``"r"``) or appending (``"a"``); validates it first
        unless ``check`` is False (for :func:`wmrobot.datasets.repair.repair`, which opens
        datasets that do not validate)."""
        path = normalise_path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if is_local(path) and not (Path(path) / "zarr.json").exists():
            hint = "no such path" if not Path(path).exists() else "no zarr.json in it"
            raise DatasetError(
                f"{path!r} is not a wmrobot dataset ({hint}); make one with `wmrobot collect`"
            )
        if not is_local(path) and _remote_attrs(path) is None:
            raise DatasetError(
                f"{path!r} is not a wmrobot dataset (no zarr.json at that URL); make one with "
                f"`wmrobot collect`"
            )
        writer = None
        local = is_local(path)
        if (
            mode == "a"
            and local
            and not (Path(path) / lock.LOCK_FILE).exists()
            and not _is_ours(path)
        ):
            cls._opened(path, "r", check=False)  # says what it is instead; no lock file left
        if mode == "a" and local:
            # Taken before anything is read: what another writer leaves half-done is its own.
            writer = lock.acquire(path)
        elif mode == "a":
            _unlocked(path)
        try:
            store = cls._opened(path, mode, check)
        except BaseException:
            if writer is not None:
                writer.release()
            raise
        store._hold(writer)
        return store

    @classmethod
    def _opened(cls, path: str, mode: str, check: bool) -> EpisodeStore:
        """:meth:`open`'s work once the writer lock, if any, is held."""
        try:
            root = _open_group(path, mode="r" if mode == "r" else "r+")
        except DatasetError:
            raise
        except Exception as e:  # zarr raises several types for a non-group path
            raise DatasetError(f"{path!r} is not a Zarr v3 group: {e}") from None
        attrs = root.attrs.asdict()
        if attrs.get(_CREATING):
            raise DatasetError(
                f"{path!r} is a dataset whose creation was cut short (nothing committed); "
                f"collecting into it again starts it over"
            )
        if attrs.get("format") != FORMAT:
            raise DatasetError(f"{path!r} is a Zarr group but not a wmrobot dataset (no format)")
        if attrs.get("format_version", 0) > FORMAT_VERSION:
            raise DatasetError(
                f"{path!r} has format_version {attrs['format_version']}, newer than this wmrobot "
                f"reads ({FORMAT_VERSION}); upgrade wmrobot"
            )
        store = cls(root, path, writable=mode == "a")
        # Left-over temporary files of a write that a crash cut short. Object stores leave none:
        # a PUT (or a multipart upload's completion) makes an object appear whole or not at
        # all, and an unfinished multipart upload is no object (a bucket lifecycle rule can
        # abort such uploads to stop paying for their parts).
        if mode == "a" and is_local(path):
            for tmp in Path(path).rglob("*.partial"):
                tmp.unlink(missing_ok=True)
        if check:
            store.validate()
        return store

    # ----------------------------------------------------------------------------- reading
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._attributes)

    @property
    def n_rows(self) -> int:
        return int(self._attributes["n_rows"])

    @property
    def n_episodes(self) -> int:
        return int(self._attributes["n_episodes"])

    @property
    def n_transitions(self) -> int:
        """Environment steps held: rows minus each episode's final (action-less) row."""
        return self.n_rows - self.n_episodes

    @property
    def keys(self) -> list[str]:
        return list(self._attributes["keys"])

    @property
    def episode_ends(self) -> np.ndarray:
        return self.read("meta/episode_ends", slice(self.n_episodes))

    def meta(self, key: str) -> np.ndarray:
        """A per-episode array (``factors``: (episodes, F), columns as :attr:`factor_names`)."""
        return self.read(f"meta/{key}", slice(self.n_episodes))

    @property
    def factor_names(self) -> list[str]:
        """The env's factors of variation, as the columns of ``meta/factors`` (or none)."""
        return list(self._attributes.get("factors", {}).get("names", []))

    def factors(self, index: int) -> dict[str, float]:
        """Episode ``index``'s factor values by name (empty for envs without factors)."""
        if not self.factor_names:
            return {}
        row = self.read("meta/factors", index % self.n_episodes)
        return dict(zip(self.factor_names, row.tolist(), strict=True))

    def array(self, key: str) -> zarr.Array:
        """The raw ``data/<key>`` array; only rows ``[:n_rows]`` are committed. (Read through
        :meth:`read`, which names a damaged chunk, rather than by indexing it.)"""
        return self.node(f"data/{key}")

    def node(self, name: str) -> zarr.Array:
        """The array at ``name`` (``data/<key>`` or ``meta/<key>``), opened once: opening reads
        and parses its metadata, which would otherwise cost more than a whole small write."""
        if name not in self._nodes:
            try:
                self._nodes[name] = self.group[name]
            except KeyError:
                raise DatasetError(
                    f"{self.path!r}: {name} is missing; the dataset is incomplete (restore it "
                    f"from a copy)"
                ) from None
            except (ValueError, TypeError) as e:  # zarr.json bytes that do not parse
                raise DatasetError(
                    f"{self.path!r}: {name}/zarr.json is damaged ({_one_line(e)}); restore it "
                    f"from a copy"
                ) from None
        return self._nodes[name]

    def read(self, name: str, selection: Any = slice(None)) -> np.ndarray:
        """``node(name)[selection]``; a chunk that fails its checksum (or, written before
        checksums, cannot be decoded) raises a one-line :class:`DatasetError` naming it."""
        array = self.node(name)
        try:
            return array[selection]
        except (ValueError, RuntimeError) as e:  # zarr's checksum error; Blosc's
            first = selection[0] if isinstance(selection, tuple) else selection
            rows = _selected_rows(first, array.shape[0])
            size = array.chunks[0]
            for index in range(rows.start // size, -(-rows.stop // size)):
                self.read_chunk(name, index)  # raises for the damaged one
            raise e  # not a damaged chunk: the selection itself is at fault

    def read_chunk(self, name: str, index: int) -> np.ndarray:
        """The rows of chunk ``index`` (along the first axis) of the array at ``name``, raising
        a one-line :class:`DatasetError` that names the chunk when it is damaged."""
        array = self.node(name)
        size = array.chunks[0]
        try:
            return array[index * size : (index + 1) * size]
        except (ValueError, RuntimeError) as e:
            reason = "checksum mismatch" if "checksum" in str(e) else f"undecodable: {_one_line(e)}"
            raise DamagedChunk(self.path, name, self.chunk_key(name, index), reason) from None

    def chunk_key(self, name: str, index: int) -> str:
        """The key (``c/12/0``, its file's path in the array's folder) of chunk ``index``."""
        array = self.node(name)
        return array.metadata.encode_chunk_key((index, *[0] * (array.ndim - 1)))

    def load(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """All committed rows of ``keys`` (default: every key) as NumPy arrays."""
        n = self.n_rows
        return {k: self.read(f"data/{k}", slice(n)) for k in (keys or self.keys)}

    def episode_bounds(self, index: int) -> tuple[int, int]:
        """Rows ``[start, end)`` of episode ``index`` (negative counts from the end)."""
        if not -self.n_episodes <= index < self.n_episodes:
            raise IndexError(f"episode {index} out of range for {self.n_episodes} episodes")
        index %= self.n_episodes
        ends = self.episode_ends
        return (0 if index == 0 else int(ends[index - 1])), int(ends[index])

    def episode(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """One episode's rows (T+1 of them for T actions)."""
        start, end = self.episode_bounds(index)
        return {k: self.read(f"data/{k}", slice(start, end)) for k in (keys or self.keys)}

    def fingerprint(self) -> str:
        """A short hash of the committed contents' identity (counts, boundaries, actions)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.n_rows, self.n_episodes, self.attrs["env"]]).encode())
        h.update(self.episode_ends.tobytes())
        h.update(np.ascontiguousarray(self.read("data/action", slice(self.n_rows))).tobytes())
        return h.hexdigest()[:16]

    def validate(self) -> None:
        """Raise :class:`DatasetError` unless the committed part is consistent."""
        n_rows, n_eps = self.n_rows, self.n_episodes
        for key in self.keys:
            # node keeps the handle: at a URL, each metadata read is a round trip
            rows = self.node(f"data/{key}").shape[0]
            if rows < n_rows:
                raise DatasetError(
                    f"{self.path!r}: data/{key} holds {rows} rows, fewer than the {n_rows} "
                    f"committed"
                )
        for key in [*_EPISODE_META, *(["factors"] if self.factor_names else [])]:
            if self.node(f"meta/{key}").shape[0] < n_eps:
                raise DatasetError(f"{self.path!r}: meta/{key} is shorter than {n_eps} episodes")
        ends = self.episode_ends
        if n_eps and (np.any(np.diff(ends) <= 0) or ends[0] <= 0 or ends[-1] != n_rows):
            raise DatasetError(
                f"{self.path!r}: meta/episode_ends is not strictly increasing up to n_rows={n_rows}"
            )

    def check_contents(self) -> None:
        """Deeper than :meth:`validate` (which every open runs): read every committed row and
        raise :class:`DatasetError` unless per-episode entries, flags, NaN-free data, the
        NaN final actions and the statistics are all as the format says."""
        ends, n, path = self.episode_ends, self.n_rows, self.path
        if self.n_episodes and not np.array_equal(
            self.meta("length"), np.diff(ends, prepend=0) - 1
        ):
            raise DatasetError(f"{path!r}: meta/length disagrees with meta/episode_ends")
        for key in ("seed", "return", "success", *(["factors"] if self.factor_names else [])):
            self.meta(key)  # read, so that a damaged chunk fails its checksum
        for key in self.keys:
            if self.array(key).dtype.kind not in "fb":  # images: nothing to check per value
                continue
            problem = row_problem(key, self.read(f"data/{key}", slice(n)), 0, ends)
            if problem is not None:
                raise DatasetError(f"{path!r}: {problem[1]}")
        if self.n_episodes and set(self.stat_keys) - set(self.attrs.get("stats", {})):
            raise DatasetError(f"{path!r}: normalisation statistics are missing")

    # ----------------------------------------------------------------------------- writing
    def append(self, episodes: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Write whole episodes, then commit them with one atomic attribute write. Returns
        the statistics' columns of these episodes (:func:`stat_columns`), which a writer that
        fills a dataset from empty can keep for :meth:`finalize_stats`.

        Each episode maps every ``data/`` key to its (T+1, ...) rows and the per-episode keys
        (``seed``, ``return``, ``success``) to scalars.
        """
        if not self.writable:
            raise DatasetError(f"{self.path!r} is open read-only; open it with mode='a'")
        if not episodes:
            return {}
        n_rows, n_eps = self.n_rows, self.n_episodes
        lengths = [len(ep["action"]) for ep in episodes]
        for ep, length in zip(episodes, lengths, strict=True):
            missing = set(self.keys) - set(ep)
            if missing:
                raise DatasetError(f"episode lacks keys {sorted(missing)}")
            if length < 2:
                raise DatasetError("an episode needs at least one action (two rows)")
        new_rows = n_rows + sum(lengths)
        for key in self.keys:
            rows = np.concatenate([np.asarray(ep[key]) for ep in episodes])
            self._write_grown(f"data/{key}", n_rows, rows)
        ends = n_rows + np.cumsum(lengths)
        meta = {
            "episode_ends": ends,
            "length": np.asarray(lengths) - 1,
            **{k: [ep[k] for ep in episodes] for k in ("seed", "return", "success")},
        }
        for key, values in meta.items():
            values = np.asarray(values, dtype=_EPISODE_META[key])
            self._write_grown(f"meta/{key}", n_eps, values)
        if self.factor_names:
            rows = [[ep["factors"][n] for n in self.factor_names] for ep in episodes]
            self._write_grown("meta/factors", n_eps, np.asarray(rows, dtype=np.float64))
        columns = stat_columns(episodes, self.stat_keys)
        moments = merge_moments(self._attributes["_moments"], columns)
        # The commit: everything above is invisible to readers until this one write lands.
        self.update_attrs(
            n_rows=int(new_rows),
            n_episodes=n_eps + len(episodes),
            _moments=moments,
            stats=stats_from_moments(moments),
        )
        return columns

    def _write_grown(self, name: str, at: int, values: np.ndarray) -> None:
        """Write ``values`` at row ``at`` of the array at ``name``, growing it first if needed
        (:func:`grown_shape`)."""
        array = self.node(name)
        end = at + len(values)
        if (shape := grown_shape(array.shape, array.chunks[0], end)) is not None:
            array.resize(shape)
        array[at:end] = values

    def shrink(self) -> None:
        """Shrink every array to its committed length (``n_rows`` rows for ``data/``,
        ``n_episodes`` for ``meta/``), one metadata write each and none for an array that is
        already exact, so that plain zarr readers see no capacity; appending grows them again.
        Writers call it when they finish cleanly. Arrays never get shorter than the commit, so
        a crash between two of these writes leaves a dataset that opens and validates."""
        if not self.writable:
            raise DatasetError(f"{self.path!r} is open read-only; open it with mode='a'")
        lengths = {f"data/{k}": self.n_rows for k in self.keys}
        for key in [*_EPISODE_META, *(["factors"] if self.factor_names else [])]:
            lengths[f"meta/{key}"] = self.n_episodes
        for name, length in lengths.items():
            self._shrink_array(name, length)

    def _shrink_array(self, name: str, length: int) -> None:
        """Resize the array at ``name`` to ``length`` rows if it holds more: zarr deletes the
        chunks wholly past them, then writes the shape."""
        array = self.node(name)
        if array.shape[0] > length:
            array.resize((length, *array.shape[1:]))

    @property
    def stat_keys(self) -> list[str]:
        # Images are left out: per-pixel statistics would be H*W*C numbers per key, rewritten
        # at every commit, and their quantiles would need every frame in memory.
        skip = ("physics", "terminated", "truncated")
        return [k for k in self.keys if k not in skip and not k.startswith("pixels")]

    def finalize_stats(
        self, columns: Mapping[str, np.ndarray] | None = None, overwrite_input: bool = False
    ) -> dict[str, Any]:
        """Add the q01/q99 quantiles, which need all rows, to the stored statistics.

        ``columns`` (per statistics key, every committed row as :func:`stat_columns` gives
        them) spares reading the dataset back; a writer that wrote every row passes what
        :meth:`append` returned, concatenated along the rows, and with ``overwrite_input``
        lets them be sorted in place rather than copied."""
        stats = dict(self._attributes["stats"])
        if self.n_rows == 0:
            return stats
        valid = _valid_action_rows(self.episode_ends, self.n_rows) if columns is None else None
        for key in self.stat_keys:
            if columns is None:  # read back into an array of its own: sorted in place
                x = self.read(f"data/{key}", slice(self.n_rows))
                x = as_columns(x[valid] if key in ("action", "reward") else x)
                q01, q99 = quantiles(x, (0.01, 0.99), overwrite_input=True)
            else:
                q01, q99 = quantiles(columns[key], (0.01, 0.99), overwrite_input)
            stats[key] = {**stats[key], "q01": q01.tolist(), "q99": q99.tolist()}
        self.update_attrs(stats=stats)
        return stats

    def update_attrs(self, **values: Any) -> None:
        """Set attributes in one write of zarr.json. (zarr's ``attrs.update`` writes the file
        once per key, so a crash between two writes could leave, say, a new ``n_rows`` with
        the old ``n_episodes``.)"""
        self._put_attributes({**self._attributes, **values})

    def _put_attributes(self, attributes: dict[str, Any]) -> None:
        self.group.attrs.put(attributes)

    def seal(self) -> None:
        """Finish a new dataset: drop the creation marker (one write) and, locally, rename the
        temporary folder into place."""
        attrs = dict(self._attributes)
        attrs.pop(_CREATING, None)
        self._put_attributes(attrs)
        self._move_into_place()

    def _move_into_place(self) -> None:
        if self._destination is not None and self._destination != self.path:
            try:
                os.rename(self.path, self._destination)
            except OSError:  # a folder with contents is in the way: put there meanwhile
                if not Path(self._destination).exists():
                    raise
                raise DatasetError(_created_meanwhile(self._destination)) from None
            self.path, self._group, self._nodes = self._destination, None, {}
        self._destination = None

    def discard(self) -> None:
        """Remove a new dataset that was not sealed (locally; at a URL the marker keeps it
        from being opened, and collecting or merging into the URL again replaces it), and
        :meth:`close` it."""
        if self._destination is not None and self.path != self._destination:
            shutil.rmtree(self.path, ignore_errors=True)
        self.close()

    def iter_episodes(
        self, keys: Iterable[str] | None = None, batch: int = 256
    ) -> Iterator[dict[str, Any]]:
        """Every committed episode in order, as :meth:`append` takes it (rows of ``keys`` and
        ``seed``, ``return``, ``success``, ``factors``), reading ``batch`` episodes' rows at a
        time."""
        keys = list(keys or self.keys)
        ends = self.episode_ends
        meta = {k: self.meta(k) for k in ("seed", "return", "success")}
        if self.factor_names:
            meta["factors"] = [
                dict(zip(self.factor_names, row, strict=True))
                for row in self.meta("factors").tolist()
            ]
        for lo in range(0, self.n_episodes, batch):
            hi = min(lo + batch, self.n_episodes)
            row_lo = int(ends[lo - 1]) if lo else 0
            rows = {k: self.read(f"data/{k}", slice(row_lo, int(ends[hi - 1]))) for k in keys}
            bounds = np.concatenate([[row_lo], ends[lo:hi]]) - row_lo
            for i in range(hi - lo):
                a, b = int(bounds[i]), int(bounds[i + 1])
                yield {
                    **{k: v[a:b] for k, v in rows.items()},
                    **{k: v[lo + i] for k, v in meta.items()},
                }


_warned_unlocked: set[str] = set()


def _unlocked(url: str) -> None:
    """Say, once per URL and process, that nothing stops a second writer of ``url``."""
    if url not in _warned_unlocked:
        _warned_unlocked.add(url)
        log.warning(
            f"{url}: datasets at URLs take no writer lock; make sure no other process writes "
            f"it meanwhile (docs/DATASET.md, One writer per dataset)"
        )


def _created_meanwhile(path: str) -> str:
    """The line for a creation that another writer's creation of ``path`` beat."""
    if lock.holder(path) is not None:
        return lock.busy_message(path)
    return f"{path!r} already exists (made meanwhile by another writer); open it to append"


class ArraySpec(NamedTuple):
    """One array of a new dataset: where, its (empty) shape, chunks, dtype, fill and Blosc's
    shuffle."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    fill_value: float
    shuffle: str


def _array_specs(
    row_shapes: Mapping[str, tuple[tuple[int, ...], str]], factors: Mapping[str, Any] | None
) -> list[ArraySpec]:
    """A new dataset's arrays. Blosc's LZ4 keeps pace with simulation and rendering; byte
    shuffling groups the similar bytes of numbers (images are bytes already)."""
    arrays = []
    for key, (shape, dtype) in row_shapes.items():
        image = key == "pixels" or key.startswith("pixels/")
        chunk = PIXEL_CHUNK if image else row_chunk(shape, dtype)
        fill = np.nan if np.dtype(dtype).kind == "f" else 0
        shuffle = "noshuffle" if image else "shuffle"
        arrays.append(ArraySpec(f"data/{key}", (0, *shape), (chunk, *shape), dtype, fill, shuffle))
    for key, dtype in _EPISODE_META.items():
        arrays.append(ArraySpec(f"meta/{key}", (0,), (EPISODE_CHUNK,), dtype, 0, "shuffle"))
    if factors:
        width = len(factors["names"])
        chunks = (EPISODE_CHUNK, width)
        arrays.append(ArraySpec("meta/factors", (0, width), chunks, "float64", np.nan, "shuffle"))
    return arrays


class DamagedChunk(DatasetError):
    """Chunk ``key`` (``c/12/0``) of the array at ``name`` fails its checksum or cannot be
    decoded."""

    def __init__(self, path: str, name: str, key: str, reason: str) -> None:
        self.name, self.key, self.reason = name, key, reason
        super().__init__(
            f"{path!r}: chunk {key} of {name} is damaged ({reason}); run `wmrobot data "
            f"validate --deep` and `wmrobot data repair`"
        )


def row_problem(key: str, values: np.ndarray, lo: int, ends: np.ndarray) -> tuple[int, str] | None:
    """The first of rows ``[lo, lo + len(values))`` of ``data/<key>`` (``values``) that breaks
    the format, and how: a flag set before an episode's last step, a final row with an action,
    NaN or Inf elsewhere (in float and bool arrays; images are not checked). None if none."""
    n = len(values)
    if values.dtype.kind not in "fb" or n == 0:
        return None
    flat = values.reshape(n, -1)
    ends = np.asarray(ends, dtype=np.int64)  # sorted: keep those whose last rows fall in here
    ends = ends[np.searchsorted(ends, lo + 1) : np.searchsorted(ends, lo + n + 2)]
    final = _marked(ends - 1 - lo, n)  # each episode's last row
    broken = []
    if key in ("terminated", "truncated"):
        last_step = _marked(ends - 2 - lo, n)
        broken.append((flat.any(1) & ~last_step, f"data/{key} is set before an episode's end"))
    if key == "action":
        has_action = final & ~np.isnan(flat).all(1)
        broken.append((has_action, "an episode's last row has an action (must be NaN)"))
    if values.dtype.kind == "f":
        real = ~final if key == "action" else np.ones(n, dtype=bool)
        broken.append((real & ~np.isfinite(flat).all(1), f"data/{key} holds NaN or Inf"))
    found = [(lo + int(np.argmax(bad)), line) for bad, line in broken if bad.any()]
    return min(found, key=lambda f: f[0]) if found else None


def _marked(rows: np.ndarray, n: int) -> np.ndarray:
    """A mask of ``n`` rows, True at ``rows`` (those outside ``[0, n)`` left out)."""
    mask = np.zeros(n, dtype=bool)
    mask[rows[(rows >= 0) & (rows < n)]] = True
    return mask


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _selected_rows(selection: Any, n: int) -> range:
    """The rows (first axis) that a selection of an array of ``n`` rows touches, as a range."""
    if isinstance(selection, (int, np.integer)):
        row = int(selection) % max(n, 1)
        return range(row, row + 1)
    if isinstance(selection, slice):
        start, stop, _ = selection.indices(n)
        return range(start, max(start, stop))
    return range(n)  # fancy selections: any chunk may be the one


def grown_shape(shape: tuple[int, ...], chunk: int, end: int) -> tuple[int, ...] | None:
    """The shape an array of ``shape`` (``chunk`` rows a chunk) grows to so that rows up to
    ``end`` fit, None if they do already: whole chunks, at least doubling, so that growing (a
    metadata write per array) is rare."""
    if end <= shape[0]:
        return None
    return (-(-max(end, 2 * shape[0]) // chunk) * chunk, *shape[1:])


def episode_row_shapes(episode: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """The ``row_shapes`` of :meth:`EpisodeStore.create` for datasets of episodes like this."""
    return {
        k: (v.shape[1:], str(v.dtype))
        for k, v in episode.items()
        if isinstance(v, np.ndarray) and v.ndim >= 1
    }


_EPISODE_META = {
    "episode_ends": "int64",
    "length": "int64",
    "seed": "int64",
    "return": "float64",
    "success": "bool",
}


def _valid_action_rows(ends: np.ndarray, n_rows: int) -> np.ndarray:
    """Mask of rows whose action is real (every row but each episode's last)."""
    mask = np.ones(n_rows, dtype=bool)
    mask[np.asarray(ends, dtype=np.int64) - 1] = False
    return mask


def row_chunk(shape: tuple[int, ...], dtype: Any) -> int:
    """Rows per chunk of a per-row array whose rows have ``shape`` and ``dtype``."""
    row = np.dtype(dtype).itemsize * int(np.prod(shape))
    rows = ROW_CHUNK
    while rows < ROW_CHUNK_MAX and 2 * rows * row <= ROW_CHUNK_BYTES:
        rows *= 2
    return rows
