"""Compiled copies of small MLPs for one-sample inference: a Mode-1 decision in microseconds.

For a batch of one, torch spends most of a small MLP's time in per-operator dispatch (about
10 us per op, some 40 ops per decision); one Numba function on the same float32 weights
runs the whole network without returning to Python.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import nn

from wmrobot.datasets.store import STD_FLOOR


class NumpyMLP:
    """An :func:`~wmrobot.model.world_model.mlp` (``depth`` x [Linear, LayerNorm, ReLU], then
    Linear) as float32 arrays, run by one Numba-compiled function.

    ``NumpyMLP(net)(x)`` equals ``net(torch.as_tensor(x))`` up to float32 rounding; x (B, I).
    Any other layer pattern raises ``TypeError`` (the caller then keeps torch).
    """

    def __init__(self, net: nn.Sequential) -> None:
        layers = list(net)
        body, last = layers[:-1], layers[-1] if layers else None
        pattern = [nn.Linear, nn.LayerNorm, nn.ReLU] * (len(body) // 3)
        if (
            not isinstance(last, nn.Linear)
            or len(body) % 3
            or any(not isinstance(m, t) for m, t in zip(body, pattern, strict=True))
        ):
            raise TypeError("NumpyMLP runs [Linear, LayerNorm, ReLU] x depth + Linear only")

        def arr(t: torch.Tensor | None, n: int, fill: float) -> np.ndarray:
            if t is None:
                return np.full(n, fill, np.float32)
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        self.weights, self.biases, self.gammas, self.betas, eps = [], [], [], [], []
        for i in range(0, len(body), 3):
            linear, norm = body[i], body[i + 1]
            self.weights.append(arr(linear.weight, 0, 0))
            self.biases.append(arr(linear.bias, linear.out_features, 0.0))
            self.gammas.append(arr(norm.weight, linear.out_features, 1.0))
            self.betas.append(arr(norm.bias, linear.out_features, 0.0))
            eps.append(norm.eps)
        self.eps = np.asarray(eps or [0.0], np.float32)
        self.last_w, self.last_b = arr(last.weight, 0, 0), arr(last.bias, last.out_features, 0.0)
        if self.weights:
            self.weights_t = numba.typed.List(self.weights)
            self.biases_t = numba.typed.List(self.biases)
            self.gammas_t = numba.typed.List(self.gammas)
            self.betas_t = numba.typed.List(self.betas)
        else:  # numba cannot type an empty list: a dummy layer that the count skips
            z = [np.zeros((1, 1), np.float32)]
            self.weights_t = numba.typed.List(z)
            self.biases_t = self.gammas_t = self.betas_t = numba.typed.List([np.zeros(1, "f4")])
        self.depth = len(self.weights)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return _mlp_forward(
            x,
            self.depth,
            self.weights_t,
            self.biases_t,
            self.gammas_t,
            self.betas_t,
            self.eps,
            self.last_w,
            self.last_b,
        )


@numba.njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _linear(x, w, b):  # x (B, I), w (O, I), b (O,) -> (B, O)
    out = np.empty((x.shape[0], w.shape[0]), np.float32)
    for r in range(x.shape[0]):
        for o in range(w.shape[0]):
            acc = b[o]
            for i in range(w.shape[1]):
                acc += w[o, i] * x[r, i]
            out[r, o] = acc
    return out


@numba.njit(cache=True)
def _mlp_forward(x, depth, weights, biases, gammas, betas, eps, last_w, last_b):
    for layer in range(depth):
        h = _linear(x, weights[layer], biases[layer])
        n = h.shape[1]
        for r in range(h.shape[0]):
            mean = np.float32(0.0)
            for j in range(n):
                mean += h[r, j]
            mean /= n
            var = np.float32(0.0)
            for j in range(n):
                d = h[r, j] - mean
                var += d * d
            inv = np.float32(1.0) / np.sqrt(var / n + eps[layer])
            for j in range(n):
                v = (h[r, j] - mean) * inv * gammas[layer][j] + betas[layer][j]
                h[r, j] = v if v > 0 else np.float32(0.0)
        x = h
    return _linear(x, last_w, last_b)


class FastActor:
    """Mode-1 of a state world model, compiled: normalise, encode the observation and the goal
    state, run the actor, rescale to the action bounds. ``FastActor.build(model)`` returns
    None when the model is not an MLP state model with an actor (use torch then)."""

    def __init__(self, model) -> None:
        self.mean = model.obs_mean.detach().cpu().numpy().astype(np.float32)
        self.std = model.obs_std.detach().cpu().clamp_min(STD_FLOOR).numpy().astype(np.float32)
        self.encoder = NumpyMLP(model.encoder.net)
        self.actor = NumpyMLP(model.actor.net)
        low = model.action_low.detach().cpu().numpy().astype(np.float32)
        high = model.action_high.detach().cpu().numpy().astype(np.float32)
        self.mid, self.half = (high + low) / 2, (high - low) / 2
        self.predictor = None
        if getattr(model.cfg, "predictor", "mlp") == "mlp":  # z' = z + net([z, a])
            self.predictor = NumpyMLP(model.predictor.net)

    @classmethod
    def build(cls, model) -> FastActor | None:
        if model.actor is None or tuple(model.input_keys) != ("state",):
            return None
        if not isinstance(getattr(model.encoder, "net", None), nn.Sequential):
            return None
        try:
            return cls(model)
        except TypeError:  # not an mlp() pattern
            return None

    def proposal(self, z: np.ndarray, goal_z: np.ndarray, horizon: int) -> np.ndarray | None:
        """The actor's actions along its own imagined rollout (B, H, A), from latents (B, D);
        None if the predictor is not a residual MLP (use the torch rollout then)."""
        if self.predictor is None:
            return None
        z = np.ascontiguousarray(z, dtype=np.float32)
        goal_z = np.asarray(goal_z, dtype=np.float32)
        actions = np.empty((len(z), horizon, len(self.mid)), np.float32)
        for h in range(horizon):
            a = self.mid + np.tanh(self.actor(np.concatenate([z, goal_z], -1))) * self.half
            actions[:, h] = a
            z = z + self.predictor(np.concatenate([z, a], -1))
        return actions

    def encode(self, obs: np.ndarray) -> np.ndarray:
        return self.encoder((np.asarray(obs, np.float32) - self.mean) / self.std)

    def __call__(self, obs: np.ndarray, goal_obs: np.ndarray) -> np.ndarray:
        """obs (B, O), goal states (B, O) -> actions (B, A) inside the bounds."""
        n = len(obs)
        both = np.concatenate([np.asarray(obs, np.float32), np.asarray(goal_obs, np.float32)])
        z = self.encode(both)
        unit = np.tanh(self.actor(np.concatenate([z[:n], z[n:]], -1)))
        return self.mid + unit * self.half


def same_as_torch(fast: FastActor, model, obs: np.ndarray, goal_obs: np.ndarray) -> float:
    """Largest difference between the NumPy and the torch actions on these inputs."""
    with torch.no_grad():
        z = model.encode(torch.as_tensor(obs, dtype=torch.float32))
        g = model.encode(torch.as_tensor(goal_obs, dtype=torch.float32))
        ref = model.act(z, g).numpy()
    return float(np.abs(fast(obs, goal_obs) - ref).max())
