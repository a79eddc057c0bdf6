"""The ``wmrobot`` command: collect, train, plan, demo; Hydra configs, one-line errors."""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path
from typing import Any

USAGE = """usage: wmrobot <command> [key=value ...] [--help]

Latent (JEPA) world models for MuJoCo robots, on a CPU.

commands:
  collect   collect episodes from a MuJoCo task into a Zarr dataset
  train     train a JEPA world model on a dataset; writes a checkpoint directory
  plan      run Mode-2 MPC (cem, icem, mppi, grad), the Mode-1 actor or the hybrid with a
            checkpoint in the real env on the fixed evaluation set
  distill   train a Mode-1 actor head from a checkpoint's planner (imitation, then DAgger)
  demo      collect -> train -> plan, plus random and SAC baselines, in one table
  data      info | validate | replay | merge | convert: look into, check, re-simulate,
            merge or convert (to and from Minari) datasets
  envs      list | show | evalsets: the task suite, frames under factor settings, the
            frozen evaluation sets and their experts' success
  eval      model: audit a checkpoint on a dataset: latent prediction error against the
            horizon, linear-probe R² of positions and velocities, collapse metrics

Options are Hydra overrides (key=value, group=option). `wmrobot <command> --help` lists a
command's options with their current values. Each run writes runs/<command>/<timestamp>/.
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
    "demo": "Run the whole path on defaults: collect, train, plan, and SAC trained online with\n"
    "as many env steps as the dataset holds; prints one table, writes plots and a GIF.\n"
    "example: wmrobot demo episodes=50 rl_seeds=[0]",
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
    "policy.epsilon": "probability of a random action (of exponent beta) at each step",
    "policy.noise": "Gaussian noise added to the expert's actions (std, action units)",
    "policy.path": "policy=sb3: the model saved by stable-baselines3 (.zip)",
    "policy.deterministic": "policy=sb3: act with the mean action (else sample)",
    "episodes": "number of episodes to collect (a target: a resumed run tops up to it)",
    "steps": "a target in transitions instead of episodes (whole episodes, resumable)",
    "seed": "run seed (collection, training)",
    "workers": "processes stepping envs, or rollout threads (the dataset is the same for any)",
    "pixels": "image size N: also store N x N camera frames (data/pixels, uint8)",
    "fast": "random actions simulated in batches by mujoco.rollout, same rows (null: if possible)",
    "flush_every": "episodes per commit (a crash loses at most this many); null: every ~2 s",
    "out": "output path (default: inside runs/<command>/<timestamp>/)",
    "dataset": "a Zarr dataset made by `wmrobot collect` (distill: null = the checkpoint's)",
    "threads": "torch CPU threads",
    "model": "model config group (state_mlp, pixels_cnn, reacher_state)",
    "model.latent_dim": "latent size D",
    "model.train.steps": "optimisation steps",
    "model.train.batch_size": "windows per batch",
    "model.train.horizon": "prediction steps K per window (multi-step loss)",
    "model.train.checkpoint_every": "steps between resumable training states (train_state.pt)",
    "resume": "continue from out/train_state.pt: same metrics as a run that never stopped",
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
    "rl_seeds": "SAC training seeds (trained in parallel, one per core)",
    "baseline": "also evaluate the random policy",
    "video": "write a GIF of one MPC episode",
    "rl": "model-free baseline group: sac",
}


def _error(command: str | None, message: str) -> int:
    where = f"wmrobot {command}" if command else "wmrobot"
    print(f"{where}: error: {message}", file=sys.stderr)
    return 2


def _config_dir() -> str:
    return str(resources.files("wmrobot.configs"))


def _group_options(group: str) -> list[str]:
    folder = Path(_config_dir()) / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _without_foreign_sections(command: str, cfg: Any) -> Any:
    """Drop the sections a task config sets for other commands (``env=reacher`` carries the
    planner settings that suit the task; ``collect`` has no planner)."""
    from omegaconf import open_dict

    from wmrobot.config import SCHEMAS

    known = {f.name for f in fields(SCHEMAS[command])} if command in SCHEMAS else {"planner"}
    if "planner" in cfg and "planner" not in known:
        with open_dict(cfg):
            del cfg["planner"]
    return cfg


def compose(command: str, overrides: list[str]) -> Any:
    """The command's config with ``overrides`` applied (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from wmrobot.errors import ConfigError

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=_config_dir(), version_base=None):
            cfg = hydra_compose(config_name=command, overrides=overrides)
        return _without_foreign_sections(command, cfg)
    except (HydraException, OmegaConfBaseException) as e:
        text = str(e)
        missing = re.search(r"Could not find '([\w-]+)/([^']+)'", text)
        if missing:
            group, option = missing.groups()
            raise ConfigError(
                f"unknown {group} {option!r}; available: {', '.join(_group_options(group))}"
            ) from None
        unknown = re.search(r"Could not override '([^']+)'", text)
        if unknown:
            raise ConfigError(
                f"unknown option {unknown.group(1)!r}; see `wmrobot {command} --help`"
            ) from None
        raise ConfigError(text.strip().splitlines()[0]) from None


