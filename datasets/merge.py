"""Merge datasets of the same env into one (e.g. one dataset per cluster job, then merge)."""

from __future__ import annotations

import itertools

from wmrobot.datasets.store import EpisodeStore, dataset_exists, normalise_path
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
            ("factors of variation", first.factor_names, store.factor_names),
        ):
            if a != b:
                raise DatasetError(
                    f"cannot merge {store.path!r} into {first.path!r}: their {what} differ "
                    f"({b} vs {a})"
                )
    # Kept aside until sealed: a merge that fails or is killed leaves no dataset at ``out``.
    merged = EpisodeStore.create(
        out,
        env=first.attrs["env"],
        spaces=first.attrs["spaces"],
        row_shapes=layout,
        collector={
            "merged_from": [
                {"path": str(s.path), "fingerprint": f, "collector": s.attrs["collector"]}
                for s, f in zip(stores, prints, strict=True)
            ]
        },
        factors=first.attrs.get("factors"),
        sealed=False,
    )
    try:
        for store in stores:
            episodes = store.iter_episodes(batch=BATCH)
            while chunk := list(itertools.islice(episodes, BATCH)):
                merged.append(chunk)
        merged.finalize_stats()
        merged.shrink()  # before the seal: the finished dataset reads right with plain zarr
        merged.seal()
        merged.close()
    except BaseException:
        merged.discard()
        raise
    return EpisodeStore.open(out)


def _layout(store: EpisodeStore) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(store.array(k).shape[1:]), str(store.array(k).dtype)) for k in store.keys}
