"""The shared sampling noise: seeded, unit variance, white or colored along the horizon."""

from __future__ import annotations

import numpy as np
import pytest

from wmrobot.planners import draw_noise


def lag_one_correlation(x: np.ndarray) -> float:
    """Correlation of consecutive steps along the horizon axis (axis 3)."""
    return float(np.corrcoef(x[..., :-1, :].ravel(), x[..., 1:, :].ravel())[0, 1])


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_noise_is_seeded_float32_of_the_asked_shape(beta):
    a = draw_noise(np.random.default_rng(7), 3, 2, 50, 10, 4, beta)
    assert a.shape == (3, 2, 50, 10, 4) and a.dtype == np.float32 and a.flags.c_contiguous
    assert np.array_equal(a, draw_noise(np.random.default_rng(7), 3, 2, 50, 10, 4, beta))
    assert not np.array_equal(a, draw_noise(np.random.default_rng(8), 3, 2, 50, 10, 4, beta))
    assert 0.8 < a.std() < 1.25


def test_larger_exponents_give_smoother_sequences():
    correlations = [
        lag_one_correlation(draw_noise(np.random.default_rng(0), 1, 1, 2000, 20, 2, beta))
        for beta in (0.0, 1.0, 2.0)
    ]
    assert abs(correlations[0]) < 0.05
    assert correlations[0] + 0.2 < correlations[1] < correlations[2] - 0.1


def test_colored_noise_is_independent_across_action_dimensions():
    x = draw_noise(np.random.default_rng(0), 1, 1, 2000, 20, 2, 2.0)
    assert abs(np.corrcoef(x[..., 0].ravel(), x[..., 1].ravel())[0, 1]) < 0.05
