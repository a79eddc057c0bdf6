"""Model audit: latent prediction error against the horizon, linear probes of physical
quantities from encoded and imagined latents, and collapse diagnostics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from wmrobot.datasets import EpisodeStore, WindowSampler
from wmrobot.errors import ConfigError, DatasetError, WmrobotError
from wmrobot.model.collapse import collapse_report
from wmrobot.train.data import check_compatible

ENCODE_BYTES = 8 * 2**20  # input bytes per encoder call: bounds a pixel encoder's activations
CONSTANT = 1e-10  # a target dimension with less variance than this is left out of R²


@torch.no_grad()
def encode_batched(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], target: bool = False
) -> torch.Tensor:
    """Encode inputs (N, ...), e.g. rows (N, O) or windows (B, T, O), in chunks along the first
    dimension, on the model's device: (N, ..., D) float32 on the CPU. ``target`` uses the EMA
    target encoder."""
    fn = model.encode_target if target else model.encode
    device = _device(model)
    item_bytes = sum(v[0].numel() * v.element_size() for v in inputs.values())
    size = max(1, ENCODE_BYTES // item_bytes)
    n = len(next(iter(inputs.values())))
    out = []
    for i in range(0, n, size):
        chunk = {k: v[i : i + size].to(device) for k, v in inputs.items()}
        out.append(fn(chunk).float().cpu())
    return torch.cat(out)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ------------------------------------------------------------------------------------ probes
@dataclass
class LinearProbe:
    """y = ((x - mean) / scale) @ weight + bias, fitted by :func:`fit_probe`."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., K)."""
        return ((x.double() - self.mean) / self.scale) @ self.weight + self.bias


def fit_probe(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> LinearProbe:
    """Closed-form ridge regression of y (N, K) on x (N, D), on standardised inputs with an
    unpenalised bias; the penalty is ``ridge`` per sample, so it does not fade with N."""
    x, y = x.double(), y.double()
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-8)
    xs = (x - mean) / scale
    bias = y.mean(0)
    gram = xs.T @ xs + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    weight = torch.linalg.solve(gram, xs.T @ (y - bias))
    return LinearProbe(mean, scale, weight, bias)


