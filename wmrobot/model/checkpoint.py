"""A model directory: ``model.pt`` (tensors only) and ``meta.json`` (config, provenance)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

import torch

from wmrobot.errors import CheckpointError, refused_pickle
from wmrobot.files import write_atomically
from wmrobot.provenance import git_revision, versions

WEIGHTS = "model.pt"
META = "meta.json"
# Everything a model directory may hold: the model, training's log and state (train/metrics.py,
# train/resume.py) and an agent's settings (agent.py).
MODEL_DIR_FILES = {WEIGHTS, META, "metrics.csv", "tb", "train_state.pt", "agent.json"}


def check_model_dir(directory: str | Path) -> None:
    """Refuse, in one line, to write a model into ``directory`` when it is a file or holds
    anything a model directory does not (``MODEL_DIR_FILES``, and the ``*.partial`` files of a
    crash): a model is written over a model directory's files, never over anything else."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{str(directory)!r} is a file; save the model into a folder")
    found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    other = [n for n in found if n not in MODEL_DIR_FILES and not n.endswith(".partial")]
    if other:
        raise CheckpointError(
            f"{str(directory)!r} holds files that are not a model's ({', '.join(other[:3])}); "
            f"save into a new or empty folder, or over a model directory"
        )


def write_model_dir(
    directory: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``state`` to ``model.pt`` and ``meta`` to ``meta.json``, each atomically.

    Provenance (package versions, git revision, creation time) is added where ``meta`` has
    none, so a re-saved model keeps the provenance of the run that trained it."""
    directory = Path(directory)
    check_model_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    provenance = {
        "versions": versions(),
        "git_revision": git_revision(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta = {**provenance, **meta}
    write_atomically(directory / WEIGHTS, lambda f: torch.save(state, f))
    write_atomically(directory / META, lambda f: f.write(json.dumps(meta, indent=2).encode()))
    return directory


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The parsed ``meta.json`` of a model directory."""
    directory = Path(directory)
    if not (directory / WEIGHTS).is_file() or not (directory / META).is_file():
        raise CheckpointError(
            f"{str(directory)!r} is not a checkpoint directory (needs {WEIGHTS} and {META}); "
            f"make one with `wmrobot train`"
        )
    try:
        return json.loads((directory / META).read_text())
    except ValueError as e:  # bad JSON or bytes that are not text
        raise CheckpointError(f"{str(directory / META)!r} is malformed: {e}") from None


def read_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.pt`` (:func:`load_tensors`)."""
    path = Path(directory) / WEIGHTS
    return load_tensors(path, f"cannot read {str(path)!r}")


def load_tensors(path: Path, failure: str) -> Any:
    """``torch.load`` with ``weights_only=True``, the one way wmrobot reads a torch file: it
    never runs code from the file. A file it refuses, or cannot read, is a one-line
    :class:`CheckpointError` (``failure``: what could not be done, for the latter)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files raise many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(refused_pickle(path, e) or f"{failure}: {first}") from None
