"""Normalisation statistics: quantiles as NumPy's, the counted rows as columns."""

from __future__ import annotations

import numpy as np
import pytest

from wmrobot.datasets.stats import quantiles, stat_columns


@pytest.mark.parametrize("n", [1, 2, 3, 100, 1001, 4099])
def test_quantiles_equal_numpys(n, rng):
    x = rng.normal(size=(7, n))
    x[1] = np.round(x[1])  # ties
    x[2, n // 2] = np.nan  # a row holding NaN
    x[3] = 7.0  # constant
    x[4, 0], x[5, -1] = -np.inf, np.inf
    qs = (0.0, 0.01, 0.25, 0.5, 0.99, 1.0)
    before = x.copy()
    got = quantiles(x, qs)
    np.testing.assert_array_equal(x, before)  # a copy is sorted, not the caller's array
    for q, values in zip(qs, got, strict=True):
        with np.errstate(invalid="ignore"):  # NumPy warns of inf - inf
            np.testing.assert_array_equal(values, np.quantile(x, q, axis=1))
    in_place = quantiles(x, qs, overwrite_input=True)
    np.testing.assert_array_equal(in_place, got)
    np.testing.assert_array_equal(x, np.sort(before, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.int64, np.bool_])
def test_quantiles_of_other_dtypes_are_those_of_their_float64_values(dtype, rng):
    # within 0-255 for the bytes; for booleans a mix, so that q01 and q99 differ
    x = (rng.normal(size=(3, 501)) * 40 + 128).clip(0, 255).astype(dtype)
    if dtype == np.bool_:
        x = rng.random((3, 501)) < 0.5
    for values, q in zip(quantiles(x, (0.01, 0.99)), (0.01, 0.99), strict=True):
        assert values.dtype == np.float64
        np.testing.assert_array_equal(values, np.quantile(x.astype(np.float64), q, axis=1))


def test_stat_columns_are_the_counted_rows_feature_by_feature(make_episode, rng):
    episodes = [make_episode(t, rng) for t in (4, 2)]
    columns = stat_columns(episodes, ["obs", "action", "reward"])
    for key in ("obs", "action", "reward"):
        rows = [e[key][:-1] if key != "obs" else e[key] for e in episodes]
        expected = np.concatenate(rows).reshape(sum(len(r) for r in rows), -1).T
        assert columns[key].dtype == episodes[0][key].dtype and columns[key].flags.c_contiguous
        np.testing.assert_array_equal(columns[key], expected)
