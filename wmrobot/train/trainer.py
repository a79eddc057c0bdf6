"""Train a WorldModel on an EpisodeStore: the loop, its schedule, logging and the checkpoint."""

from __future__ import annotations

import csv
import datetime as _dt
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from wmrobot.datasets import EpisodeStore, WindowSampler
from wmrobot.datasets.collector import git_revision, versions
from wmrobot.errors import DatasetError
from wmrobot.model.collapse import effective_rank
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.train.checkpoint import save_checkpoint
from wmrobot.train.losses import LossWeights, jepa_loss


@dataclass
class TrainConfig:
    steps: int
    batch_size: int
    horizon: int
    lr: float
    weight_decay: float
    warmup: int
    grad_clip: float
    loss: LossWeights
    log_every: int
    seed: int


def observation_keys(store: EpisodeStore) -> tuple[str, str]:
    """The (observation, achieved goal) keys a goal-conditioned dataset must hold."""
    keys = set(store.keys)
    if {"obs/observation", "obs/achieved_goal"} <= keys:
        return "obs/observation", "obs/achieved_goal"
    raise DatasetError(
        f"{store.path!r} has keys {sorted(keys)}; training needs a goal-conditioned dataset "
        f"with obs/observation and obs/achieved_goal (e.g. from wmrobot/PointMaze-v0)"
    )


def build_model(store: EpisodeStore, cfg: ModelConfig) -> WorldModel:
    obs_key, _ = observation_keys(store)
    stats = store.attrs["stats"][obs_key]
    mean = torch.tensor(stats["mean"], dtype=torch.float32)
    std = torch.tensor(stats["std"], dtype=torch.float32)
    spaces = store.attrs["spaces"]
    if "action_low" not in spaces:
        raise DatasetError(f"{store.path!r} does not record its action bounds; collect it again")
    return WorldModel(
        obs_dim=len(mean),
        action_dim=len(spaces["action_low"]),
        cfg=cfg,
        obs_mean=mean,
        obs_std=std,
        action_low=torch.tensor(spaces["action_low"], dtype=torch.float32),
        action_high=torch.tensor(spaces["action_high"], dtype=torch.float32),
    )


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    dataset: str,
    out: str | Path,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    config_record: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Train on ``dataset``; write the checkpoint and ``metrics.csv`` into ``out``."""
    torch.manual_seed(cfg.seed)
    store = EpisodeStore.open(dataset)
    obs_key, ag_key = observation_keys(store)
    sampler = WindowSampler(store, [obs_key, "action", ag_key], steps=cfg.horizon)
    model = build_model(store, model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.warmup, cfg.steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    writer: csv.DictWriter | None = None
    with open(out / "metrics.csv", "w", newline="") as log:
        bar = tqdm(
            range(cfg.steps),
            desc="train",
            unit="step",
            disable=None if progress else True,
            leave=False,
        )
        for step in bar:
            batch = sampler.sample(cfg.batch_size, gen)
            goal_rows = torch.randint(sampler.n_rows, (cfg.batch_size,), generator=gen)
            loss, parts = jepa_loss(
                model,
                batch[obs_key],
                batch["action"],
                batch[ag_key],
                sampler.rows(obs_key, goal_rows),
                sampler.rows(ag_key, goal_rows),
                cfg.loss,
            )
            if not math.isfinite(parts["loss"]):
                raise DatasetError(
                    f"loss became {parts['loss']} at step {step}; check {dataset!r} for NaN/Inf "
                    f"or lower lr={cfg.lr}"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            model.update_target()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                with torch.no_grad():
                    rows = torch.randint(sampler.n_rows, (1024,), generator=gen)
                    z = model.encode(sampler.rows(obs_key, rows))
                row = {
                    "step": step,
                    **{k: round(v, 6) for k, v in parts.items()},
                    "effective_rank": round(effective_rank(z), 3),
                    "lr": sched.get_last_lr()[0],
                    "seconds": round(time.perf_counter() - start, 2),
                }
                if writer is None:
                    writer = csv.DictWriter(log, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                log.flush()
                bar.set_postfix(loss=f"{parts['loss']:.4f}", rank=row["effective_rank"])
        bar.close()
    meta = {
        "dataset": {
            "path": str(dataset),
            "fingerprint": store.fingerprint(),
            "episodes": store.n_episodes,
            "transitions": store.n_transitions,
        },
        "env": store.attrs["env"],
        "obs_key": obs_key,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "seconds": round(time.perf_counter() - start, 2),
        "config": config_record or {},
        "versions": versions(),
        "git_revision": git_revision(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return save_checkpoint(model, out, meta)
