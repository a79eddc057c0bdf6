"""The reward-task benchmark: learning curves of each method on the Gymnasium MuJoCo reward tasks,
at equal env-step budgets, 3 seeds each, and the report that sets them side by side.

Every env step a method takes counts (SAC's random warm-up steps included). Every ``eval_every``
env steps the method's policy runs 10 full-length episodes (the env's own time limit) reset
with the fixed seeds 10_000..10_009, acting deterministically; the mean and std of their
returns make one row of the run's learning curve,

    benchmarks/results/reward/<env_id>/<method>-seed<k>.csv
    columns env_steps,return_mean,return_std,wall_s

with a row at 0 env steps (the untrained policy) and one at the budget. ``wall_s`` is the
run's wall time so far, evaluations excluded. A run whose CSV already reaches the budget is
skipped, so the benchmark resumes across sessions; an unfinished run starts again from 0.
Runs go one at a time on one torch thread. Methods register in ``METHODS``
(``name -> callable(env_id, budget, seed, csv_path, eval_every)``).

    python benchmarks/reward_baselines.py --envs InvertedPendulum-v5 --seeds 0 1 2
    python benchmarks/reward_baselines.py --envs HalfCheetah-v5 --seeds 0 --budget 100000
    python benchmarks/reward_baselines.py --report

``--report`` runs nothing: it reads every CSV present and writes a markdown table per env
(``<out>/REPORT.md``, also printed) and the learning curves (docs/benchmarks/reward_curves.png).
"""

from __future__ import annotations

import argparse
import csv
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from wmrobot.errors import ConfigError, WmrobotError
from wmrobot.eval.rollout import Policy, evaluate
from wmrobot.rl.zoo import make_zoo_sac

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "reward"
PLOT = ROOT / "docs" / "benchmarks" / "reward_curves.png"
COLUMNS = ("env_steps", "return_mean", "return_std", "wall_s")
EVAL_SEEDS = list(range(10_000, 10_010))

# The budgets (3 seeds each) and evaluation periods per env.
BUDGETS = {"InvertedPendulum-v5": 10_000, "Reacher-v5": 20_000, "HalfCheetah-v5": 50_000}
EVAL_EVERY = {"InvertedPendulum-v5": 500, "Reacher-v5": 1_000, "HalfCheetah-v5": 5_000}
# Returns to reach: the targets; HalfCheetah has none, so two levels on SAC's way
# up (rl-zoo3's SAC scores about 9,500 after 1M steps; ours about 3,300 at 50k).
THRESHOLDS = {
    "InvertedPendulum-v5": [950.0],
    "Reacher-v5": [-5.0],
    "HalfCheetah-v5": [2000.0, 4000.0],
}
# Env steps at which the report gives the return; HalfCheetah's 100k is the one-seed run.
CHECKPOINTS = {
    "InvertedPendulum-v5": [5_000, 10_000],
    "Reacher-v5": [10_000, 20_000],
    "HalfCheetah-v5": [50_000, 100_000],
}

Method = Callable[[str, int, int, Path, int], None]


def evaluate_returns(policy: Policy, env_id: str) -> tuple[float, float]:
    """Mean and std of the return of 10 full-length deterministic episodes on the fixed seeds."""
    steps = gym.spec(env_id).max_episode_steps
    records = evaluate(policy, env_id, {}, [{}] * len(EVAL_SEEDS), steps, seeds=EVAL_SEEDS)
    returns = [r.ret for r in records]
    return float(np.mean(returns)), float(np.std(returns))


class Curve:
    """A learning-curve CSV written row by row (flushed, so a killed run keeps its rows)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerow(COLUMNS)
        self.wall = 0.0  # training wall time, evaluations excluded
        self.since = time.perf_counter()

    def add(self, env_steps: int, policy: Policy, env_id: str) -> None:
        """Evaluate ``policy`` and append its row at ``env_steps``."""
        self.wall += time.perf_counter() - self.since
        mean, std = evaluate_returns(policy, env_id)
        self.writer.writerow([env_steps, f"{mean:.3f}", f"{std:.3f}", f"{self.wall:.1f}"])
        self.file.flush()
        print(f"  {env_steps:>7,} env steps: return {mean:9.2f} ± {std:7.2f}  {self.wall:6.0f} s")
        self.since = time.perf_counter()

    def close(self) -> None:
        self.file.close()


class _EvalEvery(BaseCallback):
    """Adds a curve row every ``every`` env steps of SB3 training."""

    def __init__(self, curve: Curve, env_id: str, every: int) -> None:
        super().__init__()
        self.curve, self.env_id, self.every = curve, env_id, every

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.curve.add(self.num_timesteps, self.model, self.env_id)
        return True


def run_sac(env_id: str, budget: int, seed: int, csv_path: Path, eval_every: int) -> None:
    """SB3 SAC with rl-zoo3's settings for ``env_id``, trained online for ``budget`` env steps."""
    torch.set_num_threads(1)
    model = make_zoo_sac(env_id, seed)
    curve = Curve(csv_path)
    try:
        curve.add(0, model, env_id)
        model.learn(budget, callback=_EvalEvery(curve, env_id, eval_every))
        if budget % eval_every:
            curve.add(budget, model, env_id)
    finally:
        curve.close()


