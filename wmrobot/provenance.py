"""Provenance recorded in every artifact: package versions and the code's git revision."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path


def versions() -> dict[str, str]:
    """Versions of the packages whose behaviour a dataset or checkpoint depends on."""
    out = {"python": platform.python_version()}
    for name in ("wmrobot", "mujoco", "gymnasium", "zarr", "numpy", "torch", "stable-baselines3"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    """The commit of the checkout wmrobot runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
