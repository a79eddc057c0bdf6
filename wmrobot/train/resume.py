"""The resumable training state (``train_state.pt``): what it holds, and the run it belongs to."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from wmrobot.datasets import EpisodeStore
from wmrobot.errors import CheckpointError
from wmrobot.files import write_atomically
from wmrobot.model.checkpoint import load_tensors

TRAIN_STATE = "train_state.pt"
# Settings that change how a run is watched or where it runs, not the numbers it computes.
NOT_IDENTITY = ("log_every", "checkpoint_every", "tensorboard", "device", "amp", "compile")


def run_identity(store: EpisodeStore, model_cfg: Any, train_cfg: Any) -> dict[str, str]:
    """What a resumed run must share with the saved one: dataset, model and training config."""
    train = {k: v for k, v in asdict(train_cfg).items() if k not in NOT_IDENTITY}
    return {
        "dataset": store.fingerprint(),
        "model": json.dumps(asdict(model_cfg), sort_keys=True),
        "train": json.dumps(train, sort_keys=True),
    }


def save_train_state(
    path: Path,
    identity: dict[str, str],
    step: int,
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    extra: Any = None,
) -> None:
    """Everything a resumed run needs to continue bit for bit, written atomically (plain
    tensors and numbers only, so it loads with ``weights_only=True``); ``extra.state_dict()``
    too, when given (running statistics of an update)."""
    state = {
        "identity": identity,
        "step": step,
        "model": model.state_dict(),
        "optimizer": [o.state_dict() for o in optimizers],
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "extra": extra.state_dict() if extra is not None else {},
    }
    write_atomically(path, lambda f: torch.save(state, f))


def load_train_state(
    path: Path,
    identity: dict[str, str],
    model: torch.nn.Module,
    optimizers: list[torch.optim.Optimizer],
    sched: torch.optim.lr_scheduler.LRScheduler,
    gen: torch.Generator,
    extra: Any = None,
) -> int:
    """Restore a state written by :func:`save_train_state`; return its step."""
    state = load_tensors(path, f"cannot resume from {str(path)!r}")
    for key, value in identity.items():
        if state.get("identity", {}).get(key) != value:
            raise CheckpointError(
                f"{str(path)!r} was written for another {key} than this run's; resume with the "
                f"same dataset and config, or train into a new out="
            )
    model.load_state_dict(state["model"])
    for o, saved in zip(optimizers, state["optimizer"], strict=True):
        o.load_state_dict(saved)
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if extra is not None:
        extra.load_state_dict(state.get("extra", {}))
    return int(state["step"])
