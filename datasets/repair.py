"""Deep checks and repair: read every chunk, recompute what is derivable, roll back to the
longest committed prefix of episodes that validates."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wmrobot.datasets.stats import as_columns, merge_moments, quantiles, stats_from_moments
from wmrobot.datasets.store import (
    _EPISODE_META,
    DamagedChunk,
    EpisodeStore,
    _valid_action_rows,
    is_local,
    normalise_path,
    row_problem,
)
from wmrobot.errors import DatasetError

# Per-episode arrays that repair recomputes from the rest rather than drop episodes for.
DERIVED = ("length", "return")


@dataclass
class Problem:
    """One thing wrong: from which episode on the dataset must be dropped (the committed count
    where nothing is: repair recomputes it), and the one line that says what."""

    episode: int
    line: str


@dataclass
class Diagnosis:
    """What :func:`diagnose` found in a dataset's committed part."""

    n_episodes: int  # committed
    ends: np.ndarray  # the readable, increasing prefix of meta/episode_ends
    problems: list[Problem] = field(default_factory=list)  # in the order found
    damaged: dict[str, list[int]] = field(default_factory=dict)  # array -> damaged chunks
    unchecked: list[str] = field(default_factory=list)  # arrays written without checksums
    derived: dict[str, np.ndarray] = field(default_factory=dict)  # meta key -> recomputed entries

    @property
    def first(self) -> Problem | None:
        """The problem that decides what is kept: the earliest episode's (the first found of
        those)."""
        return min(self.problems, key=lambda p: p.episode, default=None)

    @property
    def keep(self) -> int:
        """Episodes of the longest committed prefix that validates deep."""
        return self.first.episode if self.first else self.n_episodes

    @property
    def kept_rows(self) -> int:
        return int(self.ends[self.keep - 1]) if self.keep else 0


