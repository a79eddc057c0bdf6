"""Anti-collapse terms (VICReg variance and covariance) and collapse diagnostics for embeddings."""

from __future__ import annotations

import torch


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


@torch.no_grad()
def effective_rank(z: torch.Tensor) -> float:
    """exp(entropy) of the normalised singular values of centred (N, D) embeddings; 1: collapse."""
    s = torch.linalg.svdvals(z - z.mean(dim=0))
    p = s / s.sum().clamp_min(1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))


@torch.no_grad()
def collapse_report(z: torch.Tensor) -> dict[str, float]:
    """Diagnostics of (N, D) embeddings: the smallest and mean per-dimension std, the effective
    rank, and ``collapsed`` (1.0 when the embeddings span under a tenth of their dimensions, at
    least 1.5, or some dimension carries no variance at all; else 0.0)."""
    std = z.std(dim=0)
    rank = effective_rank(z)
    collapsed = rank < max(1.5, 0.1 * z.shape[1]) or float(std.min()) < 1e-4
    return {
        "z_std_min": float(std.min()),
        "z_std_mean": float(std.mean()),
        "effective_rank": rank,
        "collapsed": float(collapsed),
    }
