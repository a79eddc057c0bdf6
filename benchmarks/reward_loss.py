"""Two-hot (symlog bins) against normalised regression for the reward and value heads, side by
side in one run on small random datasets, to choose ``model.reward_loss`` by measurement.

Each dataset is split by episode (the last ``held_out`` fraction is held out). For each loss a
model with configs/model/reward_mlp.yaml's settings (``reward_scale`` left at its default 1, as
a user gets it) is trained as ``wmrobot learn`` updates it (``RewardUpdate``, then the targets'
step with ``model.train.reward.tau``), the same seed for both losses. After each of
``--updates`` updates, on windows of the held-out episodes (``horizon`` steps, as in training),
it measures:

- ``reward``: 1 - R² of the rewards predicted along the imagined windows (the first latent
  encoded, the next ones rolled out through the actions, as the planner imagines them), the
  mean squared error divided by the rewards' variance (by their mean square where they are
  constant: InvertedPendulum pays +1 a step);
- ``value``: the Q ensemble's mean TD error against r + gamma (1 - terminated) min Q'(z', a'),
  a' drawn from the policy prior, divided the same way by the targets' variance;
- ``upd/s``: training updates per second (batch draws included), on one torch thread.

HalfCheetah x100 is the same episodes with every reward multiplied by 100, copied into a new
dataset (reward-scale robustness, the case two-hot is made for). Run (under 6 minutes):

    python benchmarks/reward_loss.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from wmrobot.config import ModelSection
from wmrobot.datasets import EpisodeStore, collect
from wmrobot.model.reward import SCALAR_LOSSES
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.train.data import build_model
from wmrobot.train.reward import RewardBatches
from wmrobot.train.trainer import RewardUpdate, TrainConfig, follow_targets, optimizers

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "model" / "reward_mlp.yaml"
KEYS = ("obs", "action", "reward", "terminated", "truncated")
# name -> (env id, reward factor): the x100 copy shares HalfCheetah's episodes.
DATASETS = {
    "HalfCheetah": ("HalfCheetah-v5", 1.0),
    "HalfCheetah x100": ("HalfCheetah-v5", 100.0),
    "InvertedPendulum": ("InvertedPendulum-v5", 1.0),
    "Reacher": ("Reacher-v5", 1.0),
}


def reward_config(kind: str, seed: int) -> tuple[ModelConfig, TrainConfig]:
    """configs/model/reward_mlp.yaml as the typed configs ``wmrobot train`` gets, with
    ``reward_loss=kind`` and ``seed``, and without the anti-collapse term (the setting of the
    recorded table, measured before VICReg became reward_mlp's default)."""
    over = {"reward_loss": kind, "train": {"seed": seed, "anticollapse": "none"}}
    raw = OmegaConf.merge(OmegaConf.load(CONFIG), over)
    section = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelSection), raw))
    model = ModelConfig(**{f.name: getattr(section, f.name) for f in fields(ModelConfig)})
    return model, replace(section.train, tensorboard=False)


def copy_episodes(
    src: EpisodeStore, path: Path, episodes: range, factor: float = 1.0
) -> EpisodeStore:
    """A new dataset at ``path`` of ``src``'s ``episodes`` (the reward columns only), every
    reward times ``factor``."""
    dst = EpisodeStore.create(
        path,
        env=src.attrs["env"],
        spaces=src.attrs["spaces"],
        row_shapes={k: (src.array(k).shape[1:], src.array(k).dtype.name) for k in KEYS},
        collector=src.attrs["collector"],
    )
    meta = {k: src.meta(k) for k in ("seed", "return", "success")}
    eps = []
    for i in episodes:
        ep = {k: v for k, v in src.episode(i).items() if k in KEYS}
        ep["reward"] = (ep["reward"] * factor).astype(ep["reward"].dtype)
        eps.append({**ep, **{k: v[i].item() for k, v in meta.items()}})
        eps[-1]["return"] *= factor
    dst.append(eps)
    return dst


def split(
    src: EpisodeStore, root: Path, factor: float = 1.0, held_out: float = 0.2
) -> tuple[EpisodeStore, EpisodeStore]:
    """(train, test) copies of ``src``: the test set is its last ``held_out`` of episodes."""
    n = src.n_episodes
    cut = min(n - 1, max(1, round(n * (1 - held_out))))
    return (
        copy_episodes(src, root / "train.zarr", range(cut), factor),
        copy_episodes(src, root / "test.zarr", range(cut, n), factor),
    )


def train(
    store: EpisodeStore, mcfg: ModelConfig, tcfg: TrainConfig, checkpoints: list[int]
) -> Iterator[tuple[int, WorldModel, float]]:
    """Train a model on ``store`` as ``wmrobot learn`` updates it; at each of the sorted
    ``checkpoints`` (updates done) yield (updates, the model in eval mode, updates per second
    so far)."""
    torch.manual_seed(tcfg.seed)
    model = build_model(store, mcfg)
    gen = torch.Generator().manual_seed(tcfg.seed)
    update = RewardUpdate(model, tcfg, optimizers(model, tcfg), gen)
    batches = RewardBatches(store, model, tcfg.horizon, tcfg.batch_size)
    elapsed = 0.0
    for done in range(1, checkpoints[-1] + 1):
        start = time.perf_counter()
        update(batches.sample(gen), lambda *a: None)
        follow_targets(model, mcfg.ema, tcfg)
        elapsed += time.perf_counter() - start
        if done in checkpoints:
            yield done, model.eval(), done / elapsed
            model.train()


