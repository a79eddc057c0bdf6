"""Merge datasets of the same env into one (e.g. one dataset per cluster job, then merge)."""

from __future__ import annotations

import os
import uuid

import numpy as np

from wmrobot.datasets.store import EpisodeStore, _is_local, dataset_exists, normalise_path
from wmrobot.errors import DatasetError

BATCH = 256  # episodes per append: one commit each


def merge(out: str, sources: list[str]) -> EpisodeStore:
    """Copy every committed episode of ``sources``, in order, into a new dataset ``out``.

    All sources must share the env (id and kwargs), the spaces and the row layout. The new
    dataset records where each part came from (path, fingerprint, collector).
    """
    if len(sources) < 2:
        raise DatasetError(f"merge needs two or more datasets, got {len(sources)}")
    out = normalise_path(out)
    if dataset_exists(out):
        raise DatasetError(f"{out!r} already exists; merge into a new path")
    stores = [EpisodeStore.open(s) for s in sources]
    prints = [s.fingerprint() for s in stores]
    if len(set(prints)) < len(prints):
        raise DatasetError("the same dataset is given twice; merge distinct datasets")
    first = stores[0]
    layout = _layout(first)
    for store in stores[1:]:
        for what, a, b in (
            ("env", first.attrs["env"]["id"], store.attrs["env"]["id"]),
            ("env kwargs", first.attrs["env"]["kwargs"], store.attrs["env"]["kwargs"]),
            ("spaces", first.attrs["spaces"], store.attrs["spaces"]),
            ("row layout", layout, _layout(store)),
        ):
            if a != b:
                raise DatasetError(
                    f"cannot merge {store.path!r} into {first.path!r}: their {what} differ "
                    f"({b} vs {a})"
                )
    # Built aside and renamed into place at the end (locally): a merge that fails or is
    # killed leaves nothing at ``out``.
    build = f"{out}.merging-{uuid.uuid4().hex[:8]}" if _is_local(out) else out
    merged = EpisodeStore.create(
        build,
        env=first.attrs["env"],
        spaces=first.attrs["spaces"],
        row_shapes=layout,
        collector={
            "merged_from": [
                {"path": str(s.path), "fingerprint": f, "collector": s.attrs["collector"]}
                for s, f in zip(stores, prints, strict=True)
            ]
        },
        sealed=False,  # a merge cut short is never taken for a dataset (at a URL too)
    )
    for store in stores:
        ends = store.episode_ends
        for lo in range(0, store.n_episodes, BATCH):
            hi = min(lo + BATCH, store.n_episodes)
            row_lo, row_hi = store.episode_bounds(lo)[0], int(ends[hi - 1])
            rows = {k: store.array(k)[row_lo:row_hi] for k in store.keys}
            bounds = np.concatenate([[row_lo], ends[lo:hi]]) - row_lo
            meta = {k: store.meta(k)[lo:hi] for k in ("seed", "return", "success")}
            merged.append(
                [
                    {
                        **{k: v[bounds[i] : bounds[i + 1]] for k, v in rows.items()},
                        **{k: v[i] for k, v in meta.items()},
                    }
                    for i in range(hi - lo)
                ]
            )
    merged.finalize_stats()
    merged.seal()
    if build != out:
        os.rename(build, out)
    return EpisodeStore.open(out)


def _layout(store: EpisodeStore) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(store.array(k).shape[1:]), str(store.array(k).dtype)) for k in store.keys}