def command_help(command: str, cfg: Any) -> str:
    from omegaconf import OmegaConf

    lines = [f"usage: wmrobot {command} [key=value ...]", "", DESCRIPTIONS[command], ""]
    groups = [g for g in ("env", "policy", "model", "planner", "rl") if g in cfg]
    if groups:
        lines.append("config groups (choose with group=option):")
        for g in groups:
            lines.append(f"  {g:<28} {OPTION_HELP.get(g, '')}; one of {_group_options(g)}")
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
            lines.append(f"  {entry:<34} {OPTION_HELP.get(path, '')}".rstrip())

    raw = OmegaConf.to_container(cfg, resolve=False)
    walk(OmegaConf.create(raw), "")
    return "\n".join(lines)


def _run_dir(command: str, out: str | None) -> Path:
    """``runs/<command>/<timestamp>/``; for plan and demo, ``out=`` names it instead. Under
    ``torchrun`` only rank 0 keeps one: the other ranks get a scratch directory."""
    import os

    if os.environ.get("RANK", "0") != "0":
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"wmrobot-{command}-rank{os.environ['RANK']}-"))
    if out and command in ("plan", "demo"):
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / command / stamp
    path, n = base, 1
    while path.exists():
        path, n = base.with_name(f"{stamp}-{n}"), n + 1
    path.mkdir(parents=True)
    return path


_LOG: list[Path] = []  # the current run's run.log, once its directory exists


def _say(message: str) -> None:
    """Print a progress line and keep it in the run's run.log (rank 0 only under torchrun)."""
    import os

    if os.environ.get("RANK", "0") != "0":
        return
    print(message, flush=True)
    if _LOG:
        with open(_LOG[0], "a") as f:
            f.write(f"{_dt.datetime.now().isoformat(timespec='seconds')} {message}\n")


def _provenance(meta: dict[str, Any], pairs: list[dict[str, Any]], config: Any) -> dict:
    from omegaconf import OmegaConf

    from wmrobot.provenance import git_revision, versions

    return {
        "config": OmegaConf.to_container(OmegaConf.structured(config)),
        "checkpoint": {k: meta.get(k) for k in ("dataset", "env", "steps", "seed", "created")},
        "evaluation_set": pairs,
        "versions": versions(),
        "git_revision": git_revision(),
    }


# ------------------------------------------------------------------------------------ commands
def _model_config(section: Any) -> Any:
    from wmrobot.model import ModelConfig

    return ModelConfig(**{f.name: getattr(section, f.name) for f in fields(ModelConfig)})


def _collect(c: Any, path: str) -> Any:
    """Collect ``c.episodes`` of ``c.env`` with ``c.policy`` into ``path`` (collect, demo)."""
    from wmrobot.datasets import collect
    from wmrobot.datasets.policies import PolicySpec

    steps = getattr(c, "steps", None)
    target = f"{steps:,} steps" if steps else f"{c.episodes} episodes"
    policy = PolicySpec(**asdict(c.policy))
    policy.check()
    params = ", ".join(f"{k}={v}" for k, v in policy.record()["policy_params"].items())
    _say(f"collect: {target} of {c.env.id} ({policy.name}: {params})")
    res = collect(
        path,
        c.env.id,
        c.env.kwargs,
        policy=policy,
        episodes=c.episodes,
        steps=steps,
        seed=c.seed,
        flush_every=c.flush_every,
        workers=getattr(c, "workers", 1),
        pixels=getattr(c, "pixels", None),
        fast=getattr(c, "fast", None),
    )
    _say(
        f"collect: {res.episodes} episodes, {res.transitions:,} steps in {path} "
        f"({res.seconds:.1f} s, {res.transitions / max(res.seconds, 1e-9):,.0f} steps/s)"
    )
    return res


