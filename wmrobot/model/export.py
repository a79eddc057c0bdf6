"""A world model as plain arrays: what compiled consumers (the Numba planners, the Mode-1 actor)
run instead of the torch modules.

The export is a plain structure (NumPy arrays, strings, floats): a consumer reads its documented
attributes and never imports this module or the model's classes (``planners/`` must not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wmrobot.datasets.stats import STD_FLOOR
from wmrobot.model.layers import COST_EPS, VALUE_EPS
from wmrobot.model.reward import LOG_STD_MAX, LOG_STD_MIN


@dataclass(frozen=True)
class Layer:
    """One layer of an exported MLP, float32 arrays.

    ``kind`` "linear": ``weight`` (out, in) as torch's, ``bias`` (out,); "layernorm" over
    the last axis: ``weight`` gamma (W,), ``bias`` beta (W,), ``eps``; "relu": no arrays. Any
    other module is exported as its class name with no arrays, for the consumer to refuse.
    """

    kind: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    eps: float = 0.0


@dataclass(frozen=True)
class ExportedModel:
    """A :class:`~wmrobot.model.world_model.WorldModel` as arrays; an MLP is a tuple of
    :class:`Layer`, or None where the part is not an ``nn.Sequential`` (or is absent).

    - rollout (``predictor_kind`` "mlp", the model's ``predictor`` config):
      z' = z + predictor([z, a]); ``predictor`` is None for other kinds.
    - cost(z, g) = latent_weight * mean((z - g)^2)
      + cost_weight * sqrt(||cost_head(z) - cost_head(g)||^2 + cost_eps).
    - value(z, g) = sqrt(||critic(z) - critic(g)||^2 + value_eps); ``critic`` None: no critic.
    - encode(obs) = encoder((obs - obs_mean) / obs_std) for a state model (``obs_std`` already
      floored); ``encoder`` None for pixel encoders.
    - act(z, g) = mid + half * tanh(actor([z, g])), (mid, half) of [action_low, action_high];
      ``actor`` None without an actor head.

    Reward tasks (``task`` "reward"; for "goal" the heads are None, ``q_heads`` empty):

    - reward(z, a) = scalar(reward_head([z, a]), reward_scale); cont(z) =
      sigmoid(continuation(z)[0]), 1 where ``continuation`` is None.
    - V(z) = mean_i scalar(q_heads[i]([z, u]), value_scale) with u = mid + half * tanh(m) and
      (m, s) = split of policy(z) in two halves of A (the mean and the raw log std).
    - the policy prior's sample: mid + half * tanh(m + eps * exp(log_std)), eps ~ N(0, 1), with
      log_std = log_std_min + (log_std_max - log_std_min) * (tanh(s) + 1) / 2.
    - scalar(out, scale): ``scalar_kind`` "regression": out[0] * scale; "twohot":
      symexp(sum(softmax(out) * points)), symexp(x) = sign(x) * (exp(|x|) - 1), ``points``
      (bins,) the bins of both scalars in symlog space.
    - the planners' discount ``gamma``.
    """

    latent_dim: int
    action_dim: int
    action_low: np.ndarray
    action_high: np.ndarray
    predictor_kind: str
    predictor: tuple[Layer, ...] | None
    cost_head: tuple[Layer, ...] | None
    latent_weight: float
    cost_weight: float
    cost_eps: float
    critic: tuple[Layer, ...] | None
    value_eps: float
    encoder: tuple[Layer, ...] | None
    obs_mean: np.ndarray
    obs_std: np.ndarray
    actor: tuple[Layer, ...] | None
    task: str
    reward_head: tuple[Layer, ...] | None
    continuation: tuple[Layer, ...] | None
    q_heads: tuple[tuple[Layer, ...], ...]
    policy: tuple[Layer, ...] | None
    scalar_kind: str | None
    points: np.ndarray
    reward_scale: float
    value_scale: float
    gamma: float
    log_std_min: float
    log_std_max: float


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy().copy()


def export_layer(layer: nn.Module) -> Layer:
    """One module as a :class:`Layer` (affine parts a module omits become ones and zeros)."""
    if isinstance(layer, nn.Linear):
        bias = layer.bias if layer.bias is not None else torch.zeros(layer.out_features)
        return Layer("linear", _array(layer.weight), _array(bias))
    if isinstance(layer, nn.LayerNorm):
        width = layer.normalized_shape
        gamma = layer.weight if layer.weight is not None else torch.ones(width)
        beta = layer.bias if layer.bias is not None else torch.zeros(width)
        return Layer("layernorm", _array(gamma), _array(beta), float(layer.eps))
    if isinstance(layer, nn.ReLU):
        return Layer("relu")
    return Layer(type(layer).__name__)


def export_mlp(net: nn.Module | None) -> tuple[Layer, ...] | None:
    """The layers of ``net`` in order, or None if it is not an ``nn.Sequential``."""
    if not isinstance(net, nn.Sequential):
        return None
    return tuple(export_layer(layer) for layer in net)


def export_model(model: nn.Module) -> ExportedModel:
    """The plain arrays of a WorldModel (see :class:`ExportedModel` for what each computes)."""
    cfg = model.cfg
    predictor = getattr(model.predictor, "net", None) if cfg.predictor == "mlp" else None
    critic, actor = model.critic, model.actor
    reward = model.task == "reward"
    return ExportedModel(
        latent_dim=model.latent_dim,
        action_dim=model.action_dim,
        action_low=_array(model.action_low),
        action_high=_array(model.action_high),
        predictor_kind=cfg.predictor,
        predictor=export_mlp(predictor),
        cost_head=export_mlp(model.cost_head),
        latent_weight=float(cfg.latent_weight),
        cost_weight=float(cfg.cost_weight),
        cost_eps=COST_EPS,
        critic=export_mlp(critic.phi) if critic is not None else None,
        value_eps=VALUE_EPS,
        encoder=export_mlp(getattr(model.encoder, "net", None)) if cfg.encoder == "mlp" else None,
        obs_mean=_array(model.obs_mean),
        obs_std=_array(model.obs_std.clamp_min(STD_FLOOR)),
        actor=export_mlp(actor.net) if actor is not None else None,
        task=model.task,
        reward_head=export_mlp(model.reward_head),
        continuation=export_mlp(model.continuation),
        q_heads=tuple(export_mlp(head) for head in model.q.heads) if reward else (),
        policy=export_mlp(model.policy.net) if reward else None,
        scalar_kind=model.scalar.kind if reward else None,
        points=_array(model.scalar.points) if reward else np.zeros(0, np.float32),
        reward_scale=float(model.scalar.scale) if reward else 1.0,
        value_scale=float(model.value_scalar.scale) if reward else 1.0,
        gamma=float(model.gamma),
        log_std_min=LOG_STD_MIN,
        log_std_max=LOG_STD_MAX,
    )