def diagnose(store: EpisodeStore) -> Diagnosis:
    """Read every committed chunk of every array (checking checksums) and every rule of the
    format, recomputing lengths from ``meta/episode_ends`` and returns from ``data/reward``.
    Open ``store`` with ``check=False`` to diagnose one that does not validate."""
    n_rows, n_eps = store.n_rows, store.n_episodes
    d = Diagnosis(n_eps, np.zeros(0, dtype=np.int64))
    names = [f"data/{k}" for k in store.keys]
    metas = [*_EPISODE_META, *(["factors"] if store.factor_names else [])]
    names += [f"meta/{k}" for k in metas]
    for name in names:  # a missing or unparsable array: DatasetError, nothing to roll back to
        codecs = store.node(name).metadata.to_dict()["codecs"]
        if not any(c.get("name") == "crc32c" for c in codecs):
            d.unchecked.append(name)

    # The spine: each episode's end row, readable and strictly increasing up to n_rows.
    ends = _read_entries(store, "meta/episode_ends", n_eps, d, derived=False)
    bad = np.flatnonzero((np.diff(ends, prepend=0) <= 0) | (ends > n_rows))
    if len(bad):
        line = f"meta/episode_ends is not strictly increasing up to n_rows={n_rows}"
        d.problems.append(Problem(int(bad[0]), line))
        ends = ends[: bad[0]]
    d.ends = ends
    if len(ends) == n_eps and n_eps and ends[-1] != n_rows:
        d.problems.append(
            Problem(n_eps, f"n_rows={n_rows} but meta/episode_ends ends at {ends[-1]}")
        )

    def episode_of(row: int) -> int:
        return int(np.searchsorted(ends, row, side="right"))

    # Per episode, the sum of rewards and of their sizes (the last bin: rows past the ends).
    sums, sizes = np.zeros(len(ends) + 1), np.zeros(len(ends) + 1)
    for key in store.keys:
        name = f"data/{key}"
        array = store.node(name)
        if array.shape[0] < n_rows:
            line = f"{name} holds {array.shape[0]} rows, fewer than the {n_rows} committed"
            d.problems.append(Problem(episode_of(array.shape[0]), line))
        size = array.chunks[0]
        for index in range(-(-min(n_rows, array.shape[0]) // size)):
            lo = index * size
            try:
                values = store.read_chunk(name, index)[: n_rows - lo]
            except DamagedChunk as e:
                _damaged(d, e, index, episode_of(lo))
                continue
            problem = row_problem(key, values, lo, ends)
            if problem is not None:
                d.problems.append(Problem(episode_of(problem[0]), problem[1]))
            if key == "reward":
                at = np.searchsorted(ends, np.arange(lo, lo + len(values)), side="right")
                r = values.astype(np.float64).reshape(len(values))
                sums += np.bincount(at, r, minlength=len(sums))
                sizes += np.bincount(at, np.abs(r), minlength=len(sums))

    entries = {k: _read_entries(store, f"meta/{k}", n_eps, d, k in DERIVED) for k in metas[1:]}
    lengths = np.diff(ends, prepend=0) - 1
    _derive(d, "length", entries["length"], lengths, np.zeros(len(ends)), "meta/episode_ends")
    if "reward" in store.keys:
        # Summed here in float64, by a writer perhaps in the rewards' own dtype: agreeing to
        # within that dtype's rounding over the episode.
        tolerance = 1e-5 * np.maximum(sizes[: len(ends)], 1.0)
        _derive(d, "return", entries["return"], sums[: len(ends)], tolerance, "data/reward")
    if n_eps and set(store.stat_keys) - set(store.attrs.get("stats", {})):
        d.problems.append(Problem(n_eps, "normalisation statistics are missing"))
    return d


def _damaged(d: Diagnosis, e: DamagedChunk, index: int, episode: int) -> None:
    d.damaged.setdefault(e.name, []).append(index)
    d.problems.append(Problem(episode, f"chunk {e.key} of {e.name} is damaged ({e.reason})"))


def _read_entries(
    store: EpisodeStore, name: str, n_eps: int, d: Diagnosis, derived: bool
) -> np.ndarray:
    """The committed entries of per-episode array ``name`` up to its first damaged chunk (a
    damaged chunk of a ``derived`` array costs no episode: its entries are recomputed)."""
    array, parts = store.node(name), []
    if array.shape[0] < n_eps:
        line = f"{name} is shorter than {n_eps} episodes"
        d.problems.append(Problem(n_eps if derived else array.shape[0], line))
    size = array.chunks[0]
    for index in range(-(-min(n_eps, array.shape[0]) // size)):
        try:
            parts.append(store.read_chunk(name, index)[: n_eps - index * size])
        except DamagedChunk as e:
            _damaged(d, e, index, n_eps if derived else index * size)
            if not derived:
                break
            parts.append(np.full(min(size, n_eps - index * size), np.nan))  # recomputed
    return np.concatenate(parts) if parts else np.zeros(0, dtype=array.dtype)


def _derive(
    d: Diagnosis,
    key: str,
    stored: np.ndarray,
    want: np.ndarray,
    tolerance: np.ndarray,
    source: str,
) -> None:
    """Compare the ``stored`` entries of ``meta/<key>`` with ``want`` (recomputed from
    ``source``); where they disagree or are unreadable, keep the recomputed values for repair
    to write."""
    name = f"meta/{key}"
    got = np.full(len(want), np.nan)
    got[: min(len(stored), len(want))] = stored[: len(want)]
    with np.errstate(invalid="ignore"):
        ok = np.abs(got - want) <= tolerance
    wrong = np.flatnonzero(~ok)
    if len(wrong):
        line = f"{name} of episode {wrong[0]} disagrees with {source}"
        if name not in d.damaged:  # a damaged chunk is its own, first, line
            d.problems.append(Problem(d.n_episodes, line))
        d.derived[key] = np.where(ok, got, want).astype(_EPISODE_META[key])


def check_deep(store: EpisodeStore) -> Diagnosis:
    """:func:`diagnose`, raising a one-line :class:`DatasetError` for the problem that decides
    what :func:`repair` would keep (and saying what that is)."""
    d = diagnose(store)
    if d.first:
        keep = d.keep
        fix = (
            f"{d.n_episodes} episodes"
            if keep == d.n_episodes
            else f"the first {keep} of {d.n_episodes} episodes"
        )
        raise DatasetError(
            f"{store.path!r}: {d.first.line}; `wmrobot data repair {store.path}` keeps {fix}"
        )
    return d


@dataclass
class Repair:
    """What :func:`repair` kept and dropped, and where the copy of what it changed lies."""

    path: str
    diagnosis: Diagnosis
    n_rows: int  # committed before
    copy: Path | None  # None: nothing changed (healthy, or a dry run)

    @property
    def needed(self) -> bool:
        return bool(self.diagnosis.problems)

    @property
    def kept(self) -> tuple[int, int]:
        """Episodes and transitions kept."""
        d = self.diagnosis
        return d.keep, d.kept_rows - d.keep

    @property
    def dropped(self) -> tuple[int, int]:
        """Episodes and transitions dropped."""
        d = self.diagnosis
        episodes = d.n_episodes - d.keep
        return episodes, self.n_rows - episodes - d.kept_rows


def repair(path: str | os.PathLike, dry_run: bool = False) -> Repair:
    """Roll the local dataset at ``path`` back to the longest committed prefix of episodes that
    validates deep (:func:`diagnose`), recomputing lengths, returns and statistics of what is
    kept, and commit once. Every file it rewrites or removes, and every chunk holding dropped
    rows, is first copied into ``<path>.repair-<UTC time>/`` beside it. ``dry_run``: diagnose
    only, change nothing."""
    path = normalise_path(path)
    if not is_local(path):
        raise DatasetError(
            f"{path!r}: repair works on local datasets only; copy it to a local path, repair "
            f"that and copy it back"
        )
    _check_root(path)
    store = EpisodeStore.open(path, check=False)
    d = diagnose(store)
    if d.problems and not dry_run:  # diagnosed again as its writer: nothing changes meanwhile
        store = EpisodeStore.open(path, mode="a", check=False)
        d = diagnose(store)
    result = Repair(path, d, store.n_rows, None)
    with store:  # as a writer: the lock is held until the repair is committed and shrunk
        if not d.problems or dry_run:
            return result
        _roll_back(store, d, result)
    again = diagnose(EpisodeStore.open(path, check=False))
    if again.problems:  # a bug of ours, not the user's: say so rather than claim success
        raise DatasetError(
            f"{path!r}: repair left a problem: {again.problems[0].line}; the copy of what it "
            f"changed is in {result.copy}"
        )
    return result


def _roll_back(store: EpisodeStore, d: Diagnosis, result: Repair) -> None:
    """Copy what changes aside, then roll ``store`` back to the prefix ``d`` keeps."""
    result.copy = _copy_changed(store, d)
    # A damaged chunk fails as a whole (one checksum covers it), so no row of it can be kept:
    # the prefix ends with the last episode that ends before the damaged chunk's first row,
    # and the rows past the new commit stay in their chunks, unread (an append writes over
    # them). Derived per-episode entries are rewritten in whole chunks, never read back.
    for key, values in d.derived.items():
        if d.keep:
            name = f"meta/{key}"
            array = store.node(name)
            size = array.chunks[0]
            upto = max(d.keep, min(array.shape[0], -(-d.keep // size) * size))
            rows = np.full(upto, array.fill_value, dtype=array.dtype)
            rows[: d.keep] = values[: d.keep]
            store._write_grown(name, 0, rows)
    moments, stats = _prefix_stats(store, d)
    # The one commit: readers see the old dataset until this write, the repaired one after.
    store.update_attrs(n_rows=d.kept_rows, n_episodes=d.keep, _moments=moments, stats=stats)
    # As every writer leaves a dataset: plain zarr readers see what is kept. The chunks wholly
    # past the kept rows go, so do the damaged ones (copied above, and past the kept rows of
    # their array), which an append that fills part of one would read back and fail on.
    store.shrink()


def roll_back(store: EpisodeStore, keep: int) -> None:
    """Roll ``store`` (open for appending) back to its first ``keep`` committed episodes in
    one commit, statistics recomputed, then shrink it: for a resumed writer that redoes what
    came after (``wmrobot learn``). A no-op when it holds no more than that."""
    if store.n_episodes <= keep:
        return
    d = Diagnosis(store.n_episodes, store.episode_ends, [Problem(keep, "rolled back")])
    moments, stats = _prefix_stats(store, d)
    store.update_attrs(n_rows=d.kept_rows, n_episodes=d.keep, _moments=moments, stats=stats)
    store.shrink()


def _check_root(path: str) -> None:
    """Refuse, in one line, a dataset whose root ``zarr.json`` (its commit) cannot be read."""
    root = Path(path) / "zarr.json"
    if not root.exists():
        return  # opening says what is there instead
    try:
        attributes = json.loads(root.read_bytes())["attributes"]
        int(attributes["n_rows"]), int(attributes["n_episodes"]), list(attributes["keys"])
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(
            f"{path!r}: its root zarr.json (the commit: counts, keys, statistics) is damaged "
            f"({type(e).__name__}); repair cannot rebuild it: restore it from a copy"
        ) from None


def _copy_changed(store: EpisodeStore, d: Diagnosis) -> Path:
    """Copy the root and array documents, the chunks of dropped rows and entries, the damaged
    chunks and the derived arrays into ``<path>.repair-<UTC time>/`` (made whole, then renamed
    into place); returns it."""
    folder = Path(store.path)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    copy = folder.with_name(f"{folder.name}.repair-{stamp}")
    for n in range(2, 1000):
        if not copy.exists():
            break
        copy = folder.with_name(f"{folder.name}.repair-{stamp}-{n}")
    partial = copy.with_name(copy.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    files = [Path("zarr.json")]
    for name in [f"data/{k}" for k in store.keys]:
        files += _chunk_files(folder, name, d.kept_rows // store.node(name).chunks[0])
    for key in [*_EPISODE_META, *(["factors"] if store.factor_names else [])]:
        name = f"meta/{key}"
        first = 0 if key in d.derived else d.keep // store.node(name).chunks[0]
        files += _chunk_files(folder, name, first)
    for file in files:
        (partial / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / file, partial / file)
    record = {
        "dataset": store.path,
        "committed": {"n_episodes": d.n_episodes, "n_rows": store.n_rows},
        "kept": {"n_episodes": d.keep, "n_rows": d.kept_rows},
        "problems": [p.line for p in sorted(d.problems, key=lambda p: p.episode)],
        "recomputed": sorted(f"meta/{k}" for k in d.derived),
    }
    (partial / "repair.json").write_text(json.dumps(record, indent=2))
    os.rename(partial, copy)
    return copy


def _chunk_files(folder: Path, name: str, first: int) -> list[Path]:
    """``name``'s zarr.json and its chunk files from chunk ``first`` (first axis) on."""
    chunks = folder / name / "c"
    files = [Path(name) / "zarr.json"]
    if chunks.is_dir():
        for f in sorted(chunks.rglob("*")):
            index = f.relative_to(chunks).parts[0]
            if f.is_file() and index.isdigit() and int(index) >= first:
                files.append(f.relative_to(folder))
    return files


def _prefix_stats(store: EpisodeStore, d: Diagnosis) -> tuple[dict, dict]:
    """Moments and statistics, quantiles included, of the kept rows."""
    n, ends = d.kept_rows, d.ends[: d.keep]
    if n == 0:
        return {}, {}
    real = _valid_action_rows(ends, n)
    columns = {}
    for key in store.stat_keys:
        rows = store.read(f"data/{key}", slice(n))
        columns[key] = as_columns(rows[real] if key in ("action", "reward") else rows)
    moments = merge_moments({}, columns)
    stats = stats_from_moments(moments)
    for key, x in columns.items():
        q01, q99 = quantiles(x, (0.01, 0.99), overwrite_input=True)
        stats[key].update(q01=q01.tolist(), q99=q99.tolist())
    return moments, stats