def r2_score(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    """Coefficient of determination of (N, K) predictions, averaged over the K dimensions
    that vary (1: exact, 0: no better than the mean, below 0: worse); NaN if none varies."""
    y, y_hat = y.double(), y_hat.double()
    total = (y - y.mean(0)).pow(2).sum(0)
    varies = total > CONSTANT * len(y)
    if not varies.any():
        return float("nan")
    residual = (y - y_hat).pow(2).sum(0)
    return float((1 - residual[varies] / total[varies]).mean())


@dataclass
class Quantity:
    """A physical quantity to probe: columns ``columns`` of dataset key ``key``."""

    name: str
    key: str
    columns: slice
    source: str


def probe_quantities(store: EpisodeStore, obs_key: str = "obs/observation") -> list[Quantity]:
    """Positions and velocities from the MuJoCo state (``physics`` = time, qpos, qvel, ...;
    nq and nv from the dataset's env), else the observation vector; and the achieved goal."""
    from wmrobot.datasets.replay import env_for

    quantities = []
    sizes = None
    if "physics" in store.keys:
        try:
            env = env_for(store)
            sizes = env.unwrapped.model.nq, env.unwrapped.model.nv
            env.close()
        except WmrobotError:  # the env cannot be made here: fall back to the observation
            sizes = None
    if sizes is not None:
        nq, nv = sizes
        quantities += [
            Quantity("position", "physics", slice(1, 1 + nq), f"physics qpos ({nq})"),
            Quantity("velocity", "physics", slice(1 + nq, 1 + nq + nv), f"physics qvel ({nv})"),
        ]
    elif obs_key in store.keys:
        quantities.append(Quantity("observation", obs_key, slice(None), obs_key))
    if "obs/achieved_goal" in store.keys:
        quantities.append(
            Quantity("goal position", "obs/achieved_goal", slice(None), "obs/achieved_goal")
        )
    if not quantities:
        raise DatasetError(
            f"{store.path!r} holds neither physics nor {obs_key} to probe; keys: {store.keys}"
        )
    return quantities


# ------------------------------------------------------------------------------------ report
@dataclass
class AuditReport:
    """What :func:`audit` measured; ``horizons`` is 1..H and every per-h list follows it.

    ``prediction``: ``mse`` of imagined vs target latents, ``baseline_mse`` of "no change"
    (the target latent at t), and both divided by the target latents' mean per-dimension
    variance (``normalised``, ``baseline_normalised``: 1 = no better than predicting the mean
    latent). ``probes``: per quantity its ``source``, ``dims``, ``r2_train``, ``r2_encoded``
    (test episodes, latents at t) and ``r2_imagined`` (the same probe on imagined latents
    after h steps). ``collapse``: :func:`collapse_report` and per-dimension std quantiles of
    encoded latents and of imagined latents at h = H.
    """

    horizons: list[int]
    prediction: dict[str, list[float]]
    probes: dict[str, dict[str, Any]]
    collapse: dict[str, dict[str, float]]
    split: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _std_summary(z: torch.Tensor) -> dict[str, float]:
    std = z.std(0).double()
    q = torch.quantile(std, torch.tensor([0.1, 0.5, 0.9, 1.0], dtype=std.dtype))
    names = ("std_q10", "std_median", "std_q90", "std_max")
    return {**dict(zip(names, q.tolist(), strict=True)), "dead_dims": int((std < 1e-4).sum())}


def _latent_report(z: torch.Tensor) -> dict[str, float]:
    return {**collapse_report(z), **_std_summary(z)}


def _split(
    store: EpisodeStore, sampler: WindowSampler, test_fraction: float, max_windows: int, rng
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Window positions (into ``sampler.starts``) of probe-train and probe-test episodes."""
    episode_of = np.searchsorted(store.episode_ends, sampler.starts.numpy(), side="right")
    eligible = np.unique(episode_of)  # episodes long enough to hold a window
    if len(eligible) < 2:
        raise DatasetError(
            f"{store.path!r} has {len(eligible)} episode(s) of at least {sampler.steps} steps; "
            f"the probes need two or more (one to fit, one to test): lower horizon= or collect "
            f"more episodes"
        )
    order = rng.permutation(eligible)
    n_test = min(max(1, round(test_fraction * len(order))), len(order) - 1)
    test_eps, train_eps = np.sort(order[:n_test]), np.sort(order[n_test:])

    def pick(episodes: np.ndarray) -> np.ndarray:
        positions = np.flatnonzero(np.isin(episode_of, episodes))
        if len(positions) > max_windows:
            positions = np.sort(rng.choice(positions, max_windows, replace=False))
        return positions

    train, test = pick(train_eps), pick(test_eps)
    info = {
        "train_episodes": train_eps.tolist(),
        "test_episodes": test_eps.tolist(),
        "train_windows": len(train),
        "test_windows": len(test),
    }
    return train, test, info


def audit(
    model: torch.nn.Module,
    store: EpisodeStore,
    *,
    horizon: int = 20,
    test_fraction: float = 0.25,
    seed: int = 0,
    max_windows: int = 1000,
    ridge: float = 1e-3,
    obs_key: str = "obs/observation",
) -> AuditReport:
    """Audit ``model`` on ``store``'s episodes, split by episode (seeded) into probe-train and
    probe-test; at most ``max_windows`` windows of ``horizon`` steps are drawn from each.

    - prediction error for h = 1..H on test windows: ``rollout(encode(o_t), a_t..)`` against
      ``encode_target(o_{t+h})``, and the no-change baseline ``encode_target(o_t)``;
    - ridge probes (fit on encoded latents of every row of the train windows) of positions and
      velocities, R² on test episodes from encoded latents at t and imagined ones after h steps;
    - collapse diagnostics of encoded latents and of imagined latents at h = H.

    ``obs_key`` is the dataset key probed when the store holds no physics. The same seed
    gives the same report.
    """
    if horizon < 1:
        raise ConfigError(f"horizon={horizon} must be >= 1 (steps imagined ahead)")
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction={test_fraction} must be in (0, 1)")
    if max_windows < 2:
        raise ConfigError(f"max_windows={max_windows} must be >= 2")
    check_compatible(model, store)
    keys, stack = model.input_keys, model.frames
    span = horizon + stack - 1  # rows before t complete the first frame stack
    lengths = np.diff(store.episode_ends, prepend=0) - 1
    if store.n_episodes == 0 or lengths.max() < span:
        longest = int(lengths.max()) if store.n_episodes else 0
        stacked = f" and {stack - 1} more for the frame stack" if stack > 1 else ""
        raise ConfigError(
            f"horizon={horizon}{stacked} is longer than every episode of {store.path!r} (the "
            f"longest has {longest} steps); lower horizon="
        )
    quantities = probe_quantities(store, obs_key)
    needed = [*keys.values(), "action", *(q.key for q in quantities)]
    sampler = WindowSampler(store, needed, steps=span)
    rng = np.random.default_rng(seed)
    train_pos, test_pos, split = _split(store, sampler, test_fraction, max_windows, rng)
    train = sampler.batch(torch.from_numpy(train_pos))
    test = sampler.batch(torch.from_numpy(test_pos))

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            z_train = encode_batched(model, model.window_inputs(train)).flatten(0, 1)
            inputs = model.window_inputs(test)
            z_target = encode_batched(model, inputs, target=True)  # (B, H+1, D)
            z0 = encode_batched(model, {k: v[:, 0] for k, v in inputs.items()})  # (B, D)
            actions = test["action"][:, stack - 1 :].float()
            imagined = model.rollout(z0.to(_device(model)), actions.to(_device(model)))
            imagined = imagined.float().cpu()  # (B, H, D)
    finally:
        model.train(was_training)

    variance = float(z_target.flatten(0, 1).var(0).mean().clamp_min(1e-12))
    mse = (imagined - z_target[:, 1:]).pow(2).mean((0, 2))
    baseline = (z_target[:, :1] - z_target[:, 1:]).pow(2).mean((0, 2))
    prediction = {
        "mse": mse.tolist(),
        "baseline_mse": baseline.tolist(),
        "normalised": (mse / variance).tolist(),
        "baseline_normalised": (baseline / variance).tolist(),
    }

    probes = {}
    for q in quantities:
        y_train = train[q.key][:, stack - 1 :, q.columns].flatten(0, 1)
        y_test = test[q.key][:, stack - 1 :, q.columns]  # (B, H+1, K)
        probe = fit_probe(z_train, y_train, ridge)
        probes[q.name] = {
            "source": q.source,
            "dims": int(y_train.shape[1]),
            "r2_train": r2_score(y_train, probe.predict(z_train)),
            "r2_encoded": r2_score(y_test[:, 0], probe.predict(z0)),
            "r2_imagined": [
                r2_score(y_test[:, h], probe.predict(imagined[:, h - 1]))
                for h in range(1, horizon + 1)
            ],
        }

    collapse = {
        "encoded": _latent_report(torch.cat([z_train, z0])),
        "imagined": _latent_report(imagined[:, -1]),
    }
    split.update(seed=seed, horizon=horizon, ridge=ridge, latent_dim=int(z0.shape[1]))
    return AuditReport(list(range(1, horizon + 1)), prediction, probes, collapse, split)


def shown_horizons(horizon: int) -> list[int]:
    """The few horizons a table shows: 1, 2, 5, 10, 20, 50, ... up to and including H."""
    marks = [h for h in (1, 2, 5, 10, 20, 50, 100, 200) if h < horizon]
    return [*marks, horizon]
