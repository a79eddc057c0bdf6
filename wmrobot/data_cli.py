"""``wmrobot data``: look into, check, re-simulate, merge and convert datasets."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from wmrobot.cli_common import error
from wmrobot.errors import DatasetError, WmrobotError
from wmrobot.files import human_bytes

USAGE = """usage: wmrobot data <info|validate|repair|replay|merge|convert> ...

  info PATH              a readable summary: env, counts, keys, episode statistics, provenance
  validate PATH [--deep] check the committed part (counts, boundaries, NaN actions); exit 0 if
                         valid. --deep also reads every chunk of every array (checksums) and
                         recomputes lengths from meta/episode_ends and returns from data/reward
  repair PATH [--dry-run]
                         roll a damaged or inconsistent dataset back to the longest committed
                         prefix of episodes that validates deep; what it drops or rewrites is
                         first copied to PATH.repair-<time>/. --dry-run: say so, change nothing
  replay PATH [EPISODE]  re-simulate episodes (default: all) from their recorded physics state
                         and actions; report the largest difference to the recorded observations
  merge OUT SRC SRC ...  a new dataset OUT holding every episode of the SRC datasets, in order
  convert --from-minari SOURCE OUT
                         a new dataset OUT from a Minari dataset: SOURCE is its id (looked up in
                         $MINARI_DATASETS_PATH, else ~/.minari/datasets) or its folder; it holds
                         no physics state, so OUT cannot be replayed
  convert PATH --to-minari ID [--root DIR] [--author NAME] [--author-email EMAIL]
          [--description TEXT]
                         write dataset PATH as the Minari dataset ID (into DIR, else
                         $MINARI_DATASETS_PATH, else ~/.minari/datasets); minari.load_dataset(ID)
                         opens it. Needs: pip install 'wmrobot[minari]'
"""


def _size(path: str) -> str:
    from wmrobot.datasets.store import is_local, normalise_path

    path = normalise_path(path)
    if not is_local(path):
        return "remote"
    return human_bytes(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()))


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
    ranges = attrs.get("factors", {}).get("ranges", {})
    varied = {k: v for k, v in ranges.items() if v[0] != v[1]}
    if ranges:
        shown = ", ".join(f"{k} {v}" for k, v in varied.items()) or "none (all held fixed)"
        console.print(f"factors    varied per episode: {shown}")
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


def validate(path: str, deep: bool, console: Console) -> None:
    """Open (which checks counts and boundaries), then check every committed row; ``deep``:
    every chunk's checksum and what is derivable as well."""
    from wmrobot.datasets import EpisodeStore
    from wmrobot.datasets.repair import check_deep

    store = EpisodeStore.open(path, check=not deep)  # deep: its own, more exact, lines
    if deep:
        unchecked = check_deep(store).unchecked
    else:
        store.check_contents()
    console.print(
        f"ok: {path} holds {store.n_episodes:,} valid episodes ({store.n_transitions:,} steps)"
        + (" (deep: every chunk read, lengths and returns recomputed)" if deep else ""),
        soft_wrap=True,
    )
    if deep and unchecked:
        console.print(
            f"note: {len(unchecked)} arrays were written before checksums and carry none "
            f"({', '.join(unchecked)}): damage in them shows only where it breaks a rule",
            soft_wrap=True,
        )


def repair_command(path: str, dry_run: bool, console: Console) -> None:
    from wmrobot.datasets.repair import repair

    result = repair(path, dry_run=dry_run)
    say = functools.partial(console.print, soft_wrap=True)  # paths and lines whole, unwrapped
    if not result.needed:
        say(f"repair: {path} validates deep; nothing needs repair")
        return
    d = result.diagnosis
    (kept, kept_steps), (dropped, dropped_steps) = result.kept, result.dropped
    verb = ("would keep", "would drop") if dry_run else ("kept", "dropped")
    recomputed = "".join(f", recomputed meta/{k}" for k in d.derived)
    say(f"repair: {path}: {d.first.line}")
    say(
        f"{verb[0]} {kept:,} episodes ({kept_steps:,} steps), {verb[1]} {dropped:,} episodes "
        f"({dropped_steps:,} steps){recomputed}"
    )
    if dry_run:
        say("dry run: nothing changed")
    else:
        say(f"a copy of what was dropped or rewritten is in {result.copy}")


