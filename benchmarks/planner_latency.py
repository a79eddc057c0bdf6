"""Decision latency of the planners on the Numba and torch CPU backends, measured side by side.

For each planner (MPPI, CEM, iCEM) at the default budget of ``configs/planner/<name>.yaml``
(H=20, 128 samples, 4 iterations, 16 elites) and at TD-MPC2's sample budget (512 samples,
6 iterations, 64 elites, same horizon), with 1 and 2 CPU threads, it times single decisions
(one problem, B=1, as an agent acting in one environment) of both backends in alternation,
so a busy machine slows both alike, and prints the median (p25-p75) of each and the torch /
numba ratio (> 1: Numba faster), then whether the goals are met: >= 1.5 at the default budget,
and a default-budget Numba decision within 10 ms on one core (the slowest planner's median),
with the load average at the start and the end of the run. The world model is the default
``configs/model/state_mlp.yaml`` at PointMaze's sizes, untrained: latency does not depend on
the weights. Run:

    python benchmarks/planner_latency.py [--quick] [--repeats 15] [--budget 8] [--seed 0]

The Numba JIT compile (or load from Numba's on-disk cache) is timed once and printed first. A
cell stops after ``--budget`` seconds (3 decisions at least), as torch on 2 threads can take
seconds per decision on a busy 2-core machine.

``--task reward`` times instead the planner of ``wmrobot learn`` (the planner block of
``configs/learn.yaml``: MPPI, H=3, 256 samples, 4 iterations, 32 elites, 24 policy-prior
sequences) on ``configs/model/reward_mlp.yaml`` at the sizes of the issue's reward envs
(InvertedPendulum-v5 with a continuation head, as it terminates; Reacher-v5; HalfCheetah-v5),
on one thread as learn runs, for B=1 (the online loop's one env) and B=10 (its evaluation's
episodes in lock-step); ``--hidden`` overrides the model's and heads' widths:

    python benchmarks/planner_latency.py --task reward [--quick] [--hidden 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.planners import TORCH_PLANNERS, PlannerConfig, as_config
from wmrobot.planners.numba import make_numba_planner

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# TD-MPC2's planning budget (Hansen et al. 2024: 512 samples, 6 iterations, 64 elites).
BUDGETS = {"default": {}, "tdmpc2": {"samples": 512, "iterations": 6, "elites": 64}}
OBS_DIM, ACTION_DIM = 4, 2  # PointMaze-v0
# The reward envs of issue 22: observation and action sizes, and whether episodes terminate.
REWARD_ENVS = {
    "InvertedPendulum-v5": (4, 1, True),
    "Reacher-v5": (10, 2, False),
    "HalfCheetah-v5": (17, 6, False),
}
BATCHES = (1, 10)  # the online loop's one env; its evaluation's 10 episodes in lock-step


def world_model(
    seed: int, config: str = "state_mlp", obs_dim: int = OBS_DIM, action_dim: int = ACTION_DIM,
    **changes,
) -> WorldModel:  # fmt: skip
    """The model of configs/model/<config>.yaml (the default state model) at an env's sizes
    (PointMaze's), ``changes`` replacing its fields."""
    values = yaml.safe_load((CONFIGS / "model" / f"{config}.yaml").read_text())
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    torch.manual_seed(seed)
    values = {k: v for k, v in values.items() if k in names}
    if values.get("task") == "auto":  # what a dataset decides: here, a goal task's model
        values["task"] = "goal"
    cfg = ModelConfig(**{**values, **changes})
    return WorldModel(obs_dim, action_dim, cfg).eval()


def planner_config(name: str, budget: str) -> PlannerConfig:
    values = yaml.safe_load((CONFIGS / "planner" / f"{name}.yaml").read_text())
    return as_config({**values, **BUDGETS[budget]})


def learn_planner_config() -> PlannerConfig:
    """The planner of ``wmrobot learn``: configs/learn.yaml's planner block (if any) over the
    defaults of the planner it names."""
    learn = yaml.safe_load((CONFIGS / "learn.yaml").read_text())
    (name,) = (d["planner"] for d in learn["defaults"] if isinstance(d, dict) and "planner" in d)
    values = yaml.safe_load((CONFIGS / "planner" / f"{name}.yaml").read_text())
    return as_config({**values, **learn.get("planner", {})})


def time_pair(
    planners: dict, z0: torch.Tensor, goal: torch.Tensor, repeats: int, budget_s: float
) -> dict:
    """Seconds per decision of each planner, alternating which goes first each repeat; stops
    early (after 3 repeats at least) once ``budget_s`` is spent."""
    times: dict[str, list[float]] = {name: [] for name in planners}
    names = list(planners)
    for name in names:
        planners[name].plan(z0, goal)  # warm-up
    start_all = time.perf_counter()
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            planners[name].plan(z0, goal)
            times[name].append(time.perf_counter() - start)
        if rep >= 2 and time.perf_counter() - start_all > budget_s:
            break
    return {name: np.array(t) for name, t in times.items()}


def fmt(t: np.ndarray) -> str:
    p25, p50, p75 = np.percentile(1e3 * t, [25, 50, 75])
    return f"{p50:7.2f} ({p25:.2f}-{p75:.2f})"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: MPPI, 1 thread, 3 reps")
    parser.add_argument("--repeats", type=int, default=15, help="decisions per cell and backend")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=8.0, help="seconds per cell at most")
    parser.add_argument("--task", choices=["goal", "reward"], default="goal")
    parser.add_argument("--hidden", type=int, help="reward task: model and head widths")
    args = parser.parse_args(argv)
    if args.task == "reward":
        return reward_latency(args)
    names = ["mppi"] if args.quick else ["mppi", "cem", "icem"]
    budgets = ["default"] if args.quick else list(BUDGETS)
    threads = [1] if args.quick else [1, 2]
    repeats = 3 if args.quick else args.repeats

    model = world_model(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    z0, goal = (
        torch.randn(1, model.latent_dim, generator=gen),
        torch.randn(1, model.latent_dim, generator=gen),
    )
    print(f"load average (1, 5, 15 min) at the start: {_load()}")
    torch.set_num_threads(1)
    start = time.perf_counter()
    make_numba_planner(model, planner_config("mppi", "default"), args.seed).plan(z0, goal)
    elapsed = time.perf_counter() - start
    print(f"numba export + JIT compile (or cache load) + first decision: {elapsed:.1f} s")
    print(f"decision latency, ms: median (p25-p75) of n decisions, B=1, {ACTION_DIM}-D actions")
    print(
        f"{'planner':8} {'budget':8} {'threads':>7} {'n':>3} {'torch':>24} {'numba':>24} "
        f"{'torch/numba':>11}"
    )
    rows = {}
    for name in names:
        for budget in budgets:
            cfg = planner_config(name, budget)
            reps = repeats if budget == "default" else max(3, repeats // 2)
            for n_threads in threads:
                torch.set_num_threads(n_threads)  # the Numba planner follows torch's count
                planners = {
                    "torch": TORCH_PLANNERS[name](model, cfg, args.seed),
                    "numba": make_numba_planner(model, cfg, args.seed),
                }
                t = time_pair(planners, z0, goal, reps, args.budget)
                ratio = np.median(t["torch"]) / np.median(t["numba"])
                rows[name, budget, n_threads] = {k: float(np.median(v)) for k, v in t.items()}
                rows[name, budget, n_threads]["numba_best"] = float(np.min(t["numba"]))
                print(
                    f"{name:8} {budget:8} {n_threads:>7} {len(t['numba']):>3} "
                    f"{fmt(t['torch']):>24} {fmt(t['numba']):>24} {ratio:>11.2f}"
                )
    for (name, budget, n_threads), row in rows.items():
        if row["numba"] >= row["torch"]:
            print(
                f"numba is slower for {name} at {budget} with {n_threads} thread(s): "
                f"backend=auto keeps torch there"
            )
    default = {key: row for key, row in rows.items() if key[1] == "default"}
    ratios = [row["torch"] / row["numba"] for row in default.values()]
    one_core = [1e3 * row["numba"] for key, row in default.items() if key[2] == 1]
    best = min(1e3 * row["numba_best"] for key, row in default.items() if key[2] == 1)
    print(
        f"default budget: torch/numba {min(ratios):.2f}-{max(ratios):.2f} (goal >= 1.5: "
        f"{_met(min(ratios) >= 1.5)}); numba on 1 thread: medians {min(one_core):.1f}-"
        f"{max(one_core):.1f} ms, fastest decision {best:.1f} ms (10 ms goal on one core, "
        f"every planner's median: {_met(max(one_core) <= 10)})"
    )
    print(f"load average (1, 5, 15 min) at the end: {_load()}")
    return rows


def reward_latency(args: argparse.Namespace) -> dict:
    """``--task reward``: torch and Numba decisions of learn's planner on the reward model at
    each env's sizes, B=1 and B=10, one thread; returns {(env, B): {backend: median s}}."""
    cfg = learn_planner_config()
    envs = list(REWARD_ENVS)[:1] if args.quick else list(REWARD_ENVS)
    batches = BATCHES[:1] if args.quick else BATCHES
    repeats = 3 if args.quick else args.repeats
    widths = {} if args.hidden is None else {"hidden": args.hidden, "head_hidden": args.hidden}
    print(f"load average (1, 5, 15 min) at the start: {_load()}")
    torch.set_num_threads(1)  # configs/learn.yaml: threads: 1 (the Numba planner follows)
    print(
        f"{cfg.name}: horizon {cfg.horizon}, {cfg.samples} samples, {cfg.iterations} iterations, "
        f"{cfg.elites} elites, {cfg.policy_samples} policy samples; reward_mlp, hidden and "
        f"head_hidden {args.hidden or 'as configured'}; 1 thread"
    )
    print("decision latency, ms: median (p25-p75) of n decisions")
    print(f"{'env':20} {'A':>2} {'B':>3} {'n':>3} {'torch':>24} {'numba':>24} {'torch/numba':>11}")
    rows = {}
    for env in envs:
        obs_dim, action_dim, terminates = REWARD_ENVS[env]
        model = world_model(  # reward_scale: a dataset's, set when a model is built for it
            args.seed, "reward_mlp", obs_dim, action_dim, continuation=terminates,
            reward_scale=1.0, **widths,
        )  # fmt: skip
        for batch in batches:
            gen = torch.Generator().manual_seed(args.seed)
            z0 = torch.randn(batch, model.latent_dim, generator=gen)
            start = time.perf_counter()
            fast = make_numba_planner(model, cfg, args.seed)
            fast.plan(z0, torch.zeros_like(z0))
            setup = time.perf_counter() - start
            planners = {"torch": TORCH_PLANNERS[cfg.name](model, cfg, args.seed), "numba": fast}
            reps = repeats if batch == 1 else max(3, repeats // 2)
            t = time_pair(planners, z0, torch.zeros_like(z0), reps, args.budget)
            rows[env, batch] = {k: float(np.median(v)) for k, v in t.items()}
            ratio = rows[env, batch]["torch"] / rows[env, batch]["numba"]
            print(
                f"{env:20} {action_dim:>2} {batch:>3} {len(t['numba']):>3} "
                f"{fmt(t['torch']):>24} {fmt(t['numba']):>24} {ratio:>11.2f}   (numba export, "
                f"JIT or cache load, first decision: {setup:.1f} s)"
            )
    for batch in batches:
        ratios = [row["torch"] / row["numba"] for (_, b), row in rows.items() if b == batch]
        print(f"B={batch}: torch/numba {min(ratios):.2f}-{max(ratios):.2f} (> 1: numba faster)")
    print(f"load average (1, 5, 15 min) at the end: {_load()}")
    return rows


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _load() -> str:
    """The machine's load averages: the timings are only comparable at a similar load."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