def _train(c: Any, dataset: str, out: Path, config_record: dict[str, Any]) -> None:
    """Train ``c.model`` on ``dataset`` into the checkpoint directory ``out`` (train, demo)."""
    from wmrobot.train import train

    _say(f"train: {c.model.train.steps} steps on {dataset}")
    start = time.perf_counter()
    resume = getattr(c, "resume", False)  # train only; demo always starts afresh
    train(dataset, out, _model_config(c.model), c.model.train, config_record, resume=resume)
    import csv

    with open(out / "metrics.csv") as f:  # the critic's fine-tuning rows carry no "loss"
        loss = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")][-1]
    _say(f"train: {time.perf_counter() - start:.1f} s, final loss {loss:.4f}; checkpoint {out}")


def run_collect(c: Any, run_dir: Path) -> None:
    _collect(c, c.out or str(run_dir / "dataset.zarr"))


def run_train(c: Any, run_dir: Path, config_record: dict[str, Any]) -> None:
    import torch

    from wmrobot.datasets import EpisodeStore

    EpisodeStore.open(c.dataset)  # a clear error before anything is built
    torch.set_num_threads(c.threads)
    _train(c, c.dataset, Path(c.out) if c.out else run_dir / "checkpoint", config_record)


def _evaluation_set(env: Any) -> list[dict[str, Any]]:
    """The start/goal pairs: a frozen set (``env.eval.file``, whose budget then replaces
    ``env.eval.budget``) or ``env.eval.pairs`` drawn with ``env.eval.seed``."""
    from wmrobot.envs import eval_pairs, make_env
    from wmrobot.envs.evalsets import load_evalset
    from wmrobot.errors import ConfigError

    if env.eval.file:
        frozen = load_evalset(env.eval.file)
        differ = {k: v for k, v in frozen.kwargs.items() if env.kwargs.get(k) != v}
        if frozen.env_id != env.id or differ:
            raise ConfigError(
                f"env.eval.file={env.eval.file} is a set for {frozen.env_id} {frozen.kwargs}, "
                f"not {env.id} {dict(env.kwargs)}; pick the matching env= or drop the file"
            )
        env.eval.budget = frozen.budget
        return frozen.pairs
    probe = make_env(env.id, env.kwargs)
    pairs = eval_pairs(probe, env.eval.pairs, env.eval.seed, env.eval.max_distance)
    probe.close()
    return pairs


def _evaluate(c: Any, model: Any, env_id: str, env_kwargs: dict, env_steps: int, run_dir: Path):
    """Random floor (if asked) and Mode-2 MPC on the evaluation set, plus a GIF (plan, demo)."""
    from wmrobot.bench import evaluate_actor, evaluate_planner, evaluate_random

    pairs, budget = _evaluation_set(c.env), c.env.eval.budget
    _say(f"evaluate: {len(pairs)} start/goal pairs x seeds {list(c.seeds)}, {budget}-step budget")
    start = time.perf_counter()
    results = []
    if c.baseline:
        results.append(evaluate_random(env_id, env_kwargs, pairs, budget, c.seeds))
    mode = getattr(getattr(c, "agent", None), "mode", "2")
    if mode == "1":
        results.append(evaluate_actor(model, env_id, env_kwargs, pairs, budget, env_steps))
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
            )
        )
    if c.video:
        _video(model, c.planner, env_id, env_kwargs, pairs, budget, run_dir, mode)
    _say(f"evaluate: {time.perf_counter() - start:.1f} s")
    return results, pairs


def _report(results: list, run_dir: Path, c: Any, env_id: str, meta: dict, pairs: list) -> None:
    from wmrobot.bench import print_table, write_report

    # The env's full kwargs are in results.json (provenance); the title stays on one line.
    title = f"{env_id}: {len(pairs)} start/goal pairs, {c.env.eval.budget}-step budget"
    print_table(write_report(results, run_dir, title, _provenance(meta, pairs, c)))


