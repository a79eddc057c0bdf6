"""The ``wmrobot`` command: one dispatcher; collect, train, plan, distill, demo as Hydra apps."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wmrobot import data_cli, envs_cli, eval_cli
from wmrobot.cli_common import (
    check_same_task,
    compose,
    error,
    group_options,
    run_app,
)
from wmrobot.steps import collect_dataset as _collect
from wmrobot.steps import evaluation_episodes as _episodes
from wmrobot.steps import model_config as _model_config
from wmrobot.steps import train_model as _train

log = logging.getLogger("wmrobot")

USAGE = """usage: wmrobot <command> [key=value ...] [--help]

Latent (JEPA) world models for MuJoCo robots, on a CPU.

commands:
  collect   collect episodes from a MuJoCo task into a Zarr dataset
  train     train a JEPA world model on a dataset; writes a checkpoint directory
  plan      run Mode-2 MPC (cem, icem, mppi, grad), the Mode-1 actor or the hybrid with a
            checkpoint in the real env on the fixed evaluation set
  distill   train a Mode-1 actor head from a checkpoint's planner (imitation, then DAgger)
  dream     train SB3 agents (sac, td3, ppo) inside a checkpoint's world model, then
            evaluate them in the real env beside its planner
  demo      collect -> train -> plan, plus random and SAC+HER baselines, in one table
  bench     planners vs model-free RL at equal env-step budgets: a suite of tasks x methods x
            budgets x seeds, one resumable cell each (parallel), report.md and curves
  data      info | validate | replay | merge | convert: look into, check, re-simulate,
            merge or convert (to and from Minari) datasets
  envs      list | show | evalsets: the task suite, frames under factor settings, the
            frozen evaluation sets and their experts' success
  eval      model: audit a checkpoint on a dataset: latent prediction error against the
            horizon, linear-probe R² of positions and velocities, collapse metrics

