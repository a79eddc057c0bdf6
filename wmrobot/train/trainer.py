"""Train a WorldModel on an EpisodeStore: the loop, its schedule, logging and the checkpoint."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from wmrobot.datasets import EpisodeStore, WindowSampler
from wmrobot.datasets.collector import git_revision, versions
from wmrobot.errors import CheckpointError, DatasetError
from wmrobot.model.collapse import collapse_report
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
    checkpoint_every: int = 500  # steps between resumable training states (train_state.pt)


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
    resume: bool = False,
) -> Path:
    """Train on ``dataset``; write the checkpoint and ``metrics.csv`` into ``out``.

    Every ``cfg.checkpoint_every`` steps the whole training state (model, EMA target,
    optimiser, schedule, random generators, step) is written atomically to
    ``out/train_state.pt``. ``resume=True`` continues from it: a run killed at any moment and
    resumed logs the same metrics, step for step, as one that never stopped (same seed, CPU).
    """
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
    identity = {
        "dataset": store.fingerprint(),
        "model": json.dumps(asdict(model_cfg), sort_keys=True),
        # What decides the numbers; how often to log or save may change between runs.
        "train": json.dumps(
            {k: v for k, v in asdict(cfg).items() if k not in ("log_every", "checkpoint_every")},
            sort_keys=True,
        ),
    }
    first = 0
    if resume and (out / TRAIN_STATE).exists():
        first = load_train_state(out / TRAIN_STATE, identity, model, opt, sched, gen) + 1
        _keep_metrics_up_to(out / "metrics.csv", first - 1)
    elif (out / "metrics.csv").exists():
        (out / "metrics.csv").unlink()
    start = time.perf_counter()
    writer: csv.DictWriter | None = None
    warned = False
    with open(out / "metrics.csv", "a", newline="") as log:
        bar = tqdm(
            range(first, cfg.steps),
            desc="train",
            unit="step",
            disable=None if progress else True,
            leave=False,
            initial=first,
            total=cfg.steps,
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
                saved = out / TRAIN_STATE
                kept = f"; the last good state is kept in {saved}" if saved.exists() else ""
                raise DatasetError(
                    f"loss became {parts['loss']} at step {step}; check {dataset!r} for NaN/Inf "
                    f"or lower lr={cfg.lr}{kept}"
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
                report = collapse_report(z)
                if report["collapsed"] and not warned:
                    warned = True
                    warnings.warn(
                        f"the latents look collapsed at step {step} (effective rank "
                        f"{report['effective_rank']:.2f} of {z.shape[1]}, smallest std "
                        f"{report['z_std_min']:.2g}); raise the variance/covariance weights",
                        stacklevel=2,
                    )
                row = {
                    "step": step,
                    **{k: round(v, 6) for k, v in parts.items()},
                    "effective_rank": round(report["effective_rank"], 3),
                    "z_std_min": round(report["z_std_min"], 6),
                    "collapsed": int(report["collapsed"]),
                    "lr": sched.get_last_lr()[0],
                    "seconds": round(time.perf_counter() - start, 2),
                }
                if writer is None:
                    writer = csv.DictWriter(log, fieldnames=list(row))
                    if log.tell() == 0:  # a new log; a resumed one has its header
                        writer.writeheader()
                writer.writerow(row)
                log.flush()
                bar.set_postfix(loss=f"{parts['loss']:.4f}", rank=row["effective_rank"])
            if (step + 1) % cfg.checkpoint_every == 0 and step < cfg.steps - 1:
                save_train_state(out / TRAIN_STATE, identity, step, model, opt, sched, gen)
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
    save_train_state(out / TRAIN_STATE, identity, cfg.steps - 1, model, opt, sched, gen)
    return save_checkpoint(model, out, meta)


TRAIN_STATE = "train_state.pt"


def save_train_state(
    path: Path, identity: dict[str, str], step: int, model, opt, sched, gen
) -> None:
    """Everything a resumed run needs to continue bit for bit, written atomically (plain
    tensors and numbers only, so it loads with ``weights_only=True``)."""
    state = {
        "identity": identity,
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_train_state(path: Path, identity: dict[str, str], model, opt, sched, gen) -> int:
    """Restore a state written by :func:`save_train_state`; return its step."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file raises many types
        raise CheckpointError(f"cannot resume from {str(path)!r}: {e}") from None
    for key, value in identity.items():
        if state.get("identity", {}).get(key) != value:
            raise CheckpointError(
                f"{str(path)!r} was written for another {key} than this run's; resume with the "
                f"same dataset and config, or train into a new out="
            )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """Drop the log rows of steps after ``step`` (written before a crash, to be redone)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= step]
    tmp = path.with_suffix(".partial")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)
