"""Checkpoint directories as the CLI and agent use them: a :class:`WorldModel` and its metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wmrobot.model.world_model import WorldModel


def save_checkpoint(model: WorldModel, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``model.pt`` and ``meta.json`` into ``directory`` (:meth:`WorldModel.save`)."""
    return model.save(directory, meta)


def load_checkpoint(directory: str | Path) -> tuple[WorldModel, dict[str, Any]]:
    """The model and its metadata; never executes code from the files."""
    model = WorldModel.load(directory)
    return model, model.meta