Options are Hydra overrides (key=value, group=option); -m sweeps them (key=a,b), with
hydra/launcher=joblib in parallel. `wmrobot <command> --help` lists a command's options with
their current values. Each run writes runs/<command>/<timestamp>/, a sweep
runs/<command>/multirun/<timestamp>/<job>/.
"""

DESCRIPTIONS = {
    "collect": "Collect episodes from a MuJoCo task into a crash-safe Zarr v3 dataset.\n"
    "Re-running with the same out= resumes up to the target.\n"
    "example: wmrobot collect env=pointmaze policy=random episodes=200 out=data/maze.zarr",
    "train": "Train a JEPA world model (encoder + EMA target, predictor, cost head).\n"
    "Writes model.pt (weights only), meta.json and metrics.csv into the checkpoint directory.\n"
    "example: wmrobot train dataset=data/maze.zarr model.train.steps=5000",
    "plan": "Evaluate Mode-2 MPC (planner=cem|icem|mppi|grad), the Mode-1 actor (agent.mode=1)\n"
    "or the actor-seeded planner (agent.mode=hybrid), and the random floor, in the real env\n"
    "on the fixed, seeded start/goal set with a fixed step budget; the planner never\n"
    "touches the simulator.\n"
    "example: wmrobot plan checkpoint=runs/train/<ts>/checkpoint planner.samples=256",
    "distill": "Distil the Mode-2 planner into a Mode-1 actor head: imitate the planner's\n"
    "actions on dataset states, then DAgger rounds (the actor acts from random starts, the\n"
    "planner labels what it visits). Writes a new checkpoint with the actor.\n"
    "example: wmrobot distill checkpoint=runs/train/<ts>/checkpoint actor.rounds=4",
    "learn": "The online loop on a reward task: random seed episodes, then act with the\n"
    "planner (plus exploration noise), append every episode to out/dataset.zarr, update the\n"
    "world model, evaluate on fixed seeds; writes curve.csv/png and checkpoint/.\n"
    "kill it at any moment: resume=true continues from the last committed episode.\n"
    "example: wmrobot learn env=gym env.id=InvertedPendulum-v5 learn.steps=10000 out=runs/ip",
    "dream": "Train stable-baselines3 agents inside the world model: imagined episodes from\n"
    "the dataset's states (and hindsight goals), rewards from the model's heads, no real env\n"
    "steps; then evaluate them in the real env through the encoder, beside the random floor\n"
    "and the checkpoint's Mode-2 planner. Saves each agent (SB3 .zip) under agents/.\n"
    "example: wmrobot dream checkpoint=runs/train/<ts>/checkpoint env=pointmaze_umaze",
    "demo": "Run the whole path on defaults: collect, train, plan, and SAC+HER trained online\n"
    "with as many env steps as the dataset holds; prints one table, writes plots and a GIF.\n"
    "example: wmrobot demo episodes=50 rl_seeds=[0]",
    "bench": "Planners against model-free RL at equal env-step budgets: every cell of a suite\n"
    "(tasks x methods x budgets x seeds) in its own run directory, through Hydra's launcher;\n"
    "finished cells are kept, so the same command resumes. Writes report.md, results.csv and\n"
    "a learning-curve PNG per task.\n"
    "example: wmrobot bench suite=small workers=2 out=runs/bench/small",
    "cell": "One cell of a bench, TASK-METHOD-BUDGET-sSEED of the suite pinned in out/.\n"
    "example: wmrobot cell out=runs/bench/small cell=umaze-mppi-10000-s0",
}

# What an option means for one command where it differs from OPTION_HELP's general line.
COMMAND_HELP = {
    "bench": {
        "workers": "cells run at a time (joblib processes)",
        "launcher": "Hydra launcher of the cells: joblib | basic | submitit_slurm (a cluster)",
        "report_only": "write report.md from the finished cells, run nothing",
        "out": "the bench folder (default runs/bench/<suite name>); the same out= resumes it",
        "suite.budgets": "env-step budgets, pinned before any run (datasets count in them)",
        "suite.methods": "of random, mppi, mode1, dream, mbpo, gcbc, gciql, sac, ppo",
        "suite.dream_steps": "imagined steps of each dream agent (no env steps)",
    },
    "cell": {"out": "the bench folder holding suite.json", "cell": "TASK-METHOD-BUDGET-sSEED"},
}

# One line for the options a user reaches for first; every other key is listed without one.
OPTION_HELP = {
    "env": "task config group",
    "env.id": "gymnasium env id",
    "env.kwargs.layout": "maze layout: ring, open or umaze",
    "env.eval.pairs": "number of fixed start/goal pairs in the evaluation set",
    "env.eval.seed": "seed that draws the evaluation set",
    "env.eval.budget": "environment steps allowed per evaluation episode",
    "env.eval.max_distance": "keep only pairs this close (an easy set); null = all",
    "env.eval.file": "a frozen evaluation set (wmrobot envs evalsets); its pairs and budget win",
    "policy": "collection policy group",
    "policy.name": "random | expert (the task's scripted expert) | sb3 (a saved SB3 model)",
    "policy.beta": "noise exponent: 0 white (uniform), 1 pink, 2 red (smoother, faster motion)",
    "policy.epsilon": "probability of a random action (of exponent beta) at each step "
    "(random, colored: no change)",
    "policy.noise": "Gaussian noise added to the expert's actions (std, action units)",
    "policy.path": "policy=sb3: the model saved by stable-baselines3 (.zip)",
    "policy.deterministic": "policy=sb3: act with the mean action (else sample)",
    "episodes": "number of episodes to collect (a target: a resumed run tops up to it)",
    "steps": "a target in transitions instead of episodes (whole episodes, resumable)",
    "seed": "run seed (collection, training)",
    "workers": "processes stepping envs, or rollout threads (the dataset is the same for any)",
    "pixels": "image size N: also store N x N camera frames (data/pixels, uint8)",
    "fast": "acceleration layer: mujoco.rollout, direct chunk writes (false: the plain path)",
    "flush_every": "episodes per commit (a crash loses at most this many); null: every ~2 s",
    "out": "output path (default: inside runs/<command>/<timestamp>/); a folder must be new or "
    "empty (train resume=true: its own run)",
    "dataset": "a Zarr dataset made by `wmrobot collect` (distill: null = the checkpoint's)",
    "threads": "torch CPU threads",
    "model": "model config group (state_mlp, pixels_cnn, reacher_state)",
    "model.latent_dim": "latent size D",
    "model.train.steps": "optimisation steps",
    "model.train.batch_size": "windows per batch",
    "model.train.horizon": "prediction steps K per window (multi-step loss)",
    "model.train.checkpoint_every": "steps between resumable training states (train_state.pt)",
    "resume": "continue out='s run (train_state.pt, learn_state.pt) as if it never stopped; "
    "learn needs only out=, and a larger learn.steps extends a finished run",
    "model.latent_weight": "planning cost weight of the latent distance to the goal",
    "model.cost_weight": "planning cost weight of the cost head",
    "checkpoint": "checkpoint directory made by `wmrobot train` (required)",
    "planner": "planner config group: mppi",
    "planner.horizon": "planning horizon H (steps)",
    "planner.samples": "action sequences sampled per iteration",
    "planner.iterations": "optimisation iterations per decision",
    "planner.name": "cem | icem | mppi | grad (set by the planner= group)",
    "planner.backend": "auto (measured at start-up) | torch | numba",
    "planner.value_weight": "weight of the critic's cost-to-go at the horizon's end (0: off)",
    "planner.smooth_weight": "cost on squared differences of consecutive actions",
    "planner.replan_every": "actions executed from each plan before planning again",
    "agent.mode": "1: Mode-1 actor (from `wmrobot distill`), 2: planner, hybrid: actor-seeded",
    "actor.states": "dataset states the planner labels for the actor to imitate",
    "actor.rounds": "DAgger rounds (the actor acts, the planner labels its states)",
    "actor.episodes": "actor episodes per DAgger round (random starts/goals, not the eval set)",
    "seeds": "planner seeds; success is reported as mean and std over them",
    "rl_seeds": "model-free (SB3) training seeds, trained in parallel, one per core",
    "baseline": "also evaluate the random policy",
    "video": "write a GIF of one MPC episode",
    "rl": "model-free baseline group: sac_her (goal tasks) or sac",
}


def command_help(command: str, cfg: Any) -> str:
    """The command's description and every option with its current value."""
    lines = [f"usage: wmrobot {command} [key=value ...]", "", DESCRIPTIONS[command], ""]
    groups = [g for g in ("env", "policy", "model", "planner", "rl") if g in cfg]
    if groups:
        lines.append("config groups (choose with group=option):")
        for g in groups:
            lines.append(f"  {g:<28} {OPTION_HELP.get(g, '')}; one of {group_options(g)}")
        lines.append("")
    lines.append("options (current value; add a key that is not listed with +key=value):")

    def walk(node: Any, prefix: str) -> None:
        for key in node:
            path = f"{prefix}{key}"
            if OmegaConf.is_missing(node, key):
                lines.append(f"  {path + '=???':<34} (required) {OPTION_HELP.get(path, '')}")
                continue
            value = OmegaConf.select(node, key)
            if OmegaConf.is_dict(value):
                walk(value, path + ".")
                continue
            shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            entry = f"{path}={json.dumps(shown)}"
            said = COMMAND_HELP.get(command, {}).get(path, OPTION_HELP.get(path, ""))
            lines.append(f"  {entry:<34} {said}".rstrip())

    raw = OmegaConf.to_container(cfg, resolve=False)
    walk(OmegaConf.create(raw), "")
    return "\n".join(lines)