def replay_command(path: str, episode: str | None, console: Console) -> None:
    from wmrobot.datasets import EpisodeStore, replay
    from wmrobot.datasets.replay import env_for

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
    env = env_for(store)  # one env for every episode
    try:
        for e in episodes:
            worst = max(worst, *replay(store, e, env).max_abs_diff.values())
    finally:
        env.close()
    verdict = "exact" if worst == 0.0 else f"largest difference {worst:.3g}"
    console.print(f"replay: {len(episodes)} episode(s) of {path}: {verdict}")


CONVERT_OPTIONS = (
    "--from-minari",
    "--to-minari",
    "--root",
    "--author",
    "--author-email",
    "--description",
)


def convert_command(args: list[str], console: Console) -> None:
    """Parse ``convert``'s arguments (``--name VALUE`` or ``--name=VALUE``) and convert."""
    from wmrobot.datasets import minari_io

    options: dict[str, str] = {}
    paths: list[str] = []
    rest = iter(args)
    for arg in rest:
        if not arg.startswith("-"):
            paths.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name not in CONVERT_OPTIONS:
            raise DatasetError(
                f"unknown option {name!r}; convert takes {', '.join(CONVERT_OPTIONS)}"
            )
        value = value if eq else next(rest, "")
        if not value or value.startswith("--"):
            raise DatasetError(f"{name} needs a value")
        options[name] = value
    source, target = options.pop("--from-minari", None), options.pop("--to-minari", None)
    if (source is None) == (target is None) or len(paths) != 1:
        raise DatasetError(f"expected --from-minari SOURCE OUT or PATH --to-minari ID, got {args}")
    if source is not None:
        if options:
            raise DatasetError(f"{', '.join(options)} go with --to-minari, not --from-minari")
        store = minari_io.import_minari(source, paths[0])
        console.print(
            f"convert: {store.n_episodes:,} episodes ({store.n_transitions:,} steps) from Minari "
            f"{source} into {paths[0]} (no physics state: replay is unavailable)"
        )
        return
    dataset = minari_io.export_minari(
        paths[0],
        target,
        root=options.get("--root"),
        author=options.get("--author"),
        author_email=options.get("--author-email"),
        description=options.get("--description"),
    )
    console.print(
        f"convert: {dataset.total_episodes:,} episodes ({dataset.total_steps:,} steps) of "
        f"{paths[0]} into Minari dataset {target} ({Path(dataset.spec.data_path).parent})"
    )


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    sub, rest = args[0], args[1:]
    commands = {
        "info": (1, 1),
        "validate": (1, 1),
        "repair": (1, 1),
        "replay": (1, 2),
        "merge": (3, 1000),
        "convert": (0, 1000),  # checked by convert_command, which takes options
    }
    if sub not in commands:
        return error("data", f"unknown subcommand {sub!r}; choose one of {', '.join(commands)}")
    low, high = commands[sub]
    if any(a in ("-h", "--help") for a in rest):
        print(USAGE)
        return 0
    flags = {"validate": "--deep", "repair": "--dry-run"}
    flag = flags.get(sub) in rest
    rest = [a for a in rest if a != flags.get(sub)]
    if not low <= len(rest) <= high or (sub != "convert" and any(a.startswith("-") for a in rest)):
        expected = {
            "replay": "PATH [EPISODE]",
            "merge": "OUT SRC SRC ...",
            **{k: f"PATH [{f}]" for k, f in flags.items()},
        }.get(sub, "PATH")
        return error(f"data {sub}", f"expected {expected}, got {rest}")
    console = Console(width=max(shutil.get_terminal_size().columns, 110))
    try:
        if sub == "info":
            info(rest[0], console)
        elif sub == "validate":
            validate(rest[0], flag, console)
        elif sub == "repair":
            repair_command(rest[0], flag, console)
        elif sub == "convert":
            convert_command(rest, console)
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
        return error(f"data {sub}", str(e))
    return 0
