"""Whether a collection fits on its disk: its size estimated from its first episode, once."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np

from wmrobot.datasets.store import (
    BLOSC_CLEVEL,
    BLOSC_CNAME,
    _array_specs,
    episode_row_shapes,
    is_local,
    normalise_path,
)
from wmrobot.errors import DatasetError
from wmrobot.files import existing_ancestor, human_bytes

# A collection is refused when its estimate exceeds this share of the free space: the estimate
# comes from one episode, later ones compress differently, and the rest of the system (logs,
# checkpoints, the dataset's temporary files) needs some of the disk too.
FREE_SHARE = 0.9

log = logging.getLogger(__name__)


def episode_bytes(episode: Mapping[str, Any]) -> int:
    """The bytes ``episode`` (as :meth:`EpisodeStore.append` takes it) adds to a dataset: its
    rows encoded with the dataset's codecs (Blosc LZ4 and the shuffle of ``_array_specs``),
    plus its per-episode entries, stored as they are."""
    import numcodecs

    names = list(episode.get("factors") or {})
    total = 0
    for spec in _array_specs(episode_row_shapes(episode), {"names": names} if names else None):
        itemsize = np.dtype(spec.dtype).itemsize
        group, key = spec.name.split("/", 1)
        if group == "meta":  # a few numbers per episode, in chunks of a thousand episodes
            total += itemsize * int(np.prod(spec.shape[1:]))
            continue
        blosc = numcodecs.Blosc(
            cname=BLOSC_CNAME,
            clevel=BLOSC_CLEVEL,
            shuffle=getattr(numcodecs.Blosc, spec.shuffle.upper()),
            typesize=itemsize,
        )
        total += len(blosc.encode(np.ascontiguousarray(episode[key], dtype=spec.dtype)))
    return total


def check_space(
    path: str,
    first: Mapping[str, Any],
    episodes: int | None = None,
    steps: int | None = None,
    resuming: bool = False,
) -> None:
    """Raise :class:`DatasetError` unless collecting ``episodes`` episodes (or ``steps``
    transitions) like ``first`` into the local dataset ``path`` fits in
    :data:`FREE_SHARE` of its disk's free space; for a URL, say that no check is made."""
    if not is_local(path):
        log.warning(f"{path}: no free-space check is made for a dataset at a URL")
        return
    per_episode = episode_bytes(first)
    if steps is not None:
        transitions = len(first["action"]) - 1
        count, unit = steps, "steps"
        estimate = steps * per_episode / max(transitions, 1)
        basis = f"{human_bytes(per_episode)} compressed for {transitions} steps"
    else:
        assert episodes is not None
        count, unit = episodes, "episodes"
        estimate = episodes * per_episode
        basis = f"{human_bytes(per_episode)} compressed"
    where = existing_ancestor(normalise_path(path))
    free = shutil.disk_usage(where).free
    if estimate > FREE_SHARE * free:
        more = "more " if resuming else ""
        raise DatasetError(
            f"collecting {count:,} {more}{unit} would take about {human_bytes(estimate)} (from the "
            f"first episode: {basis}), but {where} has {human_bytes(free)} free; collect fewer "
            f"episodes or steps, or into a larger disk"
        )
