"""The steps the commands share (``collect``, ``train``, ``plan``, ``demo``, ``bench``): a
dataset collected from a command's config, a model trained on it, a task's evaluation set.
Heavy imports stay inside the functions, so that importing this module is cheap."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

log = logging.getLogger("wmrobot")


def model_config(section: Any) -> Any:
    from dataclasses import fields

    from wmrobot.model import ModelConfig

    return ModelConfig(**{f.name: getattr(section, f.name) for f in fields(ModelConfig)})


def collect_dataset(c: Any, path: str) -> Any:
    """Collect ``c.episodes`` of ``c.env`` with ``c.policy`` into ``path`` (collect, demo)."""
    from wmrobot.datasets import collect
    from wmrobot.datasets.policies import PolicySpec

    steps = getattr(c, "steps", None)
    target = f"{steps:,} steps" if steps else f"{c.episodes} episodes"
    policy = PolicySpec(**asdict(c.policy))  # checked when the config was built
    params = ", ".join(f"{k}={v}" for k, v in policy.record()["policy_params"].items())
    log.info(f"collect: {target} of {c.env.id} ({policy.name}: {params})")
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
    log.info(
        f"collect: {res.episodes} episodes, {res.transitions:,} steps in {path} "
        f"({res.seconds:.1f} s, {res.transitions / max(res.seconds, 1e-9):,.0f} steps/s)"
    )
    return res


def train_model(c: Any, dataset: str, out: Path, config_record: dict[str, Any]) -> None:
    """Train ``c.model`` on ``dataset`` into the checkpoint directory ``out`` (train, demo)."""
    from wmrobot.train import train

    log.info(f"train: {c.model.train.steps} steps on {dataset}")
    start = time.perf_counter()
    resume = getattr(c, "resume", False)  # train only; demo always starts afresh
    train(dataset, out, model_config(c.model), c.model.train, config_record, resume=resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone writes the checkpoint
        return
    import csv

    with open(out / "metrics.csv") as f:  # the critic's fine-tuning rows carry no "loss"
        loss = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")][-1]
    log.info(f"train: {time.perf_counter() - start:.1f} s, final loss {loss:.4f}; checkpoint {out}")


def evaluation_set(env: Any) -> list[dict[str, Any]]:
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


def evaluation_episodes(
    env: Any, model: Any, env_id: str, env_kwargs: dict
) -> tuple[list, list | None]:
    """The evaluation episodes: (pairs, episode seeds). A reward task's set is
    ``env.eval.pairs`` episodes reset with seeds from ``env.eval.seed`` (the env draws its
    start; nothing else to pin); a goal task's, its start/goal pairs (seeds None: episode i
    resets with seed i). Sets ``env.eval.budget`` where the env's limit or a frozen set
    decides it."""
    if env.eval.budget is None:  # the env's own time limit
        from wmrobot.envs import episode_length

        env.eval.budget = episode_length(env_id, env_kwargs) or 1000
    if getattr(model, "task", "goal") == "reward":
        pairs = [{}] * env.eval.pairs
        return pairs, [env.eval.seed + i for i in range(len(pairs))]
    return evaluation_set(env), None  # a frozen set may set the budget
