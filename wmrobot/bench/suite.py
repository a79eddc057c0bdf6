"""``wmrobot bench``: planners against model-free RL at equal env-step budgets.

A suite (``configs/suite/<name>.yaml``) is tasks x methods x env-step budgets x seeds. Each
combination is a *cell*, with a run directory of its own under ``<out>/cells/<id>/``: its
``config.json`` first and its ``result.json`` last, written atomically, so a cell with a result
is finished and never runs again, and a cell killed half way (no result) runs again from the
start. The world-model methods of a (task, budget, seed) share one model, built once under
``<out>/models/`` behind a file lock, whose env steps each of them counts.

Methods (a cell's env steps are everything it took from the real env, its dataset included):

- ``random``: uniform random actions (0 env steps).
- ``mppi``: Mode-2 MPPI through the cell's world model. Goal task: ``budget`` env steps of the
  task's collection policy, then ``wmrobot train``. Reward task: ``wmrobot learn`` (online,
  the planner acting) for ``budget`` env steps.
- ``mode1``: the Mode-1 actor of the same model (goal task: distilled from the planner on the
  dataset's states, no DAgger rounds, so no env steps beyond the dataset; reward task: the
  policy prior learnt beside the model).
- ``dream``: an SB3 SAC agent trained in the same model's dream (``dream_steps`` imagined
  steps), acting through the encoder.
- ``mbpo``: ``wmrobot learn learn.actor=sac`` for ``budget`` env steps (SAC on the latents
  with branched model rollouts), its agent evaluated; reward tasks only.
- ``gcbc``: goal-conditioned behaviour cloning with hindsight goals on the same dataset as the
  goal task's world model (offline; :mod:`wmrobot.rl.offline`). Goal tasks only: on a reward
  task its cells finish at once as skipped.
- ``gciql``: goal-conditioned implicit Q-learning with hindsight goals on the same dataset
  (offline; reward -1 per step until the task's own success test). Goal tasks only.
- ``sac``: SB3 SAC trained online for ``budget`` env steps (goal task: with hindsight
  relabelling, ``configs/rl/sac_her.yaml``; reward task: rl-zoo3's settings).
- ``ppo``: SB3 PPO with SB3's defaults, online for ``budget`` env steps.

Every method is scored on the task's evaluation set (a goal task's frozen start/goal pairs, a
reward task's fixed episode seeds) with its step budget. :func:`report` folds the cells into
``report.md``, ``results.csv`` and one learning-curve PNG per task.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wmrobot.bench.spec import (
    METHODS,
    MODEL_FREE,
    PEERS,
    WORLD_MODEL,
    Suite,
    TaskSpec,
    parse_cell,
)
from wmrobot.errors import ConfigError
from wmrobot.files import write_atomically

SUITE_FILE, CONFIG, RESULT = "suite.json", "config.json", "result.json"


def pin(suite: Suite, out: Path) -> None:
    """Write the suite into ``out`` before any cell runs; a folder pinned to another suite is
    refused (its cells would mix two configurations)."""
    out.mkdir(parents=True, exist_ok=True)
    path, text = out / SUITE_FILE, json.dumps(suite.record(), indent=2, sort_keys=True)
    if path.exists():
        if json.loads(path.read_text()) != json.loads(text):
            raise ConfigError(
                f"{str(out)!r} holds the cells of another suite ({path.name} differs); resume "
                f"it with the same suite, or bench into a new out="
            )
        return
    write_atomically(path, lambda f: f.write(text.encode()))


def pinned(out: Path) -> Suite:
    path = out / SUITE_FILE
    if not path.is_file():
        raise ConfigError(f"{str(out)!r} has no {SUITE_FILE}; run `wmrobot bench out={out}`")
    return Suite(**json.loads(path.read_text()))


def pending(suite: Suite, out: Path) -> list[str]:
    """The cells without a result, in the suite's order."""
    return [c for c in suite.cells() if not (out / "cells" / c / RESULT).is_file()]


