"""The reward-loss benchmark (benchmarks/reward_loss.py) on a tiny dataset: the split keeps every
episode once, the scaled copy scales only the rewards, and both losses yield finite metrics."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from wmrobot.datasets import EpisodeStore, collect

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "reward_loss.py"
spec = importlib.util.spec_from_file_location("reward_loss", BENCHMARK)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def pendulum(tmp_path: Path) -> EpisodeStore:
    """A few hundred random InvertedPendulum steps: constant rewards, many terminations."""
    path = str(tmp_path / "src.zarr")
    collect(path, "InvertedPendulum-v5", {}, "random", steps=300, seed=0, fast=False,
            progress=False)  # fmt: skip
    return EpisodeStore.open(path)


def test_split_holds_out_the_last_episodes_and_scales_only_rewards(tmp_path):
    src = pendulum(tmp_path)
    train, test = bench.split(src, tmp_path / "x3", factor=3.0)
    n = src.n_episodes
    assert train.n_episodes + test.n_episodes == n and test.n_episodes == round(0.2 * n)
    both = {k: np.concatenate([s.load([k])[k] for s in (train, test)]) for k in bench.KEYS}
    orig = src.load(list(bench.KEYS))
    np.testing.assert_array_equal(both["obs"], orig["obs"])  # same episodes, same order
    np.testing.assert_array_equal(both["terminated"], orig["terminated"])
    np.testing.assert_allclose(both["reward"], 3.0 * orig["reward"])
    np.testing.assert_allclose(test.meta("return"), 3.0 * src.meta("return")[train.n_episodes :])


def test_both_losses_give_finite_metrics_at_each_checkpoint(tmp_path):
    torch.set_num_threads(1)
    train, test = bench.split(pendulum(tmp_path), tmp_path / "x1")
    tiny = dict(latent_dim=8, hidden=16, head_hidden=16, bins=21)
    results = bench.compare(train, test, [1, 3], [0], **tiny)
    assert set(results) == {"twohot", "regression"}
    for by_update in results.values():
        assert set(by_update) == {1, 3}
        for metrics in by_update.values():
            assert set(metrics) == {"reward", "value", "upd/s"}
            assert all(len(v) == 1 and math.isfinite(v[0]) and v[0] > 0 for v in metrics.values())
    lines = bench.table({"pendulum": results}).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| pendulum | 1 |")


def test_normalised_divides_by_the_variance_or_the_mean_square_of_constants():
    target = torch.tensor([1.0, 2.0, 3.0])  # variance 1
    assert bench.normalised(torch.tensor([1.0, -1.0, 1.0]), target) == 1.0
    constant = torch.ones(4)  # no variance: relative to the mean square, 1
    assert math.isclose(bench.normalised(torch.full((4,), 0.5), constant), 0.25)
