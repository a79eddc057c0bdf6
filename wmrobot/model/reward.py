"""Heads for reward tasks on the world model's latents: reward r(z, a), continuation c(z), the
action-value Q(z, a) (an ensemble with its target networks) and a Gaussian policy prior.

Scalars (rewards, values) are learnt either as a two-hot distribution over bins in symlog
space (DreamerV3, TD-MPC2: the loss does not depend on the reward's scale) or by regression
on targets divided by a fixed scale (``regression``). docs/BENCHMARKS.md has the measurement
that chose the default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from wmrobot.model.layers import mlp

SCALAR_LOSSES = ("twohot", "regression")
LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0  # the policy's log std, squashed into this range


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


class Scalar(nn.Module):
    """How one scalar is read from a head's outputs and how it is taught.

    ``twohot``: ``bins`` logits over evenly spaced points in symlog space [-limit, limit]; the
    value is symexp of their softmax-weighted mean; the loss is the cross-entropy to the
    target's two-hot encoding. ``regression``: one output times ``scale``; the loss is the
    squared error in units of ``scale``.
    """

    def __init__(self, kind: str, bins: int = 101, limit: float = 10.0, scale: float = 1.0):
        super().__init__()
        if kind not in SCALAR_LOSSES:
            raise ValueError(f"unknown scalar loss {kind!r}; choose from {SCALAR_LOSSES}")
        self.kind, self.bins, self.limit = kind, bins, limit
        self.outputs = bins if kind == "twohot" else 1
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("points", torch.linspace(-limit, limit, bins))

    def value(self, out: torch.Tensor) -> torch.Tensor:
        """Head outputs (..., outputs) -> the scalar (...)."""
        if self.kind == "regression":
            return out[..., 0] * self.scale
        return symexp((out.softmax(-1) * self.points).sum(-1))

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-element loss of outputs (..., outputs) against targets (...) -> (...)."""
        if self.kind == "regression":
            return (out[..., 0] - target / self.scale).pow(2)
        return -(self.two_hot(target) * out.log_softmax(-1)).sum(-1)

    def two_hot(self, target: torch.Tensor) -> torch.Tensor:
        """(...) -> (..., bins): weight on the two bins around symlog(target), summing to 1."""
        x = symlog(target).clamp(-self.limit, self.limit)
        step = 2 * self.limit / (self.bins - 1)
        pos = (x + self.limit) / step
        low = pos.floor().clamp(0, self.bins - 1)
        upper = (low + 1).clamp(max=self.bins - 1)
        w_up = pos - low
        out = torch.zeros(*x.shape, self.bins, dtype=x.dtype, device=x.device)
        out.scatter_(-1, low.long()[..., None], (1 - w_up)[..., None])
        out.scatter_add_(-1, upper.long()[..., None], w_up[..., None])
        return out


class QEnsemble(nn.Module):
    """``n`` action-value heads Q_i(z, a): (..., D), (..., A) -> (n, ..., outputs)."""

    def __init__(self, latent_dim: int, action_dim: int, hidden: int, depth: int, n: int, out: int):
        super().__init__()
        self.heads = nn.ModuleList(
            mlp(latent_dim + action_dim, hidden, out, depth) for _ in range(n)
        )

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z, a], dim=-1)
        return torch.stack([head(x) for head in self.heads])


class GaussianPolicy(nn.Module):
    """The policy prior pi(a | z): a Gaussian squashed by tanh into [-1, 1] (the caller scales
    it to the action bounds), as SAC and TD-MPC2 use. z (..., D) -> (mean, log_std) (..., A).
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.net = mlp(latent_dim, hidden, 2 * action_dim, depth)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(z).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(raw) + 1)
        return mean, log_std

    def sample(
        self, z: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised squashed sample u in [-1, 1] (..., A) and its entropy estimate
        -log pi(u | z) (...), per action dimension (so one coefficient fits every env)."""
        mean, log_std = self(z)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        pre = mean + eps * log_std.exp()
        u = torch.tanh(pre)
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - pre - F.softplus(-2 * pre))).sum(-1)
        return u, -log_prob / self.action_dim

    def mode(self, z: torch.Tensor) -> torch.Tensor:
        """The deterministic action tanh(mean) (..., A)."""
        return torch.tanh(self(z)[0])