def _provenance(meta: dict[str, Any], pairs: list[dict[str, Any]], config: Any) -> dict:
    from wmrobot.provenance import git_revision, versions

    return {
        "config": OmegaConf.to_container(OmegaConf.structured(config)),
        "checkpoint": {k: meta.get(k) for k in ("dataset", "env", "steps", "seed", "created")},
        "evaluation_set": pairs,
        "versions": versions(),
        "git_revision": git_revision(),
    }


# ------------------------------------------------------------------------------------ commands
def run_collect(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot collect``: a dataset at ``out`` (default: ``dataset.zarr`` in the run dir)."""
    from wmrobot.config import validate

    c = validate("collect", cfg)
    _collect(c, c.out or str(run_dir / "dataset.zarr"))


def run_train(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot train``: a checkpoint at ``out`` (default: ``checkpoint`` in the run dir)."""
    import torch

    from wmrobot.config import validate
    from wmrobot.datasets import EpisodeStore

    c, config_record = validate("train", cfg), OmegaConf.to_container(cfg, resolve=True)
    EpisodeStore.open(c.dataset)  # a clear error before anything is built
    torch.set_num_threads(c.threads)
    _train(c, c.dataset, Path(c.out) if c.out else run_dir / "checkpoint", config_record)


def _evaluate(c: Any, model: Any, env_id: str, env_kwargs: dict, env_steps: int, run_dir: Path):
    """Random floor (if asked) and Mode-2 MPC on the evaluation set, plus a GIF (plan, demo)."""
    from wmrobot.bench import evaluate_actor, evaluate_planner, evaluate_random

    pairs, episode_seeds = _episodes(c.env, model, env_id, env_kwargs)
    budget = c.env.eval.budget
    if episode_seeds is not None:
        log.info(
            f"evaluate: {len(pairs)} episodes (env seeds {episode_seeds[0]}..) x planner seeds "
            f"{list(c.seeds)}, {budget}-step budget"
        )
    else:
        log.info(
            f"evaluate: {len(pairs)} start/goal pairs x seeds {list(c.seeds)}, {budget}-step budget"
        )
    start = time.perf_counter()
    results = []
    if c.baseline:
        results.append(evaluate_random(env_id, env_kwargs, pairs, budget, c.seeds, episode_seeds))
    mode = getattr(getattr(c, "agent", None), "mode", "2")
    if mode == "1":
        results.append(
            evaluate_actor(model, env_id, env_kwargs, pairs, budget, env_steps, episode_seeds)
        )
    else:
        results.append(
            evaluate_planner(
                model,
                c.planner,
                env_id,
                env_kwargs,
                pairs,
                budget,
                c.seeds,
                env_steps=env_steps,
                hybrid=mode == "hybrid",
                episode_seeds=episode_seeds,
            )
        )
    if c.video:
        _video(model, c.planner, env_id, env_kwargs, pairs, budget, run_dir, mode)
    log.info(f"evaluate: {time.perf_counter() - start:.1f} s")
    return results, pairs


def _report(results: list, run_dir: Path, c: Any, env_id: str, meta: dict, pairs: list) -> None:
    from wmrobot.bench import print_table, write_report

    # The env's full kwargs are in results.json (provenance); the title stays on one line.
    reward = meta.get("task") == "reward"
    what = "episodes" if reward else "start/goal pairs"
    title = f"{env_id}: {len(pairs)} {what}, {c.env.eval.budget}-step budget"
    score = "return" if reward else "success"
    print_table(write_report(results, run_dir, title, _provenance(meta, pairs, c), score))


def run_plan(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot plan``: evaluate a checkpoint's agent on the env's evaluation set."""
    import torch

    from wmrobot.agent import observation_kwargs, require_actor
    from wmrobot.config import validate
    from wmrobot.train import load_checkpoint

    c = validate("plan", cfg)
    torch.set_num_threads(c.threads)
    model, meta = load_checkpoint(c.checkpoint)
    env_id, env_kwargs = check_same_task(
        meta, c.checkpoint, c.env.id, dict(c.env.kwargs), "plan on the env it was trained on"
    )
    if c.agent.mode != "2":  # refused before any evaluation runs
        require_actor(model, c.agent.mode, c.checkpoint)
    steps = meta["dataset"].get("transitions", 0)
    if c.agent.mode != "2" and "distill" in meta:  # the actor's DAgger episodes count too
        steps += meta["distill"]["env_steps"]
    env_kwargs = observation_kwargs(model, env_kwargs)  # pixel models see frames
    dreamers = _dream_agents(model, c.dream_agents)  # refused before any evaluation runs
    results, pairs = _evaluate(c, model, env_id, env_kwargs, steps, run_dir)
    if dreamers:
        from wmrobot.bench import evaluate_dream

        label, agents = dreamers
        _, episode_seeds = _episodes(c.env, model, env_id, env_kwargs)
        results.append(evaluate_dream(model, agents, label, env_id, env_kwargs, pairs,
                                      c.env.eval.budget, steps, episode_seeds))  # fmt: skip
    _report(results, run_dir, c, env_id, meta, pairs)
    log.info(f"plan: results in {run_dir}/")


def _dream_agents(model: Any, paths: list[str]) -> tuple[str, dict[int, Any]] | None:
    """SB3 agents saved by ``wmrobot dream`` for ``model``, loaded without unpickling anything
    from their files, as {index: agent}, with their row's label; None without paths."""
    if not paths:
        return None
    import torch

    from wmrobot.datasets.policies import load_sb3
    from wmrobot.errors import ConfigError
    from wmrobot.rl.dream import DreamVecEnv

    zeros = torch.zeros(1, model.latent_dim)
    spaces = DreamVecEnv(model, zeros, None if model.task == "reward" else zeros, num_envs=1)
    agents = {i: load_sb3(str(p), spaces) for i, p in enumerate(paths)}
    kinds = {type(a).__name__ for a in agents.values()}
    if len(kinds) > 1:
        raise ConfigError(f"dream_agents mixes algorithms {sorted(kinds)}; give one kind per run")
    return f"Dream {kinds.pop()} (SB3)", agents


def _checkpoint_dataset(c: Any, meta: dict, model: Any, use: str) -> tuple[str, Any, str, dict]:
    """The dataset a command reads beside a checkpoint (``c.dataset``, else the one it was
    trained on), checked against the model and its task: (path, store, env id, env kwargs).
    ``use`` says what to do instead when the dataset is of another task."""
    from wmrobot.datasets import EpisodeStore
    from wmrobot.errors import ConfigError
    from wmrobot.train.data import check_compatible

    dataset = c.dataset or meta.get("dataset", {}).get("path")
    if not dataset:
        raise ConfigError("the checkpoint names no dataset: pass dataset=PATH")
    store = EpisodeStore.open(dataset)
    check_compatible(model, store)
    data_env = store.attrs["env"]
    env_id, env_kwargs = check_same_task(
        meta, c.checkpoint, data_env["id"], data_env.get("kwargs") or {},
        f"{use} on a dataset of its task (dataset={dataset} is not one)",
    )  # fmt: skip
    return dataset, store, env_id, env_kwargs


def run_distill(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot distill``: a checkpoint with a Mode-1 actor head at ``out``."""
    import csv
    import dataclasses

    import torch

    from wmrobot.config import validate
    from wmrobot.distill import distill
    from wmrobot.provenance import git_revision, versions
    from wmrobot.train import load_checkpoint, save_checkpoint

    c = validate("distill", cfg)
    torch.set_num_threads(c.threads)
    model, meta = load_checkpoint(c.checkpoint)
    dataset, store, env_id, env_kwargs = _checkpoint_dataset(c, meta, model, "distil it")
    out = Path(c.out) if c.out else run_dir / "checkpoint"
    log.info(
        f"distill: {c.planner.name} on {env_id} -> a Mode-1 actor "
        f"({c.actor.states} dataset states, {c.actor.rounds} DAgger rounds x "
        f"{c.actor.episodes} episodes)"
    )
    start = time.perf_counter()
    history = distill(model, c.planner, store, env_id, env_kwargs, c.actor, c.seed, say=log.info)
    record = {
        "source_checkpoint": str(c.checkpoint),
        "dataset": {"path": dataset, "fingerprint": store.fingerprint()},
        "planner": dataclasses.asdict(c.planner),
        "actor": dataclasses.asdict(c.actor),
        "seed": c.seed,
        "history": history,
        "env_steps": sum(h["env_steps"] for h in history),
        "seconds": round(time.perf_counter() - start, 1),
        "versions": versions(),
        "git_revision": git_revision(),
    }
    kept = {k: v for k, v in meta.items() if k != "model"}  # save_checkpoint writes the model's
    save_checkpoint(model, out, {**kept, "distill": record})
    with open(run_dir / "distill.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    log.info(
        f"distill: {record['seconds']:.0f} s, {record['env_steps']:,} env steps; checkpoint "
        f"{out} (plan with agent.mode=1 or agent.mode=hybrid)"
    )


def run_dream(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot dream``: SB3 agents trained in a checkpoint's dream, evaluated in the real env
    beside the random floor and the checkpoint's Mode-2 planner."""
    import json

    import numpy as np
    import torch

    from wmrobot.agent import observation_kwargs
    from wmrobot.bench import evaluate_dream, evaluate_planner, evaluate_random
    from wmrobot.config import validate
    from wmrobot.files import write_atomically
    from wmrobot.rl.dream import check_penalty, dataset_latents, imagine, train_in_dream
    from wmrobot.train import load_checkpoint

    c = validate("dream", cfg)
    torch.set_num_threads(c.threads)
    model, meta = load_checkpoint(c.checkpoint)
    env_id, env_kwargs = check_same_task(
        meta, c.checkpoint, c.env.id, dict(c.env.kwargs), "dream on the env it was trained on"
    )
    check_penalty(model, c.dream.penalty)  # before anything is written
    dataset, store, _, _ = _checkpoint_dataset(c, meta, model, "dream")
    reward_task = model.task == "reward"
    pairs, episode_seeds = _episodes(c.env, model, env_id, env_kwargs)
    budget, steps = c.env.eval.budget, meta["dataset"].get("transitions", 0)
    if c.rl_seeds:  # refused now, not after the dream's training
        from wmrobot.envs import make_env
        from wmrobot.rl.sac import check_task

        probe = make_env(env_id, env_kwargs)
        check_task(env_id, probe, c.rl)
        probe.close()
    state_kwargs, env_kwargs = env_kwargs, observation_kwargs(model, env_kwargs)  # pixels: frames
    starts, goals = dataset_latents(model, store)
    log.info(
        f"dream: {c.dream.label} in {env_id}'s dream, {c.dream.steps:,} imagined steps x "
        f"seeds {list(c.seeds)} ({c.dream.envs} envs, {len(starts):,} dataset starts)"
    )
    agents, records = {}, []
    (run_dir / "agents").mkdir(parents=True, exist_ok=True)
    for seed in c.seeds:
        agent, record = train_in_dream(model, starts, goals, c.dream, seed, sys.stderr.isatty())
        path = run_dir / "agents" / f"{c.dream.algo}-seed{seed}.zip"
        agent.save(path)
        agents[seed], record["path"] = agent, str(path)
        records.append(record)
        log.info(f"dream seed {seed}: {record['seconds']:.0f} s, return {record['dream_return']}")
    results = []
    if c.baseline:
        results.append(evaluate_random(env_id, env_kwargs, pairs, budget, [0], episode_seeds))
    if c.planner_seeds:
        results.append(
            evaluate_planner(model, c.planner, env_id, env_kwargs, pairs, budget,
                             list(c.planner_seeds), env_steps=steps, episode_seeds=episode_seeds)
        )  # fmt: skip
    dreamt = evaluate_dream(model, agents, c.dream.label, env_id, env_kwargs, pairs, budget,
                            steps, episode_seeds)  # fmt: skip
    results.append(dreamt)
    if c.rl_seeds:  # model-free, online, on as many real steps as the dataset holds
        from wmrobot.bench import rl_result
        from wmrobot.rl import run_seeds

        log.info(f"{c.rl.label}: {steps:,} env steps per seed, seeds {list(c.rl_seeds)}")
        runs = run_seeds(env_id, state_kwargs, c.rl, steps, list(c.rl_seeds), pairs, budget,
                         run_dir / "agents", progress=sys.stderr.isatty())  # fmt: skip
        results.append(rl_result(c.rl, steps, runs))
    # The reality gap: the same policy from the same first observations, imagined.
    metric = "return" if reward_task else "final distance"
    for record in records:
        real = [e for e in dreamt.episodes if e["seed"] == record["seed"]]
        imagined = imagine(model, agents[record["seed"]], env_id, env_kwargs, pairs,
                           [e["steps"] for e in real], episode_seeds)  # fmt: skip
        key = "ret" if reward_task else "final_distance"
        record["reality_gap"] = {
            "metric": metric,
            "real": round(float(np.mean([e[key] for e in real])), 4),
            "dream": round(float(np.mean(imagined)), 4),
        }
        gap = record["reality_gap"]
        log.info(f"dream seed {record['seed']}: {metric} real {gap['real']}, dreamt {gap['dream']}")
    text = json.dumps({"checkpoint": str(c.checkpoint), "dataset": dataset, "runs": records},
                      indent=2)  # fmt: skip
    write_atomically(run_dir / "dream.json", lambda f: f.write(text.encode()))
    _report(results, run_dir, c, env_id, meta, pairs)
    log.info(f"dream: agents in {run_dir / 'agents'}, results in {run_dir}/")


def _video(model, planner, env_id, env_kwargs, pairs, budget, run_dir: Path, mode="2") -> None:
    from wmrobot.agent import ActorAgent, PlanningAgent
    from wmrobot.envs import make_env
    from wmrobot.eval import record_video

    goal_env = make_env(env_id, env_kwargs)
    goal_obs = getattr(goal_env.unwrapped, "goal_observation", None)  # None: a reward task
    if mode == "1":
        agent, path = ActorAgent(model, goal_obs), run_dir / "actor_episode.gif"
    else:
        agent = PlanningAgent(model, planner, goal_obs, seed=0, hybrid=mode == "hybrid")
        path = run_dir / "mpc_episode.gif"
    ok = record_video(agent, env_id, env_kwargs, pairs[0], budget, str(path))
    goal_env.close()
    log.info(f"video: {path} ({'success' if ok else 'failure'})")


def _key(override: str) -> str:
    """The key of a Hydra override (``+a.b=1`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


def resumed_overrides(rest: list[str]) -> list[str]:
    """``learn out=DIR resume=true``: the overrides DIR's run started with, then ``rest``
    (whose keys win), so that resuming needs no more than the folder."""
    values = {_key(a): a.split("=", 1)[1] for a in rest if "=" in a}
    saved = Path(values.get("out", "")) / "overrides.json"  # wmrobot.learn.OVERRIDES
    if values.get("resume", "").lower() != "true" or not values.get("out") or not saved.is_file():
        return rest
    return [o for o in json.loads(saved.read_text()) if _key(o) not in values] + rest


def run_learn(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot learn``: the online loop into the run directory (``out``)."""
    import torch

    from wmrobot.config import validate
    from wmrobot.learn import learn

    c, config_record = validate("learn", cfg), OmegaConf.to_container(cfg, resolve=True)
    torch.set_num_threads(c.threads)
    from hydra.core.hydra_config import HydraConfig

    given = [o for o in HydraConfig.get().overrides.task if _key(o) not in ("out", "resume")]
    learner = learn(
        run_dir, c.env.id, dict(c.env.kwargs), _model_config(c.model), c.model.train,
        c.planner, c.learn, c.seed, c.resume, config_record=config_record, overrides=given,
        branch=c.dream,
    )  # fmt: skip
    last = learner.p.curve[-1]
    score = f"return {last['return_mean']:.1f} ± {last['return_std']:.1f}"
    if learner.goal_task:
        score = f"success {100 * last['success_mean']:.0f}%"
    log.info(
        f"learn: {last['env_steps']:,} env steps, {score} on {c.learn.eval_episodes} fixed "
        f"episodes; "
        f"curve in {run_dir}/curve.csv, model in {run_dir}/checkpoint"
    )


def run_demo(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot demo``: collect, train, plan and the baselines into the run directory."""
    import torch

    from wmrobot.bench import DISPLAY_NAMES, rl_result
    from wmrobot.config import validate
    from wmrobot.envs import make_env
    from wmrobot.errors import ConfigError
    from wmrobot.rl import run_seeds
    from wmrobot.rl.sac import is_goal_env
    from wmrobot.train import load_checkpoint

    c, config_record = validate("demo", cfg), OmegaConf.to_container(cfg, resolve=True)
    env = make_env(c.env.id, c.env.kwargs)
    goals = is_goal_env(env)
    env.close()
    if not goals:  # known now, not after collecting: the model and planners reach goals
        raise ConfigError(
            f"env={c.env.id} has no goals; the demo plans to goals: choose a goal task "
            f"(env=pointmaze, tworoom, reacher, push, ...; `wmrobot envs` lists them)"
        )
    torch.set_num_threads(c.threads)
    t0 = time.perf_counter()
    data, ckpt = str(run_dir / "dataset.zarr"), run_dir / "checkpoint"
    log.info("[1/4] data")
    res = _collect(c, data)
    log.info("[2/4] world model")
    _train(c, data, ckpt, config_record)
    model, meta = load_checkpoint(ckpt)
    log.info(f"[3/4] random policy and Mode-2 {DISPLAY_NAMES.get(c.planner.name, c.planner.name)}")
    results, pairs = _evaluate(c, model, c.env.id, c.env.kwargs, res.transitions, run_dir)
    if c.rl_seeds:
        steps, seeds = res.transitions, list(c.rl_seeds)
        log.info(f"[4/4] {c.rl.label}, {steps:,} env steps per seed, seeds {seeds}")
        start = time.perf_counter()
        budget = c.env.eval.budget
        runs = run_seeds(c.env.id, c.env.kwargs, c.rl, steps, seeds, pairs, budget, run_dir)
        results.append(rl_result(c.rl, steps, runs))
        log.info(f"{c.rl.label}: {time.perf_counter() - start:.1f} s")
    _report(results, run_dir, c, c.env.id, meta, pairs)
    log.info(f"demo: {time.perf_counter() - t0:.0f} s in all; artifacts in {run_dir}/")


def run_bench(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot bench``: the suite's unfinished cells through Hydra's launcher (``wmrobot
    cell -m``, in a process of its own), then the report from every finished cell."""
    import subprocess

    from wmrobot.bench.suite import pending, pin, report
    from wmrobot.config import validate
    from wmrobot.errors import WmrobotError

    c = validate("bench", cfg)
    out = Path(c.out) if c.out else run_dir
    pin(c.suite, out)
    cells = [] if c.report_only else pending(c.suite, out)
    total = len(c.suite.cells())
    log.info(f"bench {c.suite.name}: {total} cells, {total - len(pending(c.suite, out))} done, "
             f"{len(cells)} to run ({c.launcher}, {c.workers} at a time) in {out}/")  # fmt: skip
    failed = None
    if cells:
        start = time.perf_counter()
        launch = [f"hydra/launcher={c.launcher}"] if c.launcher != "basic" else []
        if c.launcher == "joblib":
            launch.append(f"hydra.launcher.n_jobs={c.workers}")
        args = [sys.executable, "-m", "wmrobot.cli", "cell", "-m", f"out={out}",
                f"cell={','.join(cells)}", *launch]  # fmt: skip
        done = subprocess.run(args, env={**os.environ, "OMP_NUM_THREADS": "1"})
        log.info(f"bench: {len(cells)} cells in {time.perf_counter() - start:.0f} s")
        failed = done.returncode
    text = report(out, c.suite)
    print(text)
    left = len(pending(c.suite, out))
    if not c.report_only and (failed or left):
        raise WmrobotError(
            f"{left} of {total} cells have no result (see {out}/hydra/); the same command "
            f"runs them again, finished cells are kept"
        )
    log.info(f"bench: {out / 'report.md'}, results.csv, curves-*.png")


def run_cell(cfg: DictConfig, run_dir: Path) -> None:
    """``wmrobot cell``: one cell of a bench (what ``wmrobot bench`` launches)."""
    from wmrobot.bench.suite import run_cell as run
    from wmrobot.config import validate

    c = validate("cell", cfg)
    result = run(c.cell, Path(c.out))
    log.info(f"cell {c.cell}: {result['label']}, {result['env_steps']:,} env steps, success "
             f"{result['success']:.2f}, return {result['return']}")  # fmt: skip


# ---------------------------------------------------------------------------------------- main
JOBS: dict[str, Callable[[DictConfig, Path], None]] = {
    "collect": run_collect,
    "train": run_train,
    "plan": run_plan,
    "distill": run_distill,
    "dream": run_dream,
    "learn": run_learn,
    "demo": run_demo,
    "bench": run_bench,
    "cell": run_cell,
}
# Commands with positional arguments of their own (eval model is a Hydra app inside).
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "data": data_cli.main,
    "envs": envs_cli.main,
    "eval": eval_cli.main,
}


def main(argv: list[str] | None = None) -> int:
    """``wmrobot <command> ...``: dispatch on the first word; the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from wmrobot import __version__

        print(f"wmrobot {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in SUBCOMMANDS:
        return SUBCOMMANDS[command](rest)
    if command not in JOBS:
        choices = ", ".join([*JOBS, *SUBCOMMANDS])
        return error(None, f"unknown command {command!r}; choose one of {choices}")
    if any(a in ("-h", "--help") for a in rest):
        from wmrobot.config import own_sections
        from wmrobot.errors import ConfigError

        overrides = [a for a in rest if not a.startswith("-")]  # -m and its kin: not for help
        try:
            print(command_help(command, own_sections(command, compose(command, overrides))))
        except ConfigError as e:
            return error(command, str(e))
        return 0
    # train alone continues a run of its own in a non-empty out= (resume=true); collect's out=
    # is a dataset, which collect resumes itself.
    resume_file = None
    if command == "train":
        from wmrobot.train.resume import TRAIN_STATE as resume_file
    if command == "learn":
        from wmrobot.learn import RUN as resume_file

        rest = resumed_overrides(rest)
    if command == "cell" and not {"-m", "--multirun"} & set(rest):
        from wmrobot.bench.spec import parse_cell
        from wmrobot.bench.suite import pinned
        from wmrobot.errors import ConfigError

        given = dict(a.split("=", 1) for a in rest if "=" in a)
        try:  # before Hydra makes its run directory in the bench's folder
            parse_cell(given.get("cell", ""))
            pinned(Path(given.get("out", ".")))
        except ConfigError as e:
            return error(command, str(e))
    # bench resumes its own out= (a pinned suite); a cell writes into its bench's folder.
    out_folder = command not in ("collect", "bench", "cell")
    return run_app(command, command, JOBS[command], rest, out_folder, resume_file)


if __name__ == "__main__":
    sys.exit(main())
