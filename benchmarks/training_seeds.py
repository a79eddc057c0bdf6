"""How much one trained model depends on its training seed: five seeds of one recipe on one
dataset, each planned on the task's frozen evaluation set.

A user trains one model. If the same command on the same data scores 98% with one seed and 79%
with another, the toolkit hands out a lottery ticket. This benchmark collects the task's
colored-noise dataset (about 10k steps), trains ``--seeds`` models with the same ``wmrobot
train`` overrides, plans each with MPPI (planner seeds 0, 1, 2) and prints the success per
training seed, the mean and the spread (max - min). Every stage runs the ``wmrobot`` CLI as a
user would and a finished stage is not run again, so a killed run resumes. Run::

    python benchmarks/training_seeds.py --env pointmaze_umaze [--seeds 0 1 2 3 4] \\
        [--tag default] [--train "model.hidden=128"] [--threads 1]

Results go to ``benchmarks/results/seeds/ENV/TAG``: per seed the checkpoint's ``meta.json`` and
the plan's ``results.json``, and ``summary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
from cli_runs import run, train_and_plan

HERE = Path(__file__).resolve().parent

# Each task's dataset (`wmrobot collect` arguments: colored noise, about 10k steps) and the model
# config its state recipe uses (docs/BENCHMARKS.md).
TASKS = {
    "pointmaze_umaze": ("policy=colored episodes=100 seed=0", "model=state_mlp"),
    "reacher": ("policy=colored episodes=120 seed=0", "model=reacher_state"),
    "tworoom": ("policy=colored episodes=100 seed=0", "model=state_mlp"),
}


def dataset(env: str, root: Path, threads: int) -> Path:
    data = root / "data.zarr"
    if not (root / "collect.done").exists():
        shutil.rmtree(data, ignore_errors=True)  # a part left by a killed run
        args = ["collect", f"env={env}", *TASKS[env][0].split(), f"out={data}"]
        run(args, root / "collect.log", threads)
        (root / "collect.done").touch()
    return data


def seed_row(env: str, seed: int, data: Path, work: Path, train: list[str], threads: int) -> dict:
    meta, result = train_and_plan(env, data, work / f"seed{seed}", seed,
                                  [*TASKS[env][1].split(), *train], threads)  # fmt: skip
    return {
        "env": env,
        "seed": seed,
        "transitions": meta["dataset"]["transitions"],
        "train_s": round(meta["seconds"], 1),
        "success_mean": float(np.mean(result["success"])),
        "success_std": float(np.std(result["success"], ddof=1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="pointmaze_umaze", choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--tag", default="default", help="the recipe's name (its folder)")
    parser.add_argument("--train", default="", help="extra `wmrobot train` overrides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    root = args.work or HERE / "results" / "seeds" / args.env
    work = root / args.tag
    work.mkdir(parents=True, exist_ok=True)
    data = dataset(args.env, root, args.threads)
    train = args.train.split()
    rows = [seed_row(args.env, s, data, work, train, args.threads) for s in args.seeds]
    with open(work / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    success = np.array([100 * r["success_mean"] for r in rows])
    recipe = f"{TASKS[args.env][1]} {args.train}".strip()
    print(f"{args.env} ({args.tag}: {recipe}), {rows[0]['transitions']:,} steps, "
          "MPPI on the frozen set, planner seeds 0-2")  # fmt: skip
    for r in rows:
        print(f"seed {r['seed']}: {100 * r['success_mean']:5.1f}% ± {100 * r['success_std']:.1f}"
              f"  (training {r['train_s']:.0f} s)")  # fmt: skip
    print(
        f"mean {success.mean():.1f}%, max - min {success.max() - success.min():.1f} points, "
        f"training {np.mean([r['train_s'] for r in rows]):.0f} s per model"
    )


if __name__ == "__main__":
    main()
