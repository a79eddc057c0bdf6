"""Action-conditioned latent dynamics: residual MLP, GRU and small causal transformer predictors.

Every predictor is teacher-forced as ``forward(z (B, T, D), a (B, T, A)) -> (B, T, D)``, whose
output t predicts z_{t+1} from z_{<=t} and a_{<=t} only, and rolled out one step at a time with
``state = init_state(z0)``, ``z_next, state = step(z, a, state)``; :meth:`Predictor.rollout`
chains the steps. Fed the true latents, ``step`` reproduces ``forward`` exactly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wmrobot.errors import ConfigError
from wmrobot.model.layers import mlp

PREDICTOR_KINDS = ("mlp", "gru", "transformer")


class Predictor(nn.Module):
    """The common interface; subclasses define ``forward``, ``init_state`` and ``step``."""

    def init_state(self, z0: torch.Tensor) -> Any:
        """The recurrent state before the first step from ``z0`` (B, D)."""
        raise NotImplementedError

    def step(self, z: torch.Tensor, a: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One step: z (B, D), a (B, A), state -> z_next (B, D), the next state."""
        raise NotImplementedError

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Imagine ``H`` steps: z0 (B, D), actions (B, H, A) -> latents (B, H, D)."""
        state, z, zs = self.init_state(z0), z0, []
        for t in range(actions.shape[1]):
            z, state = self.step(z, actions[:, t], state)
            zs.append(z)
        return torch.stack(zs, dim=1)


class MLPPredictor(Predictor):
    """z' = z + net([z, a]) with ``net`` the plain :func:`mlp` (exported layer by layer);
    memoryless, so ``forward`` takes any leading dims and the state is None."""

    def __init__(self, latent_dim: int, action_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.net = mlp(latent_dim + action_dim, hidden, latent_dim, depth)

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return z + self.net(torch.cat([z, a], dim=-1))

    def init_state(self, z0: torch.Tensor) -> None:
        return None

    def step(self, z: torch.Tensor, a: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return self.forward(z, a), None


class GRUPredictor(Predictor):
    """h_t = GRU(embed([z_t, a_t]), h_{t-1}) from h_{-1} = 0; z_{t+1} = z_t + head(h_t).

    ``embed`` is an :func:`mlp` with ``depth - 1`` hidden layers; the state is h (B, hidden).
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.embed = mlp(latent_dim + action_dim, hidden, hidden, depth - 1)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, latent_dim)

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.embed(torch.cat([z, a], dim=-1)))
        return z + self.head(h)

    def init_state(self, z0: torch.Tensor) -> torch.Tensor:
        return z0.new_zeros(z0.shape[0], self.gru.hidden_size)

    def step(
        self, z: torch.Tensor, a: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(torch.cat([z, a], dim=-1)).unsqueeze(1)
        _, h = self.gru(x, state.unsqueeze(0))
        h = h[0]
        return z + self.head(h), h


class CausalBlock(nn.Module):
    """Pre-LayerNorm transformer block: causal multi-head self-attention, then a 2x-wide ReLU MLP
    (half the usual 4x, and ReLU rather than GELU, both cheaper on CPU, where rollouts run it
    thousands of times per plan)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.out = (
            nn.Linear(dim, dim),
            nn.Linear(dim, 2 * dim),
            nn.Linear(dim, dim),
        )
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(N, L, E) -> (N, L, E), or (N, 1, E) for the last token alone when ``last_only``."""
        n, length, dim = x.shape
        h = self.norm1(x)
        if last_only:  # the last token sees every token: no mask needed
            x, h_q = x[:, -1:], h[:, -1:]
        else:
            h_q = h
        q = self.q(h_q).view(n, -1, self.heads, dim // self.heads).transpose(1, 2)
        k, v = self.kv(h).view(n, length, 2, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only)
        x = x + self.out(att.transpose(1, 2).reshape(n, -1, dim))
        return x + self.ffn(self.norm2(x))


class TransformerPredictor(Predictor):
    """A causal transformer over the last ``history`` tokens embed([z_s, a_s]) (dim ``hidden``,
    ``depth`` blocks, ``heads`` heads, learned positions counted from the window's oldest
    token); z_{t+1} = z_t + head(last token's output).

    Each prediction sees a window of at most ``history`` tokens, both in ``forward`` (sequences
    longer than ``history`` are cut into sliding windows) and in ``step``, whose state is the
    window of tokens (B, <= history, hidden).
    """

    def __init__(
        self,
        latent_dim: int,
        action_dim: int,
        hidden: int,
        depth: int,
        history: int,
        heads: int = 4,
    ) -> None:
        super().__init__()
        if hidden % heads:
            raise ConfigError(
                f"transformer predictor: hidden={hidden} is not divisible by {heads} heads; "
                f"use a multiple of {heads}"
            )
        self.history = history
        self.embed = nn.Linear(latent_dim + action_dim, hidden)
        self.position = nn.Parameter(0.02 * torch.randn(history, hidden))
        self.blocks = nn.ModuleList(CausalBlock(hidden, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, latent_dim)

    def _delta(self, tokens: torch.Tensor, last_only: bool) -> torch.Tensor:
        """Windows of tokens (N, L <= history, E) -> latent changes (N, L or 1, D)."""
        x = tokens + self.position[: tokens.shape[1]]
        for i, block in enumerate(self.blocks):
            x = block(x, last_only=last_only and i == len(self.blocks) - 1)
        return self.head(self.norm(x))

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(torch.cat([z, a], dim=-1))
        b, t, h = z.shape[0], z.shape[1], self.history
        deltas = [self._delta(tokens[:, :h], last_only=False)]
        if t > h:  # the window ending at s holds tokens s-h+1..s, for s = h..T-1
            windows = tokens.unfold(1, h, 1)[:, 1:].transpose(2, 3).reshape(b * (t - h), h, -1)
            deltas.append(self._delta(windows, last_only=True).view(b, t - h, -1))
        return z + torch.cat(deltas, dim=1)

    def init_state(self, z0: torch.Tensor) -> torch.Tensor:
        return z0.new_zeros(z0.shape[0], 0, self.embed.out_features)

    def step(
        self, z: torch.Tensor, a: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        token = self.embed(torch.cat([z, a], dim=-1)).unsqueeze(1)
        kept = state[:, max(state.shape[1] + 1 - self.history, 0) :]
        window = torch.cat([kept, token], dim=1)
        return z + self._delta(window, last_only=True)[:, 0], window


def make_predictor(
    kind: str, latent_dim: int, action_dim: int, hidden: int, depth: int, history: int = 8
) -> Predictor:
    """The predictor of ``kind`` ("mlp", "gru" or "transformer"); ``history`` is the
    transformer's context in steps."""
    if kind not in PREDICTOR_KINDS:
        raise ConfigError(
            f"unknown predictor kind {kind!r}; choose one of {', '.join(PREDICTOR_KINDS)}"
        )
    for name, value, low in [("depth", depth, int(kind != "mlp")), ("history", history, 1)]:
        if value < low:
            raise ConfigError(f"predictor {name}={value} must be >= {low} for kind '{kind}'")
    if kind == "mlp":
        return MLPPredictor(latent_dim, action_dim, hidden, depth)
    if kind == "gru":
        return GRUPredictor(latent_dim, action_dim, hidden, depth)
    return TransformerPredictor(latent_dim, action_dim, hidden, depth, history)