def normalised(error: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared ``error`` over the variance of ``target`` (its mean square if constant)."""
    var = target.var()
    scale = var if var > 1e-8 * target.pow(2).mean() else target.pow(2).mean()
    return float(error.pow(2).mean() / scale.clamp_min(1e-12))


@torch.no_grad()
def evaluate(model: WorldModel, test: EpisodeStore, horizon: int, windows: int = 2048):
    """1 - R² of the imagined rewards and of the Q heads' TD targets on ``windows`` windows of
    ``test`` (drawn with seed 0, the same for every model)."""
    gen = torch.Generator().manual_seed(0)
    batch = RewardBatches(test, model, horizon, windows).sample(gen)
    inputs, actions, rewards = batch["inputs"], batch["actions"], batch["rewards"]
    z0 = model.encode({n: v[:, 0] for n, v in inputs.items()})
    zs = torch.cat([z0[:, None], model.rollout(z0, actions)], dim=1)  # (B, K+1, D)
    predicted = model.reward(zs[:, :-1], actions)
    targets = model.encode_target({n: v[:, 1:] for n, v in inputs.items()})
    following, _ = model.policy.sample(targets, gen)
    mid, half = model.action_scale()
    q_next = model.q_values(targets, mid + following * half, target=True).min(0).values
    td = rewards + model.gamma * (1 - batch["terminated"].float()) * q_next
    q = model.q_values(zs[:, :-1], actions).mean(0)
    return {"reward": normalised(predicted - rewards, rewards), "value": normalised(q - td, td)}


def compare(
    train_set: EpisodeStore,
    test_set: EpisodeStore,
    checkpoints: list[int],
    seeds: list[int],
    kinds: tuple[str, ...] = SCALAR_LOSSES,
    **model_overrides: Any,
) -> dict[str, dict[int, dict[str, list[float]]]]:
    """``{kind: {updates: {"reward": [...], "value": [...], "upd/s": [...]}}}``, one entry per
    seed: each loss trained on ``train_set`` and measured on ``test_set`` at ``checkpoints``."""
    out: dict[str, dict[int, dict[str, list[float]]]] = {}
    for kind in kinds:
        out[kind] = {n: {"reward": [], "value": [], "upd/s": []} for n in checkpoints}
        for seed in seeds:
            mcfg, tcfg = reward_config(kind, seed)
            for done, model, speed in train(
                train_set, replace(mcfg, **model_overrides), tcfg, checkpoints
            ):
                row = {**evaluate(model, test_set, tcfg.horizon), "upd/s": speed}
                for key, value in row.items():
                    out[kind][done][key].append(value)
    return out


def cell(values: list[float]) -> str:
    """``mean`` or ``mean ± std`` over seeds."""
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def table(results: dict[str, dict[str, dict[int, dict[str, list[float]]]]]) -> str:
    """The markdown table, a row per dataset and checkpoint: each metric for both losses and
    the ratio of their means, regression / twohot."""
    lines = [
        "| dataset | updates | reward 1-R² twohot | regression | ratio "
        "| value 1-R² twohot | regression | ratio | upd/s twohot | regression |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, by_kind in results.items():
        for done, two in by_kind["twohot"].items():
            reg = by_kind["regression"][done]
            row = [name, str(done)]
            for metric in ("reward", "value"):
                ratio = statistics.mean(reg[metric]) / max(statistics.mean(two[metric]), 1e-12)
                row += [cell(two[metric]), cell(reg[metric]), f"{ratio:.2f}"]
            row += [f"{statistics.mean(two['upd/s']):.1f}", f"{statistics.mean(reg['upd/s']):.1f}"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000, help="env steps per dataset")
    parser.add_argument("--updates", type=int, nargs="+", default=[250, 500],
                        help="measure after these many training updates")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores: dict[str, EpisodeStore] = {}
        for name, (env_id, factor) in DATASETS.items():
            if env_id not in stores:
                path = f"{tmp}/{env_id}.zarr"
                collect(path, env_id, {}, "random", steps=args.steps, seed=0, fast=False,
                        progress=False)  # fmt: skip
                stores[env_id] = EpisodeStore.open(path)
            root = Path(tmp) / name.replace(" ", "_")
            train_set, test_set = split(stores[env_id], root, factor)
            start = time.perf_counter()
            results[name] = compare(train_set, test_set, sorted(args.updates), args.seeds)
            # Each episode's last row has no action, its reward is padding.
            rewards = np.delete(test_set.load(["reward"])["reward"], test_set.episode_ends - 1)
            print(f"{name}: {train_set.n_episodes} + {test_set.n_episodes} episodes, "
                  f"held-out reward {rewards.mean():.3g} ± {rewards.std():.3g}, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    print(f"\n1 - R² on held-out episodes, mean ± std over seeds {args.seeds}:\n")
    print(table(results))


if __name__ == "__main__":
    main()