# --------------------------------------------------------------------------------- a cell
@dataclass
class TaskSetup:
    """What the methods of one task need: the composed config (``demo``'s for a goal task,
    ``learn``'s for a reward task), the evaluation set and its budget."""

    config: Any
    goal: bool
    env_id: str
    env_kwargs: dict[str, Any]
    pairs: list[dict[str, Any]]
    episode_seeds: list[int] | None
    budget: int


def setup(spec: TaskSpec) -> TaskSetup:
    from wmrobot.cli_common import compose
    from wmrobot.config import validate
    from wmrobot.envs import make_env
    from wmrobot.rl.sac import is_goal_env
    from wmrobot.steps import evaluation_episodes

    ids = [o for o in spec.overrides if o.lstrip("+~").startswith("env.id=")]  # gym tasks
    probe_cfg = validate("collect", compose("collect", [f"env={spec.env}", *ids]))
    probe = make_env(probe_cfg.env.id, dict(probe_cfg.env.kwargs))
    goal = is_goal_env(probe)
    probe.close()
    if goal:
        c = validate("demo", compose("demo", [f"env={spec.env}", *spec.overrides]))
    else:
        c = validate("learn", compose("learn", [f"env={spec.env}", *spec.overrides]))
    env_id, env_kwargs = c.env.id, dict(c.env.kwargs)

    class _Task:  # what evaluation_episodes reads of a model
        task = "goal" if goal else "reward"

    pairs, episode_seeds = evaluation_episodes(c.env, _Task, env_id, env_kwargs)
    return TaskSetup(c, goal, env_id, env_kwargs, pairs, episode_seeds, c.env.eval.budget)


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def world_model(
    task: str,
    t: TaskSetup,
    budget: int,
    seed: int,
    out: Path,
    budgets: list[int],
    actor: str = "planner",
) -> tuple[Path, Path, int]:
    """The (task, budget, seed) world model, built once for every method that uses it:
    (checkpoint, dataset, env steps it cost, which every method that uses it counts).

    A goal task's: ``budget`` env steps of the task's collection policy (:func:`goal_dataset`),
    then ``wmrobot train``, each budget on its own. A reward task's: ``wmrobot learn`` online
    for ``budget`` env steps; one online run per task and seed serves every budget, resumed
    from one budget to the next (the suite's ``budgets``, in order) with its checkpoint and
    dataset copied at each, so a 30k-step model costs 30k steps of learning, not 40k.
    ``actor="sac"``: the online run acts with MBPO's SAC agent instead (reward tasks), saved
    beside the checkpoint as ``agent.zip``."""
    models, kind = out / "models", "" if actor == "planner" else f"-{actor}"
    before = 0.0  # an online run's earlier budgets: part of this model's cost
    spent = 0.0  # building here, inside the calling cell's own wall time
    with _locked(models / f"{task}-s{seed}{kind}.lock"):
        earlier = [] if t.goal else [x for x in budgets if x < budget]  # one online run
        for b in [*earlier, budget]:
            home = models / f"{task}-{b}-s{seed}{kind}"
            if not (home / "done.json").is_file():
                start = time.perf_counter()
                run = models / f"{task}-s{seed}{kind}-learn"
                _build(task, t, b, seed, home, run, budgets, actor)
                record = json.loads((home / "done.json").read_text())
                spent += time.perf_counter() - start
                record["seconds"] = round(time.perf_counter() - start + before, 1)
                text = json.dumps(record)
                write_atomically(home / "done.json", lambda f, text=text: f.write(text.encode()))
            if not t.goal:
                before = float(json.loads((home / "done.json").read_text())["seconds"])
    record = json.loads((home / "done.json").read_text())
    MODEL_SECONDS[0] = max(float(record["seconds"]) - spent, 0.0)
    return home / "checkpoint", home / "dataset.zarr", int(record["env_steps"])


