"""Training windows from an EpisodeStore: episode-safe, read lazily or from memory, normalised."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numba
import numpy as np
import torch

from wmrobot.datasets.stats import STD_FLOOR
from wmrobot.datasets.store import EpisodeStore
from wmrobot.errors import DatasetError

# Keys stored on the row of the step they belong to: row t holds the action taken from row t's
# observation and what that step returned. A window returns them for its transitions only.
TRANSITION_KEYS = ("action", "reward", "terminated", "truncated")
MEMORY_FRACTION = 0.25  # of the available memory, the default budget of one sampler


def window_starts(episode_ends: np.ndarray, steps: int, frame_skip: int = 1) -> np.ndarray:
    """Row indices ``t`` such that rows ``t, t+k, ..., t+steps*k`` (``k = frame_skip``) lie in
    one episode and the actions of rows ``t .. t+steps*k-1`` are real (each episode's last row
    has no action)."""
    return _window_starts(np.asarray(episode_ends, dtype=np.int64), np.int64(steps * frame_skip))


@numba.njit(cache=True)
def _window_starts(ends: np.ndarray, span: np.int64) -> np.ndarray:
    # An episode of rows [b, e) has actions on rows b .. e-2, so t + span <= e - 1.
    total, begin = 0, 0
    for end in ends:
        total += max(end - span - begin, 0)
        begin = end
    out = np.empty(total, dtype=np.int64)
    k, begin = 0, 0
    for end in ends:
        for t in range(begin, end - span):
            out[k] = t
            k += 1
        begin = end
    return out


class Normalizer:
    """Standardises float keys with a dataset's statistics: ``(x - mean) / max(std, floor)``.

    Keys without statistics (physics, pixels, flags) pass through both ways unchanged.
    """

    def __init__(self, mean: Mapping[str, torch.Tensor], std: Mapping[str, torch.Tensor]) -> None:
        self.mean, self.std = dict(mean), dict(std)

    @classmethod
    def from_store(cls, store: EpisodeStore) -> Normalizer:
        """From ``store.attrs["stats"]``: float keys only, each shaped like one of its rows."""
        mean, std = {}, {}
        for key, s in store.attrs.get("stats", {}).items():
            if key not in store.keys or store.array(key).dtype.kind != "f":
                continue
            shape = store.array(key).shape[1:]
            mean[key] = torch.tensor(s["mean"], dtype=torch.float32).reshape(shape)
            std[key] = torch.tensor(s["std"], dtype=torch.float32).reshape(shape)
            std[key] = std[key].clamp_min(STD_FLOOR)
        return cls(mean, std)

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """(..., *row shape) raw values -> standardised values of the same shape and dtype."""
        if key not in self.mean:
            return x
        return (x - self.mean[key].to(x.dtype)) / self.std[key].to(x.dtype)

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`."""
        if key not in self.mean:
            return x
        return x * self.std[key].to(x.dtype) + self.mean[key].to(x.dtype)


class ChunkReader:
    """Reads arbitrary rows of ``data/<key>`` arrays without loading them.

    A Zarr call has a fixed cost whatever it reads, and decoding one row decodes its whole
    chunk, so rows are grouped by chunk, missing chunks are read in runs of
    consecutive chunks (one call per run), and decoded chunks stay in an LRU of at most
    ``budget`` bytes, shared by all keys.
    """

    def __init__(self, store: EpisodeStore, keys: Iterable[str], n_rows: int, budget: int) -> None:
        self.store = store
        self.arrays = {k: store.array(k) for k in keys}
        self.chunk_rows = {k: a.chunks[0] for k, a in self.arrays.items()}
        self.n_rows, self.budget = n_rows, budget
        self.lru: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.held = 0  # bytes in the LRU

    def read(self, key: str, rows: np.ndarray) -> np.ndarray:
        """Rows (...) of ``key`` -> values (..., *row shape)."""
        array, size = self.arrays[key], self.chunk_rows[key]
        flat = rows.reshape(-1)
        chunk_of = flat // size
        order = np.argsort(chunk_of, kind="stable")
        ids, first = np.unique(chunk_of[order], return_index=True)
        out = np.empty((flat.size, *array.shape[1:]), dtype=array.dtype)
        ends = [*first[1:], flat.size]
        for c, block, lo, hi in zip(ids, self._chunks(key, ids), first, ends, strict=True):
            at = order[lo:hi]
            out[at] = block[flat[at] - c * size]
        return out.reshape(*rows.shape, *array.shape[1:])

    def _chunks(self, key: str, ids: np.ndarray) -> list[np.ndarray]:
        """Decoded chunks ``ids`` (sorted) of ``key``, from the LRU or read in runs."""
        found: dict[int, np.ndarray] = {}
        missing = []
        for c in ids.tolist():
            block = self.lru.get((key, c))
            if block is None:
                missing.append(c)
            else:
                self.lru.move_to_end((key, c))
                found[c] = block
        array, size = self.arrays[key], self.chunk_rows[key]
        for run in np.split(missing, np.flatnonzero(np.diff(missing) != 1) + 1) if missing else []:
            first, last = int(run[0]), int(run[-1])
            rows = slice(first * size, min((last + 1) * size, self.n_rows))
            try:
                data = array[rows]
            except (ValueError, RuntimeError):  # zarr's checksum error, Blosc's: which chunk?
                self.store.read(f"data/{key}", rows)  # raises the line that names it
                raise
            for c in range(first, last + 1):
                block = data[(c - first) * size : (c - first + 1) * size]
                # A copy lets the LRU free one chunk of a run without keeping the rest alive
                # (needless when the LRU will not keep it).
                kept = first != last and block.nbytes <= self.budget
                found[c] = block.copy() if kept else block
                self._keep((key, c), found[c])
        return [found[c] for c in ids.tolist()]

    def _keep(self, name: tuple[str, int], block: np.ndarray) -> None:
        if block.nbytes > self.budget:
            return
        self.lru[name] = block
        self.held += block.nbytes
        while self.held > self.budget:
            self.held -= self.lru.popitem(last=False)[1].nbytes


