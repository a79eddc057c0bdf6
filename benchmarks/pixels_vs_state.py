"""State and 64x64-pixel world models trained on the same episodes, side by side: training
wall time on this machine and Mode-2 success on the task's frozen evaluation set.

Each dataset records both the state and the camera frame of every step (collected frames leave
out the goal marker, so a pixel model sees the goal only in its goal image), so the two models
differ only in what they read. Every stage runs the ``wmrobot`` CLI as a user
would; a finished stage (its output folder holds its result) is not run again, so a killed run
resumes. Run::

    python benchmarks/pixels_vs_state.py [--env pointmaze_umaze] [--seeds 0 1 2] [--threads 2]
        [--models state pixels speeds]

Results go to ``--work`` (default ``benchmarks/results/pixels/ENV``): per seed, the
checkpoints' ``meta.json`` and the plans' ``results.json``, and ``summary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
from cli_runs import run, train_and_plan

HERE = Path(__file__).resolve().parent

# The data of each task: `wmrobot collect` arguments, merged in this order (the recipes of
# docs/BENCHMARKS.md's state sections), with frames at 64 px and no goal marker.
DATA = {
    "pointmaze_umaze": [
        "policy=expert policy.noise=0.5 episodes=400 seed=1",
        "policy=colored episodes=300 seed=0",
    ],
    "reacher": [
        "policy=expert policy.noise=0.5 episodes=1200 seed=1",
        "policy=colored episodes=300 seed=0",
    ],
}
# The models: `wmrobot train` arguments beside dataset/seed/out. "speeds": the frames fused
# with the agent's own joint speeds only (model.proprio), the velocity one frame cannot show;
# the positions and the goal still come from the frames alone.
MODELS = {
    "pointmaze_umaze": {
        "state": "model=state_mlp",
        "pixels": "model=pixels_cnn",
        "speeds": "model=pixels_cnn model.encoder=fusion model.proprio=[2,3]",
    },
    "reacher": {
        "state": "model=reacher_state",
        "pixels": "model=pixels_cnn model.train.loss.cost=20",
        "speeds": "model=pixels_cnn model.train.loss.cost=20 model.encoder=fusion "
        "model.proprio=[4,5]",
    },
}


def dataset(env: str, work: Path, threads: int) -> Path:
    merged = work / "data.zarr"
    if merged.exists():
        return merged
    parts = []
    for i, recipe in enumerate(DATA[env]):
        part = work / f"part{i}.zarr"
        shutil.rmtree(part, ignore_errors=True)  # a part left by a killed run
        args = ["collect", f"env={env}", *recipe.split(), "pixels=64", f"out={part}"]
        run(args, work / f"collect{i}.log", threads)
        parts.append(str(part))
    run(["data", "merge", str(merged), *parts], work / "merge.log", threads)
    for part in parts:
        shutil.rmtree(part)
    return merged


def model_row(env: str, kind: str, seed: int, data: Path, work: Path, threads: int) -> dict:
    meta, result = train_and_plan(env, data, work / f"{kind}-seed{seed}", seed,
                                  MODELS[env][kind].split(), threads)  # fmt: skip
    return {
        "env": env,
        "model": kind,
        "seed": seed,
        "transitions": meta["dataset"]["transitions"],
        "train_s": meta["seconds"],
        "success_mean": float(np.mean(result["success"])),
        "success_std": float(np.std(result["success"], ddof=1)),
        "latency_ms": result["latency_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="pointmaze_umaze", choices=sorted(DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--models", nargs="+", default=["state", "pixels"],
                        choices=["state", "pixels", "speeds"])  # fmt: skip
    args = parser.parse_args()
    work = args.work or HERE / "results" / "pixels" / args.env
    work.mkdir(parents=True, exist_ok=True)
    data = dataset(args.env, work, args.threads)
    rows = [
        model_row(args.env, kind, seed, data, work, args.threads)
        for seed in args.seeds
        for kind in args.models
    ]
    # Rows of other models or seeds from earlier runs stay in the summary; this run's replace
    # their own.
    summary, ran = work / "summary.csv", {(r["model"], str(r["seed"])) for r in rows}
    kept = []
    if summary.exists():
        with open(summary, newline="") as f:
            kept = [r for r in csv.DictReader(f) if (r["model"], r["seed"]) not in ran]
    with open(summary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept + rows)
    print(f"{args.env}: {rows[0]['transitions']:,} steps, {args.threads} threads, "
          "Mode-2 MPPI on the frozen set, planner seeds 0-2")  # fmt: skip
    print(f"{'model':<8} {'seed':>4} {'train s':>8} {'success':>14} {'latency':>9}")
    for r in rows:
        print(f"{r['model']:<8} {r['seed']:>4} {r['train_s']:>8.0f} "
              f"{100 * r['success_mean']:>7.1f}% ± {100 * r['success_std']:.1f} "
              f"{r['latency_ms']:>7.1f}ms")  # fmt: skip
    seconds = {}
    for kind in args.models:
        mine = [r for r in rows if r["model"] == kind]
        success = 100 * np.mean([r["success_mean"] for r in mine])
        seconds[kind] = np.mean([r["train_s"] for r in mine])
        print(f"{kind}: {success:.1f}% over {len(mine)} training seed(s), "
              f"training {seconds[kind]:.0f} s")  # fmt: skip
    for kind in ("pixels", "speeds"):
        if kind in seconds and "state" in seconds:
            print(f"{kind} / state training time: {seconds[kind] / seconds['state']:.1f}x")


if __name__ == "__main__":
    main()