def _build(
    task, t: TaskSetup, budget: int, seed: int, home: Path, run: Path, budgets, actor: str
) -> None:
    import torch

    from wmrobot.datasets import EpisodeStore
    from wmrobot.steps import model_config, train_model

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    c = t.config
    torch.set_num_threads(1)
    if t.goal:
        data, _ = goal_dataset(task, t, budget, seed, home.parent.parent)
        shutil.copytree(data, home / "dataset.zarr")
        c = dataclasses.replace(c, seed=seed)
        c.model.train.seed = seed
        train_model(c, str(home / "dataset.zarr"), home / "checkpoint", {"suite_cell": task})
    else:
        from wmrobot.learn import AGENT, RUN, learn

        # Fixed over the budgets, so that each resumes the same run: an evaluation at each
        # budget's end (learn evaluates when it stops), resumable states at the smallest.
        lc = dataclasses.replace(c.learn, steps=budget, eval_every=max(budgets),
                                 seed_steps=min(c.learn.seed_steps, min(budgets) // 2),
                                 checkpoint_every=min(budgets), actor=actor)  # fmt: skip
        learn(run, t.env_id, t.env_kwargs, model_config(c.model), c.model.train, c.planner,
              lc, seed, resume=(run / RUN).exists(), progress=False, branch=c.dream)  # fmt: skip
        shutil.copytree(run / "checkpoint", home / "checkpoint")
        if actor == "sac":
            shutil.copy(run / AGENT, home / AGENT)
        shutil.copytree(run / "dataset.zarr", home / "dataset.zarr")
    steps = EpisodeStore.open(str(home / "dataset.zarr")).n_transitions
    text = json.dumps({"env_steps": steps})
    write_atomically(home / "done.json", lambda f: f.write(text.encode()))


def goal_dataset(task: str, t: TaskSetup, budget: int, seed: int, out: Path) -> tuple[Path, int]:
    """A goal task's (budget, seed) dataset, collected once by the task's collection policy
    for every method that learns from it offline (the world models, GCBC): its path and the
    env steps it holds."""
    from wmrobot.datasets import EpisodeStore
    from wmrobot.steps import collect_dataset

    home = out / "data" / f"{task}-{budget}-s{seed}"
    with _locked(out / "data" / f"{task}-{budget}-s{seed}.lock"):
        if not (home / "done.json").is_file():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            c = dataclasses.replace(t.config, seed=seed)
            c.steps = budget  # collect stops at the first episode end past it
            collect_dataset(c, str(home / "dataset.zarr"))
            steps = EpisodeStore.open(str(home / "dataset.zarr")).n_transitions
            text = json.dumps({"env_steps": steps})
            write_atomically(home / "done.json", lambda f: f.write(text.encode()))
    return home / "dataset.zarr", int(json.loads((home / "done.json").read_text())["env_steps"])


# The last world model's build time that its cell did not spend itself (built by another cell,
# or an online run's earlier budgets): the cell adds it to its wall time.
MODEL_SECONDS = [0.0]


def run_cell(cell: str, out: Path) -> dict[str, Any]:
    """Run one cell of the suite pinned in ``out`` (nothing when it has a result); its result."""
    import torch

    from wmrobot.provenance import git_revision, versions

    suite = pinned(out)
    task, method, budget, seed = parse_cell(cell)
    if task not in suite.tasks or method not in suite.methods:
        raise ConfigError(f"cell={cell!r} is not in suite {suite.name!r}")
    home = out / "cells" / cell
    if (home / RESULT).is_file():
        return json.loads((home / RESULT).read_text())
    shutil.rmtree(home, ignore_errors=True)  # a killed run's leftovers
    home.mkdir(parents=True)
    config = {"cell": cell, "task": task, "method": method, "budget": budget, "seed": seed,
              "spec": dataclasses.asdict(suite.tasks[task]), "suite": suite.name,
              "versions": versions(), "git_revision": git_revision()}  # fmt: skip
    write_atomically(home / CONFIG, lambda f: f.write(json.dumps(config, indent=2).encode()))
    torch.set_num_threads(1)
    t = setup(suite.tasks[task])
    skip = GOAL_ONLY.get(method) if not t.goal else REWARD_ONLY.get(method)
    if skip:  # done, with nothing to report
        result = {"cell": cell, "task": task, "method": method, "budget": budget, "seed": seed,
                  "skipped": skip}  # fmt: skip
        write_atomically(home / RESULT, lambda f: f.write(json.dumps(result).encode()))
        return result
    start, MODEL_SECONDS[0] = time.perf_counter(), 0.0
    row = METHOD_RUNS[method](task, t, budget, seed, out, home, suite)
    result = {
        **{k: config[k] for k in ("cell", "task", "method", "budget", "seed")},
        "goal": t.goal,
        "label": row.method,
        "env_steps": row.env_steps,
        "success": row.success[0],
        "return": row.returns[0] if row.returns else None,
        "steps_to_success": None if np.isnan(row.steps_to_success) else row.steps_to_success,
        "latency_ms": row.latency_ms,
        # A world-model method's wall time includes its model's (built once, counted by each).
        "wall_s": round(time.perf_counter() - start + MODEL_SECONDS[0], 1),
        "episodes": row.episodes,
    }
    write_atomically(home / RESULT, lambda f: f.write(json.dumps(result, indent=1).encode()))
    return result


def _random(task, t, budget, seed, out, home, suite):
    from wmrobot.bench import evaluate_random

    return evaluate_random(t.env_id, t.env_kwargs, t.pairs, t.budget, [seed], t.episode_seeds)


def _mppi(task, t, budget, seed, out, home, suite):
    from wmrobot.bench import evaluate_planner
    from wmrobot.train import load_checkpoint

    ckpt, _, steps = world_model(task, t, budget, seed, out, suite.budgets)
    model, _ = load_checkpoint(ckpt)
    return evaluate_planner(model, t.config.planner, t.env_id, t.env_kwargs, t.pairs, t.budget,
                            [seed], env_steps=steps, episode_seeds=t.episode_seeds)  # fmt: skip


def _dream(task, t, budget, seed, out, home, suite):
    from wmrobot.bench import evaluate_dream
    from wmrobot.datasets import EpisodeStore
    from wmrobot.rl.dream import DreamConfig, dataset_latents, train_in_dream
    from wmrobot.train import load_checkpoint

    ckpt, data, steps = world_model(task, t, budget, seed, out, suite.budgets)
    model, _ = load_checkpoint(ckpt)
    starts, goals = dataset_latents(model, EpisodeStore.open(str(data)))
    reward = "critic" if t.goal and model.critic is not None else "cost"
    cfg = DreamConfig(steps=suite.dream_steps, horizon=t.budget, goal_reward=reward)
    agent, _ = train_in_dream(model, starts, goals, cfg, seed, progress=False)
    agent.save(home / "agent.zip")
    return evaluate_dream(model, {seed: agent}, cfg.label, t.env_id, t.env_kwargs, t.pairs,
                          t.budget, steps, t.episode_seeds)  # fmt: skip


def _mode1(task, t, budget, seed, out, home, suite):
    """The Mode-1 actor: on a goal task distilled from the planner on the world model's own
    dataset states (imitation, no DAgger rounds: no env steps beyond the dataset); on a reward
    task the learnt policy prior."""
    import dataclasses

    from wmrobot.bench import evaluate_actor
    from wmrobot.cli_common import compose
    from wmrobot.config import validate
    from wmrobot.datasets import EpisodeStore
    from wmrobot.distill import distill
    from wmrobot.train import load_checkpoint

    ckpt, data, steps = world_model(task, t, budget, seed, out, suite.budgets)
    model, _ = load_checkpoint(ckpt)
    if t.goal:
        actor = validate("distill", compose("distill", ["checkpoint=-"])).actor
        actor = dataclasses.replace(actor, rounds=0)
        distill(model, t.config.planner, EpisodeStore.open(str(data)), t.env_id, t.env_kwargs,
                actor, seed, say=lambda _: None)  # fmt: skip
    return evaluate_actor(model, t.env_id, t.env_kwargs, t.pairs, t.budget, steps,
                          t.episode_seeds)  # fmt: skip


def _mbpo(task, t, budget, seed, out, home, suite):
    import torch

    from wmrobot.bench import evaluate_dream
    from wmrobot.datasets.policies import load_sb3
    from wmrobot.rl.dream import DreamVecEnv
    from wmrobot.train import load_checkpoint

    ckpt, _, steps = world_model(task, t, budget, seed, out, suite.budgets, actor="sac")
    model, _ = load_checkpoint(ckpt)
    spaces = DreamVecEnv(model, torch.zeros(1, model.latent_dim), None, num_envs=1)
    agent = load_sb3(str(ckpt.parent / "agent.zip"), spaces)
    return evaluate_dream(model, {seed: agent}, "MBPO SAC", t.env_id, t.env_kwargs, t.pairs,
                          t.budget, steps, t.episode_seeds)  # fmt: skip


def _gcbc(task, t, budget, seed, out, home, suite):
    import torch

    from wmrobot.bench import _runs, summarise
    from wmrobot.datasets import EpisodeStore
    from wmrobot.rl.offline import GCBCAgent, GCBCConfig, train_gcbc

    data, steps = goal_dataset(task, t, budget, seed, out)
    policy, losses = train_gcbc(EpisodeStore.open(str(data)), GCBCConfig(), seed)
    torch.save(policy.state_dict(), home / "gcbc.pt")
    (home / "losses.json").write_text(json.dumps(losses))
    per_seed, latency = _runs({seed: GCBCAgent(policy)}, t.env_id, t.env_kwargs, t.pairs,
                              t.budget, t.episode_seeds)  # fmt: skip
    return summarise("GCBC (offline)", steps, per_seed, latency, "training")


def _gciql(task, t, budget, seed, out, home, suite):
    import torch

    from wmrobot.bench import _runs, summarise
    from wmrobot.datasets import EpisodeStore
    from wmrobot.envs import make_env
    from wmrobot.rl.offline import GCBCAgent, GCIQLConfig, train_gciql

    data, steps = goal_dataset(task, t, budget, seed, out)
    env = make_env(t.env_id, t.env_kwargs)
    policy, log = train_gciql(EpisodeStore.open(str(data)), env.unwrapped.is_success,
                              GCIQLConfig(), seed)  # fmt: skip
    env.close()
    torch.save(policy.state_dict(), home / "gciql.pt")
    (home / "losses.json").write_text(json.dumps(log))
    per_seed, latency = _runs({seed: GCBCAgent(policy)}, t.env_id, t.env_kwargs, t.pairs,
                              t.budget, t.episode_seeds)  # fmt: skip
    return summarise("GCIQL (offline)", steps, per_seed, latency, "training")


def _sb3(algo: str):
    def run(task, t, budget, seed, out, home, suite):
        from stable_baselines3 import PPO

        from wmrobot.bench import _runs, summarise
        from wmrobot.envs import make_env
        from wmrobot.rl.sac import make_sac, policy_name
        from wmrobot.rl.zoo import make_zoo_sac

        env = make_env(t.env_id, t.env_kwargs, max_episode_steps=t.budget)
        if algo == "ppo":  # rollouts that end on the budget (SB3's defaults: 2048, batch 64)
            n_steps = _divisor(budget, 2048)
            agent = PPO(policy_name(env), env, n_steps=n_steps,
                        batch_size=_divisor(n_steps, 64), seed=seed, device="cpu",
                        verbose=0)  # fmt: skip
            label = "PPO"
        elif t.goal:
            agent, label = make_sac(env, t.config.rl, budget, seed), t.config.rl.label
        else:
            agent, label = make_zoo_sac(t.env_id, seed, env), "SAC (SB3)"
        agent.learn(total_timesteps=budget)
        agent.save(home / "agent.zip")
        env.close()
        per_seed, latency = _runs({seed: agent}, t.env_id, t.env_kwargs, t.pairs, t.budget,
                                  t.episode_seeds)  # fmt: skip
        label = label if "(" in label else f"{label} (SB3)"
        # Every step it took: PPO's last rollout may run past the budget.
        return summarise(label, int(agent.num_timesteps), per_seed, latency, "training")

    return run


def _divisor(n: int, near: int) -> int:
    """The largest divisor of ``n`` in [near / 4, near], else ``min(n, near)`` (then PPO's last
    rollout runs past the budget, and the cell counts those steps too)."""
    top = min(n, near)
    return next((d for d in range(top, max(top // 4, 1) - 1, -1) if n % d == 0), top)


METHOD_RUNS = {"random": _random, "mppi": _mppi, "mode1": _mode1, "dream": _dream, "mbpo": _mbpo,
               "gcbc": _gcbc, "gciql": _gciql, "sac": _sb3("sac"), "ppo": _sb3("ppo")}  # fmt: skip
# Methods that apply to one kind of task: on the other their cells finish at once, skipped.
GOAL_ONLY = {"gcbc": "GCBC learns to reach goals: a goal task's method",
             "gciql": "GCIQL learns to reach goals: a goal task's method"}  # fmt: skip
REWARD_ONLY = {"mbpo": "MBPO's SAC learns from rewards: a reward task's method"}


# -------------------------------------------------------------------------------- report
def bootstrap_ci(values: list[float], level: float = 0.95, draws: int = 10_000) -> tuple:
    """The mean of ``values`` and its percentile-bootstrap interval (seeded: the same values
    give the same interval)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(0)
    means = x[rng.integers(0, len(x), (draws, len(x)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(lo), float(hi)


def load_results(out: Path) -> list[dict[str, Any]]:
    """The finished cells' results (cells skipped as not applying to their task left out)."""
    found = [json.loads(p.read_text()) for p in sorted((out / "cells").glob(f"*/{RESULT}"))]
    return [r for r in found if "skipped" not in r]


def _score(r: dict[str, Any]) -> float:
    return 100 * r["success"] if r["goal"] else r["return"]


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """task -> method -> budget -> {mean, lo, hi, seeds, env_steps, wall_s, latency_ms, label}."""
    grouped: dict[str, dict[str, dict[int, list]]] = {}
    for r in results:
        grouped.setdefault(r["task"], {}).setdefault(r["method"], {}).setdefault(
            r["budget"], []
        ).append(r)
    out: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for task, methods in grouped.items():
        for method, budgets in methods.items():
            for budget, rows in sorted(budgets.items()):
                mean, lo, hi = bootstrap_ci([_score(r) for r in rows])
                out.setdefault(task, {}).setdefault(method, {})[budget] = {
                    "mean": mean, "lo": lo, "hi": hi, "seeds": sorted(r["seed"] for r in rows),
                    "env_steps": int(np.mean([r["env_steps"] for r in rows])),
                    "wall_s": float(np.mean([r["wall_s"] for r in rows])),
                    "latency_ms": float(np.mean([r["latency_ms"] for r in rows])),
                    "label": rows[0]["label"], "goal": rows[0]["goal"],
                }  # fmt: skip
    return out


def steps_to_reach(methods: dict[str, dict[int, dict[str, Any]]]) -> tuple[float | None, dict]:
    """90% of the best model-free method's final score (its mean at its largest budget), and
    per method the smallest budget whose mean reaches it (None: not within the suite)."""
    finals = [
        cells[max(cells)]["mean"] for m, cells in methods.items() if m in MODEL_FREE and cells
    ]
    if not finals:
        return None, {}
    best = max(finals)
    target = 0.9 * best if best >= 0 else 1.1 * best
    reach = {m: next((cells[b]["env_steps"] for b in sorted(cells)
                      if cells[b]["mean"] >= target), None)
             for m, cells in methods.items()}  # fmt: skip
    return target, reach


def verdict(methods: dict[str, dict[int, dict[str, Any]]], reach: dict[str, int | None]) -> str:
    """One plain sentence per task: which side is ahead at the largest budget, and the sample
    efficiency (env steps to 90% of the best model-free final score) of the best of each."""

    def best(group: tuple[str, ...]) -> tuple[str, dict[str, Any]] | None:
        finals = [(m, c[max(c)]) for m, c in methods.items() if m in group and c]
        return max(finals, key=lambda x: x[1]["mean"]) if finals else None

    ours, theirs = best(WORLD_MODEL), best(MODEL_FREE)
    if ours is None or theirs is None:
        return "Verdict: needs a world-model method and a model-free one."
    (_, a), (_, b) = ours, theirs
    ahead = a["mean"] >= b["mean"]
    text = (
        f"Verdict: at its largest budget the best world-model method, {a['label']}, scores "
        f"{a['mean']:.1f} against {b['mean']:.1f} for the best model-free one, {b['label']}."
    )
    if not ahead:
        text += (
            " Model-free RL wins here. What the world model buys instead: it learns from "
            "offline data without rewards or interaction, one model serves every goal, and "
            "a new cost needs no retraining."
        )
    fast = [reach[m] for m in WORLD_MODEL if reach.get(m)]
    slow = [reach[m] for m in MODEL_FREE if reach.get(m)]
    if fast and slow:
        text += (
            f" Env steps to 90% of the best model-free final score: {min(fast):,} (world "
            f"model) against {min(slow):,} (model-free), {min(slow) / min(fast):.1f}x."
        )
    elif slow:
        text += " No world-model method reaches 90% of the best model-free final score."
    return text


def report(out: Path, suite: Suite) -> str:
    """``report.md``, ``results.csv`` and ``curves-<task>.png`` from the finished cells; the
    markdown."""
    from wmrobot.provenance import git_revision, versions

    results = load_results(out)
    table = summary(results)
    with open(out / "results.csv", "w", newline="") as f:
        keys = [k for k in (results[0] if results else {}) if k != "episodes"]
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    done, total = len(list((out / "cells").glob(f"*/{RESULT}"))), len(suite.cells())
    v = versions()
    lines = [
        f"# wmrobot bench: suite {suite.name}",
        "",
        f"{done} of {total} cells finished. Machine: {platform.machine()}, "
        f"{platform.processor() or platform.system()}, Python {platform.python_version()}; "
        f"torch {v.get('torch')}, mujoco {v.get('mujoco')}, stable-baselines3 "
        f"{v.get('stable_baselines3', v.get('stable-baselines3'))}; git {git_revision()}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Each value: mean over seeds [95% bootstrap interval] (seeds). Env steps: all a method "
        "took from the real env (a world model's dataset included).",
    ]
    for task, methods in table.items():
        goal = next(iter(next(iter(methods.values())).values()))["goal"]
        unit = "success %" if goal else "return"
        budgets = sorted({b for cells in methods.values() for b in cells})
        target, reach = steps_to_reach(methods)
        lines += ["", f"## {task} ({suite.tasks[task].env}): {unit}", ""]
        head = ["method", *[f"{b:,} steps" for b in budgets], "wall s", "latency ms"]
        if target is not None:
            head.append(f"env steps to {target:.1f}")
        lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for method in METHODS:
            if method not in methods:
                continue
            cells = methods[method]
            values = [
                f"{c['mean']:.1f} [{c['lo']:.1f}, {c['hi']:.1f}] ({len(c['seeds'])})"
                if (c := cells.get(b)) else "–"
                for b in budgets
            ]  # fmt: skip
            last = cells[max(cells)]
            row = [last["label"], *values, f"{last['wall_s']:.0f}", f"{last['latency_ms']:.2f}"]
            if target is not None:
                row.append(f"{reach[method]:,}" if reach.get(method) else f"> {max(budgets):,}")
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", verdict(methods, reach)]
        peers = PEERS.get(suite.tasks[task].env, [])
        if peers:
            shown = "; ".join(f"{name} {figure} ({how})" for name, figure, how in peers)
            lines += ["", f"Published beside ours (their versions of the task; ours above "
                          f"from the state unless the task says pixels): {shown}."]  # fmt: skip
        lines += ["", f"![{task}](curves-{task}.png)"]
        _curves(methods, out / f"curves-{task}.png", f"{task}: {unit} against env steps", unit)
    text = "\n".join(lines) + "\n"
    write_atomically(out / "report.md", lambda f: f.write(text.encode()))
    return text


def _curves(methods: dict, path: Path, title: str, unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        if method not in methods:
            continue
        cells = methods[method]
        budgets = sorted(cells)
        x = [cells[b]["env_steps"] or b for b in budgets]
        mean = [cells[b]["mean"] for b in budgets]
        ax.plot(x, mean, marker="o", label=cells[budgets[-1]]["label"])
        ax.fill_between(x, [cells[b]["lo"] for b in budgets], [cells[b]["hi"] for b in budgets],
                        alpha=0.2)  # fmt: skip
    ax.set(xlabel="env steps", ylabel=unit, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
