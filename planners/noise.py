"""The sampling noise of one planning decision, drawn in NumPy so every backend uses the same."""

from __future__ import annotations

import colorednoise
import numpy as np


def draw_noise(
    rng: np.random.Generator,
    iterations: int,
    batch: int,
    samples: int,
    horizon: int,
    action_dim: int,
    beta: float = 0.0,
) -> np.ndarray:
    """Unit-variance noise (iterations, batch, samples, horizon, action_dim), float32, C order.

    White for ``beta == 0``; for ``beta > 0`` colored along the horizon axis, with power
    spectrum 1/f^beta (iCEM's pink/red noise: smoother action sequences as beta grows).
    The torch and Numba backends both consume this array, so one seed gives one plan.
    """
    if beta == 0:
        return rng.standard_normal((iterations, batch, samples, horizon, action_dim), np.float32)
    # colorednoise colours the last axis: draw with time last, then move it to its place.
    noise = colorednoise.powerlaw_psd_gaussian(
        beta, (iterations, batch, samples, action_dim, horizon), random_state=rng
    )
    return np.ascontiguousarray(np.swapaxes(noise, -1, -2), dtype=np.float32)