# wmrobot learn's settings per env, over configs/learn.yaml: TD-MPC2's seed data (5 episodes
# of 1000 steps on HalfCheetah); Reacher learns rewards and values two-hot (-4.6 at 20k where
# regression stays near -7: docs/BENCHMARKS.md, "Reacher: regression vs two-hot heads").
# Reacher's and HalfCheetah's rows ran before VICReg became reward_mlp's default, and keep
# their setting until they are run again with it.
LEARN_ENV = {
    "InvertedPendulum-v5": ["env=inverted_pendulum", "learn.seed_steps=1000"],
    "Reacher-v5": [
        "env=gym",
        "env.id=Reacher-v5",
        "learn.seed_steps=1000",
        "model.reward_loss=twohot",
        "model.train.anticollapse=none",
    ],
    "HalfCheetah-v5": [
        "env=gym",
        "env.id=HalfCheetah-v5",
        "learn.seed_steps=5000",
        "model.train.anticollapse=none",
    ],
}


def run_wmrobot(
    env_id: str, budget: int, seed: int, csv_path: Path, eval_every: int, extra: tuple = ()
) -> None:
    """``wmrobot learn`` for ``budget`` env steps (its random seed data included) in the run
    folder beside the CSV (``<method>-seed<k>/``, not kept in git), resumed if it is there;
    its curve (evaluations on the same fixed seeds) becomes the CSV. ``extra``: overrides of
    the method (``mbpo``: SAC on the latents with branched model rollouts)."""
    from wmrobot.cli_common import compose
    from wmrobot.config import validate
    from wmrobot.learn import RUN, learn
    from wmrobot.steps import model_config as _model_config

    torch.set_num_threads(1)
    run = csv_path.with_suffix("")
    overrides = list(LEARN_ENV.get(env_id, ["env=gym", f"env.id={env_id}"]))
    overrides += [f"learn.steps={budget}", f"learn.eval_every={eval_every}", f"seed={seed}"]
    overrides += [f"learn.eval_seed={EVAL_SEEDS[0]}", f"learn.eval_episodes={len(EVAL_SEEDS)}"]
    c = validate("learn", compose("learn", [*overrides, *extra]))
    learner = learn(run, env_id, dict(c.env.kwargs), _model_config(c.model), c.model.train,
                    c.planner, c.learn, seed, resume=(run / RUN).exists(),
                    branch=c.dream)  # fmt: skip
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(learner.p.curve)


METHODS: dict[str, Method] = {
    "sac": run_sac,
    "wmrobot": run_wmrobot,
    "mbpo": functools.partial(run_wmrobot, extra=("learn.actor=sac",)),
}


def read_curve(path: Path) -> np.ndarray:
    """A curve CSV as an array of rows (``COLUMNS``); an empty array for a file without rows."""
    with path.open(newline="") as f:
        rows = [[float(row[c]) for c in COLUMNS] for row in csv.DictReader(f)]
    return np.array(rows).reshape(-1, len(COLUMNS))


def finished(path: Path, budget: int) -> bool:
    """Whether the run at ``path`` reached ``budget`` env steps (an absent file has not)."""
    if not path.exists():
        return False
    curve = read_curve(path)
    return len(curve) > 0 and curve[-1, 0] >= budget


