"""Normalisation statistics of rows: running moments at each commit, quantiles at the end."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

STD_FLOOR = 1e-6  # standardising by the stored stats divides by max(std, STD_FLOOR)


def stat_columns(episodes: list[Mapping[str, Any]], keys: list[str]) -> dict[str, np.ndarray]:
    """Per key, the rows of ``episodes`` that the statistics count (final-row actions and
    rewards, which are NaN and 0, left out) as columns: a (features, rows) array in the rows'
    own dtype, C order. Each feature's values lie contiguous, where reductions and sorts run
    fastest."""
    out = {}
    for key in keys:
        parts = [np.asarray(ep[key]) for ep in episodes]
        if key in ("action", "reward"):
            parts = [p[:-1] for p in parts]
        features = int(np.prod(parts[0].shape[1:]))
        columns = np.empty((features, sum(len(p) for p in parts)), dtype=np.result_type(*parts))
        at = 0
        for p in parts:
            columns[:, at : at + len(p)] = p.reshape(len(p), -1).T
            at += len(p)
        out[key] = columns
    return out


def as_columns(rows: np.ndarray) -> np.ndarray:
    """Rows (N, ...) as C-ordered (features, N) columns, as :func:`stat_columns` gives them."""
    return np.ascontiguousarray(rows.reshape(len(rows), -1).T)


def quantiles(
    columns: np.ndarray, qs: Iterable[float], overwrite_input: bool = False
) -> list[np.ndarray]:
    """Each row of ``columns``' ``qs`` quantiles, as float64: the values of
    ``np.quantile(columns.astype(np.float64), q, axis=1)`` (its default, linear interpolation;
    NaN for a row holding NaN), from one sort, of a copy unless ``overwrite_input``. NumPy sorts
    floats with SIMD, faster than ``np.quantile`` partitions them at the four ranks it needs,
    and ``np.quantile`` loads ``numpy.ma`` on first use."""
    if overwrite_input:
        columns.sort(axis=1)  # NaN sorts last
        ordered = columns
    else:
        ordered = np.sort(columns, axis=1)
    n = ordered.shape[1]
    nan = np.isnan(ordered[:, -1])
    out = []
    for q in qs:
        index = (n - 1) * q
        lo = int(np.floor(index))
        hi, t = min(lo + 1, n - 1), index - lo
        # the rows' own order is their float64 values' order: convert the two picked only
        a, b = ordered[:, lo].astype(np.float64), ordered[:, hi].astype(np.float64)
        # NumPy's interpolation: from the nearer end, so that t = 0 and t = 1 give a and b
        # (and between infinities NaN, as NumPy gives, without its warning)
        with np.errstate(invalid="ignore"):
            value = a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)
        out.append(np.where(nan, np.nan, value))
    return out


def merge_moments(moments: Mapping[str, Any], columns: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Running count, sum, sum of squares, min and max per key (float64, per feature), with
    ``columns`` (:func:`stat_columns`) counted in."""
    out = dict(moments)
    for key, x in columns.items():
        old = moments.get(key)
        new = {  # summed in float64, whatever the rows' own dtype
            "n": x.shape[1],
            "sum": x.sum(1, dtype=np.float64),
            "sumsq": np.einsum("ij,ij->i", x, x, dtype=np.float64),
            "min": x.min(1).astype(np.float64),
            "max": x.max(1).astype(np.float64),
        }
        if old:
            new = {
                "n": old["n"] + new["n"],
                "sum": np.add(old["sum"], new["sum"]),
                "sumsq": np.add(old["sumsq"], new["sumsq"]),
                "min": np.minimum(old["min"], new["min"]),
                "max": np.maximum(old["max"], new["max"]),
            }
        out[key] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in new.items()}
    return out


def stats_from_moments(moments: Mapping[str, Any]) -> dict[str, Any]:
    """Mean, std, min, max from running moments. Quantiles need every row, so a commit drops
    them; :meth:`wmrobot.datasets.store.EpisodeStore.finalize_stats` adds them back."""
    stats = {}
    for key, m in moments.items():
        mean = np.asarray(m["sum"]) / m["n"]
        var = np.maximum(np.asarray(m["sumsq"]) / m["n"] - mean**2, 0.0)
        stats[key] = {
            "mean": mean.tolist(),
            "std": np.sqrt(var).tolist(),
            "min": list(m["min"]),
            "max": list(m["max"]),
        }
    return stats