def _full_kwargs(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the env's defaults filled in, so that spelling a default out (or not)
    names the same env."""
    import inspect

    import gymnasium

    try:
        spec = gymnasium.spec(env_id)
        creator = gymnasium.envs.registration.load_env_creator(spec.entry_point)
        classes = creator.__mro__ if inspect.isclass(creator) else (creator,)
        defaults: dict[str, Any] = {}
        for cls in reversed(classes):  # a subclass's default wins over its base's
            init = cls.__init__ if inspect.isclass(cls) else cls
            if inspect.isclass(cls) and "__init__" not in vars(cls):
                continue
            for p in inspect.signature(init).parameters.values():
                if p.default is not inspect.Parameter.empty:
                    defaults[p.name] = p.default
    except Exception:  # an id gymnasium cannot resolve compares as given
        return dict(kwargs)
    return {**defaults, **spec.kwargs, **kwargs}


# How an env is observed and rendered, not which task it is: a checkpoint trained on frames
# (collected with pixels=N) plans on the same task as the env config without them.
VIEW_KWARGS = ("render_mode", "width", "height", "obs_mode", "camera")


def _task_kwargs(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    full = _full_kwargs(env_id, kwargs)
    return {k: v for k, v in full.items() if k not in VIEW_KWARGS}


def run_plan(c: Any, run_dir: Path) -> list[Any]:
    import torch

    from wmrobot.agent import observation_kwargs, require_actor
    from wmrobot.errors import ConfigError
    from wmrobot.train import load_checkpoint

    torch.set_num_threads(c.threads)
    model, meta = load_checkpoint(c.checkpoint)
    env_id, env_kwargs = meta["env"]["id"], meta["env"]["kwargs"]
    if env_id != c.env.id or _task_kwargs(env_id, env_kwargs) != _task_kwargs(
        c.env.id, dict(c.env.kwargs)
    ):
        raise ConfigError(
            f"the checkpoint was trained on {env_id} {env_kwargs}, not {c.env.id} "
            f"{dict(c.env.kwargs)}: plan on the env it was trained on"
        )
    if c.agent.mode != "2":  # refused before any evaluation runs
        require_actor(model, c.agent.mode, c.checkpoint)
    steps = meta["dataset"].get("transitions", 0)
    if c.agent.mode != "2" and "distill" in meta:  # the actor's DAgger episodes count too
        steps += meta["distill"]["env_steps"]
    env_kwargs = observation_kwargs(model, env_kwargs)  # pixel models see frames
    results, pairs = _evaluate(c, model, env_id, env_kwargs, steps, run_dir)
    _report(results, run_dir, c, env_id, meta, pairs)
    _say(f"plan: results in {run_dir}/")
    return results


def run_distill(c: Any, run_dir: Path) -> None:
    import csv
    import dataclasses

    import torch

    from wmrobot.datasets import EpisodeStore
    from wmrobot.distill import distill
    from wmrobot.errors import ConfigError
    from wmrobot.provenance import git_revision, versions
    from wmrobot.train import load_checkpoint, save_checkpoint
    from wmrobot.train.trainer import check_compatible

    torch.set_num_threads(c.threads)
    model, meta = load_checkpoint(c.checkpoint)
    dataset = c.dataset or meta.get("dataset", {}).get("path")
    if not dataset:
        raise ConfigError("the checkpoint names no dataset: pass dataset=PATH")
    store = EpisodeStore.open(dataset)
    check_compatible(model, store)
    env_id, env_kwargs = meta["env"]["id"], meta["env"]["kwargs"]
    out = Path(c.out) if c.out else run_dir / "checkpoint"
    _say(
        f"distill: {c.planner.name} on {env_id} -> a Mode-1 actor "
        f"({c.actor.states} dataset states, {c.actor.rounds} DAgger rounds x "
        f"{c.actor.episodes} episodes)"
    )
    start = time.perf_counter()
    history = distill(model, c.planner, store, env_id, env_kwargs, c.actor, c.seed, say=_say)
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
    _say(
        f"distill: {record['seconds']:.0f} s, {record['env_steps']:,} env steps; checkpoint "
        f"{out} (plan with agent.mode=1 or agent.mode=hybrid)"
    )


def _video(model, planner, env_id, env_kwargs, pairs, budget, run_dir: Path, mode="2") -> None:
    from wmrobot.agent import ActorAgent, PlanningAgent
    from wmrobot.envs import make_env
    from wmrobot.eval import record_video

    goal_env = make_env(env_id, env_kwargs)
    goal_obs = goal_env.unwrapped.goal_observation
    if mode == "1":
        agent, path = ActorAgent(model, goal_obs), run_dir / "actor_episode.gif"
    else:
        agent = PlanningAgent(model, planner, goal_obs, seed=0, hybrid=mode == "hybrid")
        path = run_dir / "mpc_episode.gif"
    ok = record_video(agent, env_id, env_kwargs, pairs[0], budget, str(path))
    goal_env.close()
    _say(f"video: {path} ({'success' if ok else 'failure'})")


def run_demo(c: Any, run_dir: Path, config_record: dict[str, Any]) -> list[Any]:
    import torch

    from wmrobot.bench import summarise
    from wmrobot.rl import run_seeds
    from wmrobot.train import load_checkpoint

    torch.set_num_threads(c.threads)
    t0 = time.perf_counter()
    data, ckpt = str(run_dir / "dataset.zarr"), run_dir / "checkpoint"
    _say("[1/4] data")
    res = _collect(c, data)
    _say("[2/4] world model")
    _train(c, data, ckpt, config_record)
    model, meta = load_checkpoint(ckpt)
    from wmrobot.bench import DISPLAY_NAMES

    _say(f"[3/4] random policy and Mode-2 {DISPLAY_NAMES.get(c.planner.name, c.planner.name)}")
    results, pairs = _evaluate(c, model, c.env.id, c.env.kwargs, res.transitions, run_dir)
    if c.rl_seeds:
        _say(f"[4/4] SAC, {res.transitions:,} env steps per seed, seeds {list(c.rl_seeds)}")
        start = time.perf_counter()
        budget = c.env.eval.budget
        runs = run_seeds(
            c.env.id, c.env.kwargs, c.rl, res.transitions, list(c.rl_seeds), pairs, budget, run_dir
        )
        per_seed = {r["seed"]: r["records"] for r in runs}
        latency = sum(r["latency_ms"] for r in runs) / len(runs)
        results.append(summarise("SAC (SB3)", res.transitions, per_seed, latency, "training"))
        _say(f"SAC: {time.perf_counter() - start:.1f} s")
    _report(results, run_dir, c, c.env.id, meta, pairs)
    _say(f"demo: {time.perf_counter() - t0:.0f} s in all; artifacts in {run_dir}/")
    return results


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from wmrobot import __version__

        print(f"wmrobot {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "data":
        from wmrobot.data_cli import main as data_main

        return data_main(rest)
    if command == "envs":
        from wmrobot.envs_cli import main as envs_main

        return envs_main(rest)
    if command == "eval":
        from wmrobot.eval_cli import main as eval_main

        return eval_main(rest)
    runners: dict[str, Callable[..., Any]] = {
        "collect": run_collect,
        "train": run_train,
        "plan": run_plan,
        "demo": run_demo,
        "distill": run_distill,
    }
    if command not in runners:
        choices = ", ".join([*runners, "data", "envs", "eval"])
        return _error(None, f"unknown command {command!r}; choose one of {choices}")
    want_help = any(a in ("-h", "--help") for a in rest)
    overrides = [a for a in rest if a not in ("-h", "--help")]

    from omegaconf import OmegaConf

    from wmrobot.config import validate
    from wmrobot.errors import WmrobotError

    try:
        cfg = compose(command, overrides)
        if want_help:
            print(command_help(command, cfg))
            return 0
        typed = validate(command, cfg)
        run_dir = _run_dir(command, getattr(typed, "out", None))
        created_run_dir = run_dir.parent.parent == Path("runs")
        _LOG[:] = [run_dir / "run.log"]
        record = OmegaConf.to_container(cfg, resolve=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if command in ("train", "demo"):
            runners[command](typed, run_dir, record)
        else:
            runners[command](typed, run_dir)
    except WmrobotError as e:
        # A run that stopped on bad input before producing anything leaves no directory.
        if "run_dir" in locals() and created_run_dir:
            leftovers = {p.name for p in run_dir.iterdir()}
            if leftovers <= {"config.yaml", "run.log"}:
                shutil.rmtree(run_dir)
        return _error(command, str(e))
    except KeyboardInterrupt:
        return _error(command, "interrupted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
