"""Two writers released from one barrier onto one dataset: one writes, the other is told.

Each round copies a small PointMaze dataset, then releases two processes from one
``multiprocessing.Barrier``, each running ``wmrobot collect out=<it> episodes=<more>`` (the
CLI's own entry point, in a process forked with wmrobot already imported, so that both reach
the dataset within milliseconds; ``--subprocess`` runs the installed ``wmrobot`` instead).
After each round the dataset must validate (``EpisodeStore.open`` + ``check_contents``) with
``meta/episode_ends`` strictly increasing and the target reached, and either exactly one run
exits 0 while the other exits non-zero with one line naming the winner's pid and host, or both
exit 0 one after the other (the second finding nothing left to do; counted apart: no race).
Run:

    python benchmarks/two_writers.py [--rounds 20] [--start 20] [--episodes 150] [--subprocess]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from wmrobot.cli import main
from wmrobot.datasets import EpisodeStore, collector
from wmrobot.errors import DatasetError

ENV = "pointmaze"


def _racer(argv: list[str], barrier: Any, results: Any, log: Path, subprocess_: bool) -> None:
    """Run ``wmrobot collect argv`` once released, its stderr into ``log`` (its stdout into
    ``log.out``); report (``log``, the collecting process's pid, its exit code, the episodes
    its resuming found the dataset holding, when it opened it and when it ended, in seconds
    after the release)."""
    found: list[Any] = []
    with open(log, "w") as err, open(f"{log}.out", "w") as out:
        if subprocess_:
            wmrobot = Path(sys.executable).with_name("wmrobot")
            barrier.wait()
            run = subprocess.Popen([str(wmrobot), "collect", *argv], stdout=out, stderr=err)
            results.put((str(log), run.pid, run.wait(), None, None, None))
            return
        resumable = collector._resumable

        def seen(*args: Any) -> EpisodeStore | None:
            found.append(time.monotonic() - released)
            store = resumable(*args)
            found.append(store.n_episodes if store is not None else 0)
            return store

        collector._resumable = seen
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        barrier.wait()
        released = time.monotonic()
        try:
            code = main(["collect", *argv])
        except SystemExit as e:
            code = int(e.code or 0)
        sys.stdout.flush()
        sys.stderr.flush()
    opened, held = found if len(found) == 2 else (None, None)
    results.put((str(log), os.getpid(), code, held, opened, time.monotonic() - released))


def one_round(base: Path, work: Path, index: int, episodes: int, subprocess_: bool) -> dict:
    """Race two collections onto a copy of ``base``; what happened and whether it is sound."""
    path = work / f"round{index}.zarr"
    shutil.copytree(base, path)
    # The plain path (fast=false) steps slower than mujoco.rollout: the winner writes longer
    # than the loser takes to start, so that the two overlap.
    argv = [f"out={path}", f"env={ENV}", f"episodes={episodes}", "seed=0", "fast=false"]
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    logs = [work / f"round{index}.{i}.log" for i in range(2)]
    procs = [
        ctx.Process(target=_racer, args=(argv, barrier, results, log, subprocess_)) for log in logs
    ]
    for p in procs:
        p.start()
    ran = sorted(results.get(timeout=600) for _ in procs)  # in the order of ``logs``
    for p in procs:
        p.join()
    # What each run printed on stderr: nothing, or its one error line.
    said = [[line for line in log.read_text().splitlines() if line.strip()] for log in logs]
    row = {"round": index, "codes": sorted(code for _, _, code, *_ in ran)}
    winners = [pid for _, pid, code, *_ in ran if code == 0]
    losers = [lines for (_, _, code, *_), lines in zip(ran, said, strict=True) if code != 0]
    row["loser says"] = losers[0][-1] if losers and losers[0] else ""
    if len(winners) == 1 and len(losers) == 1:
        named = f"is being written by pid {winners[0]} on host {socket.gethostname()}"
        told = len(losers[0]) == 1 and named in losers[0][0]
        row["outcome"] = "one wrote, other told" if told else "LOSER NOT TOLD"
    elif len(winners) == 2:
        # Sound only if one run found the dataset finished by the other: nothing to do.
        if any(held == episodes for *_, held, _, _ in ran):
            row["outcome"] = "one after the other"
            (*_, first), (*_, opened, _) = sorted(ran, key=lambda r: r[3])
            row["loser says"] = (
                f"(opened it at {opened:.1f} s; the other had ended at {first:.1f} s)"
            )
        else:
            row["outcome"] = "BOTH WROTE" if not subprocess_ else "both exited 0"
    else:
        row["outcome"] = "NEITHER WROTE"
    try:
        store = EpisodeStore.open(path)  # validates: episode_ends strictly increasing, ...
        store.check_contents()
        assert np.all(np.diff(store.episode_ends) > 0)
        row["dataset"] = f"valid, {store.n_episodes} episodes"
        row["complete"] = store.n_episodes == episodes
    except DatasetError as e:
        row["dataset"], row["complete"] = f"CORRUPT: {e}", False
    shutil.rmtree(path)
    return row


def main_(rounds: int, start: int, episodes: int, subprocess_: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # the CLI writes its run folders (runs/collect/...) here
        base = work / "base.zarr"
        ctx = mp.get_context("fork")
        made = ctx.Process(
            target=main, args=(["collect", f"out={base}", f"env={ENV}", f"episodes={start}"],)
        )
        made.start()
        made.join()
        how = "wmrobot subprocesses" if subprocess_ else "wmrobot.cli.main, forked"
        print(
            f"two writers: {rounds} rounds, each resuming a {start}-episode env={ENV} dataset to "
            f"{episodes} episodes, released from one barrier ({how})"
        )
        print(f"{'round':>5}  {'exit codes':<10}  {'outcome':<22}  {'dataset':<22}  loser says")
        rows = []
        began = time.monotonic()
        for i in range(rounds):
            row = one_round(base, work, i, episodes, subprocess_)
            rows.append(row)
            says = row["loser says"]
            says = says if len(says) <= 110 else says[:107] + "..."
            print(
                f"{row['round']:>5}  {str(row['codes']):<10}  {row['outcome']:<22}  "
                f"{row['dataset']:<22}  {says}",
                flush=True,
            )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
        corrupt = sum(row["dataset"].startswith("CORRUPT") for row in rows)
        short = sum(not row["complete"] for row in rows)
        print(f"\n{'outcome':<24} rounds")
        for outcome, n in sorted(counts.items()):
            print(f"{outcome:<24} {n}")
        print(f"{'corrupt datasets':<24} {corrupt}")
        print(f"{'episodes != target':<24} {short}")
        told = [row["loser says"] for row in rows if row["outcome"] == "one wrote, other told"]
        if told:
            print(f"a loser's stderr, whole: {told[0]}")
        print(f"({time.monotonic() - began:.0f} s)")
        sound = {"one wrote, other told", "one after the other"}
        return 0 if corrupt == short == 0 and set(counts) <= sound else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--start", type=int, default=20, help="episodes in the dataset first")
    parser.add_argument("--episodes", type=int, default=150, help="episodes each run resumes to")
    parser.add_argument("--subprocess", action="store_true", help="run the wmrobot executable")
    args = parser.parse_args()
    sys.exit(main_(args.rounds, args.start, args.episodes, args.subprocess))
