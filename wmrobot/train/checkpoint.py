"""Checkpoint directories: weights (loaded with weights_only=True), config and provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from wmrobot.errors import CheckpointError
from wmrobot.files import write_atomically
from wmrobot.model.world_model import ModelConfig, WorldModel

WEIGHTS = "model.pt"
META = "meta.json"


def save_checkpoint(model: WorldModel, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``model.pt`` and ``meta.json`` into ``directory``, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / WEIGHTS, lambda f: torch.save(model.state_dict(), f))
    meta = {**meta, "model": model.config_dict()}
    write_atomically(directory / META, lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return directory


def load_checkpoint(directory: str | Path) -> tuple[WorldModel, dict[str, Any]]:
    """The model and its metadata; never executes code from the files."""
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / META).is_file():
        raise CheckpointError(
            f"{str(directory)!r} is not a checkpoint directory (needs {WEIGHTS} and {META}); "
            f"make one with `wmrobot train`"
        )
    try:
        meta = json.loads((directory / META).read_text())
        spec = dict(meta["model"])
        obs_dim, action_dim = spec.pop("obs_dim"), spec.pop("action_dim")
        image_shape = spec.pop("image_shape", None)
        model = WorldModel(obs_dim, action_dim, ModelConfig(**spec), image_shape=image_shape)
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{str(directory / META)!r} is malformed: {e}") from None
    try:
        state = torch.load(directory / WEIGHTS, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files raise many types
        raise CheckpointError(f"cannot read {str(directory / WEIGHTS)!r}: {e}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(
            f"{str(directory / WEIGHTS)!r} does not match its model config: {first}"
        ) from None
    model.eval()
    return model, meta
