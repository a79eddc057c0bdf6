"""Anti-collapse terms (VICReg variance and covariance, SIGReg) and collapse diagnostics."""

from __future__ import annotations

import torch

from wmrobot.errors import ConfigError

# SIGReg integrates over t in [-3, 3]: beyond, the Gaussian weight exp(-t^2/2) is below 0.011.
SIGREG_T_MAX = 3.0


def variance_loss(z: torch.Tensor, target_std: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """Hinge on each dimension's std over the batch (VICReg): (N, D) -> scalar."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return torch.relu(target_std - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances over D (VICReg): (N, D) -> scalar."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / max(n - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return off.pow(2).sum() / d


def sigreg_loss(
    z: torch.Tensor,
    directions: int | torch.Tensor = 64,
    knots: int = 17,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SIGReg (LeJEPA, Balestriero & LeCun 2025): how far (N, D) embeddings are from N(0, I).

    Projects z on M unit directions u (``directions`` M, drawn afresh from ``generator``; or a
    fixed (D, M) tensor, normalised here) and averages over them the Epps-Pulley statistic of
    each projection p = z u,

        N * integral over t of |phi_N(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt,

    with phi_N(t) = mean_n exp(i t p_n) the empirical characteristic function. The integrand is
    even in t, so it is taken on ``knots`` points of [0, 3] (trapezoid rule) and doubled.
    For z ~ N(0, I) its expectation is about 1.05 whatever N; for collapsed z it grows with N
    (about 0.41 N for constant z). Differentiable scalar.
    """
    if z.dim() != 2 or z.shape[0] < 2:
        raise ConfigError(f"sigreg_loss takes embeddings (N >= 2, D), got shape {tuple(z.shape)}")
    if knots < 2:
        raise ConfigError(f"sigreg_loss knots={knots} must be >= 2")
    n, d = z.shape
    if isinstance(directions, int):
        if directions < 1:
            raise ConfigError(f"sigreg_loss directions={directions} must be >= 1")
        device = z.device if generator is None else generator.device
        directions = torch.randn(d, directions, generator=generator, device=device)
    elif directions.dim() != 2 or directions.shape[0] != d:
        raise ConfigError(
            f"sigreg_loss directions of shape {tuple(directions.shape)} must be (D={d}, M)"
        )
    u = directions.to(z)
    u = u / u.norm(dim=0, keepdim=True).clamp_min(1e-12)
    t = torch.linspace(0.0, SIGREG_T_MAX, knots, device=z.device, dtype=z.dtype)
    phi = torch.exp(-0.5 * t**2)
    tp = (z @ u).unsqueeze(-1) * t  # (N, M, knots)
    err = (torch.cos(tp).mean(0) - phi) ** 2 + torch.sin(tp).mean(0) ** 2  # (M, knots)
    step = SIGREG_T_MAX / (knots - 1)
    trapezoid = torch.full_like(t, step)
    trapezoid[[0, -1]] = step / 2
    return n * (err @ (2 * trapezoid * phi)).mean()


@torch.no_grad()
def effective_rank(z: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of centred (N, D) embeddings; 1: collapse."""
    s = torch.linalg.svdvals(z - z.mean(dim=0))
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


# Latents whose mean std fell below this fraction of its largest value in the run are
# shrinking to a point. In benchmarks/collapse_ablation.py it flags the run without an
# anti-collapse term and with targets that carry gradient, and none of the others.
SHRINK_FRACTION = 0.2


@torch.no_grad()
def collapse_report(z: torch.Tensor, peak_std: float | None = None) -> dict[str, float]:
    """Diagnostics of (N, D) embeddings: the smallest and mean per-dimension std, the effective
    rank, and ``collapsed`` (1.0 or 0.0). Collapsed means any of: the embeddings span under a
    tenth of their dimensions (at least 1.5: dimensional collapse); some dimension carries no
    variance; or, given the largest mean std seen earlier in the run (``peak_std``), the mean
    std fell below ``SHRINK_FRACTION`` of it (``shrunk``: every dimension shrinking towards a
    point, which keeps the rank and lets the prediction loss go to 0)."""
    std = z.std(dim=0)
    rank = effective_rank(z)
    mean_std = float(std.mean())
    shrunk = peak_std is not None and mean_std < SHRINK_FRACTION * peak_std
    collapsed = rank < max(1.5, 0.1 * z.shape[1]) or float(std.min()) < 1e-4 or shrunk
    return {
        "z_std_min": float(std.min()),
        "z_std_mean": mean_std,
        "effective_rank": rank,
        "shrunk": float(shrunk),
        "collapsed": float(collapsed),
    }
