"""A training run killed with SIGKILL and resumed logs what an uninterrupted run logs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from wmrobot.datasets import collect
from wmrobot.datasets.policies import PolicySpec
from wmrobot.errors import CheckpointError
from wmrobot.train import train
from wmrobot.train.resume import TRAIN_STATE, load_train_state

SCRIPT = """
import sys, time
import torch
from wmrobot.model import ModelConfig
from wmrobot.train import LossWeights, TrainConfig, train
torch.set_num_threads(1)
model = ModelConfig(latent_dim=8, hidden=16, depth=1, goal_dim=3, ema=0.9, latent_weight=0.5,
                    cost_weight=1.0, ema_end=1.0, critic=True, critic_hidden=16)
cfg = TrainConfig(steps=int(sys.argv[3]), batch_size=16, horizon=3, lr=1e-3, weight_decay=0.0,
                  warmup=2, grad_clip=10.0, loss=LossWeights(1.0, 1.0, 0.04, 1.0), log_every=3,
                  seed=0, checkpoint_every=5, tensorboard=False)
train(sys.argv[1], sys.argv[2], model, cfg, progress=False, resume=sys.argv[4] == "1")
"""


def run(dataset, out, steps, resume):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, dataset, str(out), str(steps), resume])


def metrics(out):
    with open(out / "metrics.csv") as f:
        return [
            {k: v for k, v in row.items() if k not in ("seconds", "data_wait")}
            for row in csv.DictReader(f)
        ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "maze.zarr"
    collect(
        str(path), "wmrobot/PointMaze-v0", policy=PolicySpec(beta=1.0), episodes=6, progress=False
    )
    return str(path)


def test_a_killed_and_resumed_run_logs_the_same_metrics(dataset, tmp_path):
    steps = 40
    whole = tmp_path / "whole"
    assert run(dataset, whole, steps, "0").wait() == 0
    cut = tmp_path / "cut"
    for _ in range(2):  # killed twice, at whatever point it has reached after a saved state
        proc = run(dataset, cut, steps, "1")
        saved = cut / TRAIN_STATE
        before = saved.stat().st_mtime_ns if saved.exists() else None
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if saved.exists() and saved.stat().st_mtime_ns != before:
                break
            time.sleep(0.01)
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    reached = torch.load(cut / TRAIN_STATE, weights_only=True)["step"]
    assert 0 < reached < steps - 1  # the kills came mid-run, after at least one saved state
    assert run(dataset, cut, steps, "1").wait() == 0
    assert metrics(cut) == metrics(whole)
    assert [int(r["step"]) for r in metrics(whole)][-1] == steps - 1
    resumed = torch.load(cut / "model.pt", weights_only=True)
    for key, value in torch.load(whole / "model.pt", weights_only=True).items():
        assert torch.equal(value, resumed[key]), key


def test_resuming_with_another_config_is_refused(dataset, tmp_path):
    from wmrobot.model import ModelConfig
    from wmrobot.train import LossWeights, TrainConfig

    model = ModelConfig(8, 16, 1, 3, 0.9, 0.5, 1.0)
    cfg = TrainConfig(4, 16, 3, 1e-3, 0.0, 1, 10.0, LossWeights(1.0, 1.0, 0.04, 1.0), 2, 0)
    train(dataset, tmp_path, model, cfg, progress=False)
    other = TrainConfig(4, 16, 3, 5e-3, 0.0, 1, 10.0, LossWeights(1.0, 1.0, 0.04, 1.0), 2, 0)
    with pytest.raises(CheckpointError, match="another train than this run's"):
        train(dataset, tmp_path, model, other, progress=False, resume=True)
    (tmp_path / TRAIN_STATE).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(dataset, tmp_path, model, cfg, progress=False, resume=True)


def test_a_hostile_training_state_is_refused_and_never_runs(hostile_pickle, tmp_path):
    write, marker = hostile_pickle
    path = write(tmp_path / TRAIN_STATE)
    with pytest.raises(CheckpointError, match="holds objects a safe load refuses") as refused:
        load_train_state(path, {}, torch.nn.Linear(1, 1), [], None, torch.Generator())
    assert "weights_only" not in str(refused.value)
    assert not marker.exists()
