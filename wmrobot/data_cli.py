"""``wmrobot data``: look into a dataset (info), check it (validate), re-simulate it (replay)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from wmrobot.errors import DatasetError

USAGE = """usage: wmrobot data <info|validate|replay|merge> ...

  info PATH              a readable summary: env, counts, keys, episode statistics, provenance
  validate PATH          check the committed part (counts, boundaries, NaN actions); exit 0 if valid
  replay PATH [EPISODE]  re-simulate episodes (default: all) from their recorded physics state
                         and actions; report the largest difference to the recorded observations
  merge OUT SRC SRC ...  a new dataset OUT holding every episode of the SRC datasets, in order
"""


def _size(path: str) -> str:
    if not Path(path).exists():
        return "remote"
    total = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    for unit in ("B", "KiB", "MiB", "GiB"):
        if total < 1024 or unit == "GiB":
            return f"{total:.1f} {unit}" if unit != "B" else f"{total} B"
        total /= 1024
    return ""


def info(path: str, console: Console) -> None:
    from wmrobot.datasets import EpisodeStore

    store = EpisodeStore.open(path)
    attrs = store.attrs
    collector = attrs.get("collector", {})
    lengths, returns = store.meta("length"), store.meta("return")
    success = store.meta("success")
    console.print(
        f"[bold]{path}[/bold]  ({attrs['format']} v{attrs['format_version']}, {_size(path)})"
    )
    console.print(f"env        {attrs['env']['id']} {attrs['env']['kwargs']}")
    console.print(
        f"contents   {store.n_episodes:,} episodes, {store.n_transitions:,} transitions, "
        f"{store.n_rows:,} rows"
    )
    if store.n_episodes:
        console.print(
            f"episodes   length {lengths.mean():.1f} (min {lengths.min()}, max {lengths.max()}), "
            f"return {returns.mean():.2f} ± {returns.std():.2f}, success {success.mean():.1%}"
        )
    params = collector.get("policy_params", {})
    console.print(
        f"collector  policy={collector.get('policy')} {params} seed={collector.get('seed')} "
        f"created {collector.get('created')} git {str(collector.get('git_revision'))[:10]}"
    )
    versions = collector.get("versions", {})
    console.print("versions   " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    table = Table(title="data/ (committed rows)")
    for col in ("key", "dtype", "row shape", "chunk rows", "mean", "std", "min", "max"):
        if col == "key":
            table.add_column(col, no_wrap=True, min_width=max(map(len, store.keys)))
        else:
            table.add_column(col, justify="right")
    stats = attrs.get("stats", {})

    def fmt(values: object) -> str:
        flat = np.asarray(values, dtype=float).ravel()
        shown = ", ".join(f"{v:.3g}" for v in flat[:4])
        return shown + (", ..." if flat.size > 4 else "")

    for key in store.keys:
        arr = store.array(key)
        s = stats.get(key, {})
        table.add_row(
            key,
            str(arr.dtype),
            str(tuple(arr.shape[1:])),
            str(arr.chunks[0]),
            *(fmt(s[k]) if k in s else "" for k in ("mean", "std", "min", "max")),
        )
    console.print(table)


def validate(path: str, console: Console) -> None:
    """Open (which validates counts and boundaries), then check actions and stats."""
    from wmrobot.datasets import EpisodeStore
    from wmrobot.datasets.store import _valid_action_rows

    store = EpisodeStore.open(path)
    ends, n = store.episode_ends, store.n_rows
    for key in ("length", "seed", "return", "success"):
        if len(store.meta(key)) != store.n_episodes:
            raise DatasetError(f"{path!r}: meta/{key} does not hold one entry per episode")
    if store.n_episodes and not np.array_equal(store.meta("length"), np.diff(ends, prepend=0) - 1):
        raise DatasetError(f"{path!r}: meta/length disagrees with meta/episode_ends")
    actions = store.array("action")[:n]
    real = _valid_action_rows(ends, n)
    final_step = np.zeros(n, dtype=bool)
    final_step[ends - 2] = True  # the row of each episode's last action
    for flag in ("terminated", "truncated"):
        if flag in store.keys and np.any(store.array(flag)[:n] & ~final_step):
            raise DatasetError(f"{path!r}: data/{flag} is set before an episode's end")
    for key in store.keys:
        if key != "action" and store.array(key).dtype.kind == "f":
            if not np.isfinite(store.array(key)[:n]).all():
                raise DatasetError(f"{path!r}: data/{key} holds NaN or Inf")
    if store.n_rows and not np.isfinite(actions[real]).all():
        bad = int(np.flatnonzero(~np.isfinite(actions[real]).all(axis=-1))[0])
        raise DatasetError(f"{path!r}: non-finite action in row {np.flatnonzero(real)[bad]}")
    if store.n_rows and not np.isnan(actions[~real]).all():
        raise DatasetError(f"{path!r}: an episode's last row has an action (must be NaN)")
    if store.n_episodes and set(store.stat_keys) - set(store.attrs.get("stats", {})):
        raise DatasetError(f"{path!r}: normalisation statistics are missing")
    console.print(
        f"ok: {path} holds {store.n_episodes:,} valid episodes ({store.n_transitions:,} steps)"
    )


def replay_command(path: str, episode: str | None, console: Console) -> None:
    from wmrobot.datasets import EpisodeStore, replay

    store = EpisodeStore.open(path)
    if episode is not None:
        try:
            episodes = [int(episode)]
        except ValueError:
            raise DatasetError(f"EPISODE must be an integer, got {episode!r}") from None
        if not 0 <= episodes[0] < store.n_episodes:
            raise DatasetError(f"episode {episode} out of range: {path!r} has {store.n_episodes}")
    else:
        episodes = list(range(store.n_episodes))
    if not episodes:
        raise DatasetError(f"{path!r} holds no episodes to replay")
    worst = 0.0
    for e in episodes:
        result = replay(store, e)
        worst = max(worst, *result.max_abs_diff.values())
    verdict = "exact" if worst == 0.0 else f"largest difference {worst:.3g}"
    console.print(f"replay: {len(episodes)} episode(s) of {path}: {verdict}")


def main(args: list[str]) -> int:
    from wmrobot.errors import WmrobotError

    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    sub, rest = args[0], args[1:]
    commands = {"info": (1, 1), "validate": (1, 1), "replay": (1, 2), "merge": (3, 1000)}
    if sub not in commands:
        print(
            f"wmrobot data: error: unknown subcommand {sub!r}; choose one of {', '.join(commands)}",
            file=sys.stderr,
        )
        return 2
    low, high = commands[sub]
    if not low <= len(rest) <= high or any(a.startswith("-") for a in rest):
        if any(a in ("-h", "--help") for a in rest):
            print(USAGE)
            return 0
        expected = {"replay": "PATH [EPISODE]", "merge": "OUT SRC SRC ..."}.get(sub, "PATH")
        print(f"wmrobot data {sub}: error: expected {expected}, got {rest}", file=sys.stderr)
        return 2
    console = Console(width=max(shutil.get_terminal_size().columns, 110))
    try:
        if sub == "info":
            info(rest[0], console)
        elif sub == "validate":
            validate(rest[0], console)
        elif sub == "merge":
            from wmrobot.datasets import merge

            merged = merge(rest[0], rest[1:])
            console.print(
                f"merge: {merged.n_episodes:,} episodes ({merged.n_transitions:,} steps) "
                f"from {len(rest) - 1} datasets into {rest[0]}"
            )
        else:
            replay_command(rest[0], rest[1] if len(rest) > 1 else None, console)
    except WmrobotError as e:
        print(f"wmrobot data {sub}: error: {e}", file=sys.stderr)
        return 2
    return 0
