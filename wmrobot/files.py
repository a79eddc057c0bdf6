"""Writing a file so that a crash leaves its old contents or its new ones, never a torn mix."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: Path, write: Callable[[BinaryIO], object], sync: bool = True) -> None:
    """Write ``path`` through ``write(f)`` into ``<name>.partial`` beside it, then rename that
    over ``path`` (atomic on POSIX and Windows). ``sync`` flushes it to disk before the rename,
    so that it also survives a power cut, not only a killed process; a reader that tolerates
    the loss of a rename's last seconds (a dataset's chunks, behind their commit) skips that.
    Left-over ``*.partial`` files are what a crash mid-write leaves."""
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        write(f)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def existing_ancestor(path: str | os.PathLike) -> Path:
    """``path`` if it exists, else its nearest ancestor that does (where making it starts)."""
    path = Path(path).absolute()
    return next(p for p in (path, *path.parents) if p.exists())


def human_bytes(n: float) -> str:
    """A byte count in binary units: ``512 B``, ``3.2 KiB``, ``71 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            break
        n /= 1024
    return f"{n:.1f} {unit}" if unit != "B" and n < 10 else f"{n:.0f} {unit}"