def run_all(
    envs: list[str],
    seeds: list[int],
    methods: list[str],
    out: Path,
    budget: int | None = None,
    eval_every: int | None = None,
    registry: dict[str, Method] = METHODS,
) -> list[Path]:
    """Run each (env, method, seed) not yet finished, one after the other; the CSVs it wrote."""
    for name in methods:
        if name not in registry:
            raise ConfigError(f"unknown method {name!r}; choose from {sorted(registry)}")
    for env_id in envs:
        if budget is None and env_id not in BUDGETS:
            raise ConfigError(f"no default budget for {env_id!r}: pass --budget")
    written = []
    for env_id in envs:
        steps = budget or BUDGETS[env_id]
        every = eval_every or EVAL_EVERY.get(env_id, max(1, steps // 10))
        for name in methods:
            for seed in seeds:
                path = out / env_id / f"{name}-seed{seed}.csv"
                if finished(path, steps):
                    print(f"{env_id} {name} seed {seed}: done ({path.name} reaches {steps:,})")
                    continue
                print(f"{env_id} {name} seed {seed}: {steps:,} env steps, eval every {every:,}")
                registry[name](env_id, steps, seed, path, every)
                written.append(path)
    return written


def load_curves(out: Path) -> dict[str, dict[str, dict[int, np.ndarray]]]:
    """Every curve under ``out``: env id -> method -> seed -> rows."""
    curves: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    for path in sorted(out.glob("*/*-seed*.csv")):
        method, seed = path.stem.rsplit("-seed", 1)
        curve = read_curve(path)
        if len(curve):
            curves.setdefault(path.parent.name, {}).setdefault(method, {})[int(seed)] = curve
    return curves


def value_at(curve: np.ndarray, steps: int, column: int = 1) -> float | None:
    """The curve's ``column`` at exactly ``steps`` env steps, or None if it has no such row."""
    hit = curve[curve[:, 0] == steps]
    return float(hit[0, column]) if len(hit) else None


def steps_to(curve: np.ndarray, threshold: float, horizon: float = np.inf) -> int | None:
    """The first evaluated env steps at which the mean return reached ``threshold`` within
    ``horizon`` env steps, or None."""
    hit = curve[(curve[:, 1] >= threshold) & (curve[:, 0] <= horizon)]
    return int(hit[0, 0]) if len(hit) else None


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    spread = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f} ({len(values)})"


def env_table(env_id: str, methods: dict[str, dict[int, np.ndarray]]) -> str:
    """The markdown table of one env: per method, the return at each checkpoint and the env
    steps to reach each threshold within the env's budget (mean over the seeds that did)."""
    horizon = BUDGETS.get(env_id, np.inf)
    checkpoints = CHECKPOINTS.get(env_id) or sorted(
        {int(c[-1, 0]) for runs in methods.values() for c in runs.values()}
    )
    thresholds = THRESHOLDS.get(env_id, [])
    within = f" within {horizon:,}" if np.isfinite(horizon) else ""
    head = ["method", "seeds"]
    head += [f"return at {c:,}" for c in checkpoints]
    head += [f"steps to {t:g}{within}" for t in thresholds]
    head += [f"wall s at {horizon:,}" if np.isfinite(horizon) else "wall s (last row)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, runs in sorted(methods.items()):
        # A run stopped short of the budget (unfinished) shows where it stops.
        seeds = [
            f"{s} (to {int(runs[s][-1, 0]):,})" if runs[s][-1, 0] < horizon else str(s)
            for s in sorted(runs)
        ]
        cells = [method, " ".join(seeds)]
        for c in checkpoints:
            cells.append(_mean_std([v for r in runs.values() if (v := value_at(r, c)) is not None]))
        for t in thresholds:
            reached = [s for r in runs.values() if (s := steps_to(r, t, horizon)) is not None]
            mean = f"{statistics.mean(reached):,.0f}" if reached else "–"
            cells.append(f"{mean} ({len(reached)}/{len(runs)} reached)")
        walls = [
            value_at(r, horizon, 3) if np.isfinite(horizon) else r[-1, 3] for r in runs.values()
        ]
        cells.append(_mean_std([float(w) for w in walls if w is not None]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(out: Path) -> str:
    """The markdown report of every curve under ``out``: one table per env."""
    curves = load_curves(out)
    if not curves:
        raise ConfigError(f"no learning-curve CSVs under {out}: run the benchmark first")
    parts = [
        "Return: mean ± std over seeds (number of seeds with that row) of each seed's mean "
        f"return over {len(EVAL_SEEDS)} deterministic episodes on seeds "
        f"{EVAL_SEEDS[0]}..{EVAL_SEEDS[-1]}. Steps to a return: the first evaluation at or "
        "above it, mean over the seeds that reached it."
    ]
    for env_id in sorted(curves):
        parts += [f"### {env_id}", env_table(env_id, curves[env_id])]
    return "\n\n".join(parts) + "\n"


def plot(out: Path, path: Path) -> None:
    """Learning curves per env: per method the mean over seeds and the min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = load_curves(out)
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, env_id in zip(axes[0], sorted(curves), strict=True):
        for method, runs in sorted(curves[env_id].items()):
            steps = sorted({int(s) for r in runs.values() for s in r[:, 0]})
            values = [
                [v for r in runs.values() if (v := value_at(r, s)) is not None] for s in steps
            ]
            mean = [np.mean(v) for v in values]
            line = ax.plot(steps, mean, label=f"{method} ({len(runs)} seeds)")[0]
            ax.fill_between(
                steps,
                [min(v) for v in values],
                [max(v) for v in values],
                color=line.get_color(),
                alpha=0.2,
            )
        for t in THRESHOLDS.get(env_id, []):
            ax.axhline(t, color="grey", lw=0.8, ls="--")
        ax.set(title=env_id, xlabel="env steps", ylabel="return (10 episodes)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(BUDGETS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["sac"], help=f"of {sorted(METHODS)}")
    parser.add_argument("--budget", type=int, default=None, help="env steps (default per env)")
    parser.add_argument("--eval-every", type=int, default=None, help="default per env")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plot", type=Path, default=PLOT, help="the report's PNG")
    parser.add_argument("--report", action="store_true", help="only report the CSVs present")
    args = parser.parse_args(argv)
    try:
        if args.report:
            text = report(args.out)
            (args.out / "REPORT.md").write_text(text)
            plot(args.out, args.plot)
            print(text + f"\nwritten: {args.out / 'REPORT.md'}, {args.plot}")
        else:
            run_all(args.envs, args.seeds, args.methods, args.out, args.budget, args.eval_every)
    except WmrobotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