def _available_memory() -> int:
    """Bytes the system can still hand out (Linux MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class WindowSampler(torch.utils.data.Dataset):
    """Windows of ``steps`` transitions from an EpisodeStore, never across an episode boundary.

    A window starting at row t holds, with ``k = frame_skip``:

    - row keys (observations, goal, physics, pixels): rows t, t+k, ..., t+steps*k,
      shape (steps+1, ...);
    - transition keys (``TRANSITION_KEYS``: action, reward, flags): the ``steps*k`` steps
      t .. t+steps*k-1 at full rate, shape (steps*k, ...). In a batch, ``action.unflatten(1,
      (steps, k))`` is (B, steps, k, A): step i's k actions lead from row i to row i+1 of the
      window; ``.flatten(2)`` then makes the (B, steps, k*A) input of a k-step predictor.
      An episode's final NaN action is never part of a window.

    ``cache``: True loads the keys into memory, False reads only the rows asked for (decoded
    chunks kept in an LRU of ``memory`` bytes), "auto" loads them when they fit in ``memory``
    (default: a quarter of the available memory; per process). ``normalize`` standardises
    float keys with the stored statistics (:attr:`normalizer` holds the inverse); pixels stay
    uint8. The sampler reads the committed rows of when it was made, however the dataset grows.

    ``sample(B, generator)`` draws a batch of (B, steps+1 | steps*k, ...) tensors. As a torch
    ``Dataset`` it works with ``DataLoader(num_workers=N)``: each worker reopens the store,
    and reads a batch's windows together; :meth:`loader` also skips the per-window collate.
    """

    def __init__(
        self,
        store: EpisodeStore,
        keys: Iterable[str],
        steps: int,
        *,
        frame_skip: int = 1,
        cache: bool | Literal["auto"] = "auto",
        normalize: bool = False,
        memory: int | None = None,
    ) -> None:
        if steps < 1:
            raise DatasetError(f"steps must be >= 1, got {steps}; a window holds one step or more")
        if frame_skip < 1:
            raise DatasetError(f"frame_skip must be >= 1, got {frame_skip}; 1 keeps every row")
        if cache not in (True, False, "auto"):
            raise DatasetError(f"cache must be True, False or 'auto', got {cache!r}")
        self.keys = list(dict.fromkeys(keys))
        unknown = [k for k in self.keys if k not in store.keys]
        if unknown:
            raise DatasetError(
                f"{store.path!r} has no key {unknown[0]!r}; choose from {', '.join(store.keys)}"
            )
        self.path, self.steps, self.frame_skip = store.path, steps, frame_skip
        self.n_rows = store.n_rows
        self.starts = torch.from_numpy(window_starts(store.episode_ends, steps, frame_skip))
        if len(self.starts) == 0:
            raise DatasetError(
                f"no episode of {store.path!r} holds a window of {steps * frame_skip} steps "
                f"(steps={steps} x frame_skip={frame_skip}); lower the window "
                f"(model.train.horizon) or collect longer episodes"
            )
        self._row_offsets = torch.arange(steps + 1) * frame_skip
        self._step_offsets = torch.arange(steps * frame_skip)
        self.normalize = normalize
        self.normalizer = Normalizer.from_store(store)
        if memory is None and cache is not True:  # the budget matters only when not loading
            memory = int(MEMORY_FRACTION * _available_memory())
        self.memory = memory
        size = sum(self.n_rows * _row_bytes(store, k) for k in self.keys)
        self.cached = cache is True or (cache == "auto" and size <= self.memory)
        self._data: dict[str, torch.Tensor] | None = None
        if self.cached:  # normalised once here, so a batch costs one gather per key
            self._data = {
                k: self._prepare(k, torch.from_numpy(np.ascontiguousarray(v)))
                for k, v in store.load(self.keys).items()
            }
        self._reader: ChunkReader | None = None
        self._pid = -1  # the process that opened _reader: a DataLoader worker opens its own
        if not self.cached:
            self._reader = ChunkReader(store, self.keys, self.n_rows, self.memory)
            self._pid = os.getpid()

    # ------------------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int | Sequence[int]) -> dict[str, torch.Tensor]:
        """Window ``index`` as (steps+1 | steps*k, ...) tensors; a list of them as one batch."""
        index = torch.as_tensor(index, dtype=torch.long)
        if index.ndim == 0:
            return {k: v[0] for k, v in self.batch(index[None]).items()}
        return self.batch(index)

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        # DataLoader's hook for batched fetching: one read per key, then split for its collate.
        batch = self.batch(indices)
        return [{k: v[i] for k, v in batch.items()} for i in range(len(indices))]

    def loader(
        self,
        batch_size: int,
        batches: int,
        generator: torch.Generator | None = None,
        num_workers: int = 0,
    ) -> torch.utils.data.DataLoader:
        """``batches`` batches drawn like :meth:`sample`, each read whole by one of
        ``num_workers`` worker processes (no per-window collate)."""
        picks = torch.utils.data.RandomSampler(
            self, replacement=True, num_samples=batch_size * batches, generator=generator
        )
        return torch.utils.data.DataLoader(
            self,
            batch_size=None,  # the sampler below yields whole batches of indices
            sampler=torch.utils.data.BatchSampler(picks, batch_size, drop_last=True),
            num_workers=num_workers,
        )

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``batch_size`` windows drawn uniformly with replacement, as (B, ...) tensors."""
        pick = torch.randint(len(self.starts), (batch_size,), generator=generator)
        return self._windows(self.starts[pick])

    def batch(self, indices: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Windows ``indices`` (positions in :attr:`starts`) as one batch of (B, ...) tensors."""
        return self._windows(self.starts[torch.as_tensor(indices, dtype=torch.long)])

    def rows(self, key: str, indices: torch.Tensor) -> torch.Tensor:
        """Rows ``indices`` (any shape, each < :attr:`n_rows`) of ``key``, e.g. random goals."""
        if key not in self.keys:
            raise DatasetError(f"{key!r} is not one of this sampler's keys {self.keys}; add it")
        return self._read(key, torch.as_tensor(indices, dtype=torch.long))

    def _windows(self, starts: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = starts[:, None] + self._row_offsets  # (B, steps + 1)
        steps = starts[:, None] + self._step_offsets  # (B, steps * k)
        return {k: self._read(k, steps if k in TRANSITION_KEYS else rows) for k in self.keys}

    def _read(self, key: str, rows: torch.Tensor) -> torch.Tensor:
        if self._data is not None:
            data = self._data[key]
            # index_select copies whole rows, where data[rows] gathers (N, H, W, C) pixels slowly.
            return data.index_select(0, rows.reshape(-1)).view(*rows.shape, *data.shape[1:])
        if self._pid != os.getpid():  # unpickled, or forked into a worker: reopen
            store = EpisodeStore.open(self.path)
            self._reader = ChunkReader(store, self.keys, self.n_rows, self.memory)
            self._pid = os.getpid()
        return self._prepare(key, torch.from_numpy(self._reader.read(key, rows.numpy())))

    def _prepare(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self.normalizer.normalize(key, x) if self.normalize else x

    # ---------------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        # Zarr handles and decoded chunks stay behind; a worker reopens the store on first
        # read. In-memory tensors go along (DataLoader passes them through shared memory).
        return {**self.__dict__, "_reader": None, "_pid": -1}


def _row_bytes(store: EpisodeStore, key: str) -> int:
    array = store.array(key)
    return array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
