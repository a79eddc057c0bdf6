"""GCBC, the offline baseline: hindsight goals from the same episode's future, and a policy that
learns an expert's goal reaching from its data alone."""

from __future__ import annotations

import numpy as np
import pytest

from wmrobot.agent import RandomAgent
from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.policies import PolicySpec
from wmrobot.envs import eval_pairs, make_env
from wmrobot.errors import ConfigError, DatasetError
from wmrobot.eval.rollout import evaluate
from wmrobot.rl.offline import (
    GCBCAgent,
    GCBCConfig,
    GCIQLConfig,
    hindsight_rows,
    train_gcbc,
    train_gciql,
)


def test_hindsight_goals_come_from_the_episodes_future_or_anywhere():
    rng = np.random.default_rng(0)
    rows = np.array([0, 3, 5, 10, 12, 18] * 500)  # episodes [0, 5), [5, 12), [12, 20)
    end = np.array([5, 5, 12, 12, 20, 20] * 500)
    future = hindsight_rows(rows, end, 20, 1.0, rng)
    assert ((future > rows) & (future < end)).all()
    assert set(future[rows == 3]) == {4}  # the only later row of its episode
    assert set(future[rows == 0]) == {1, 2, 3, 4}  # every later row, uniformly
    anywhere = hindsight_rows(rows, end, 20, 0.0, rng)
    assert set(anywhere) == set(range(20))
    mixed = hindsight_rows(rows, end, 20, 0.8, rng)
    in_future = ((mixed > rows) & (mixed < end)).mean()  # 0.8, plus lucky draws anywhere
    assert 0.8 < in_future < 0.8 + 0.2 * 0.5


def test_gcbc_learns_to_reach_goals_from_expert_data_alone(tmp_path):
    kwargs = {"layout": "open"}
    path = str(tmp_path / "expert.zarr")
    collect(path, "wmrobot/PointMaze-v0", kwargs, "expert", episodes=40, seed=0, progress=False)
    policy, losses = train_gcbc(EpisodeStore.open(path), GCBCConfig(steps=1500), seed=0)
    assert losses[-1] < 0.5 * losses[0]
    env = make_env("wmrobot/PointMaze-v0", kwargs)
    pairs = eval_pairs(env, 10, seed=7)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    ours = evaluate(GCBCAgent(policy), "wmrobot/PointMaze-v0", kwargs, pairs, budget=100)
    floor = evaluate(RandomAgent(low, high, 0), "wmrobot/PointMaze-v0", kwargs, pairs, budget=100)
    success = np.mean([r.success for r in ours])
    assert success >= 0.3 > np.mean([r.success for r in floor])  # 0.5 here; random 0


def test_gciql_learns_goal_reaching_from_colored_noise_data(tmp_path):
    """GCIQL from 60 episodes of colored-noise actions (no expert, no reward in the data):
    60% of 10 open-maze pairs here, where random actions reach none."""
    kwargs = {"layout": "open"}
    path = str(tmp_path / "noise.zarr")
    collect(path, "wmrobot/PointMaze-v0", kwargs, PolicySpec("random", beta=1.0), episodes=60,
            seed=0, progress=False)  # fmt: skip
    env = make_env("wmrobot/PointMaze-v0", kwargs)
    cfg = GCIQLConfig(steps=2000, batch_size=128, hidden=[128, 128])
    policy, log = train_gciql(EpisodeStore.open(path), env.unwrapped.is_success, cfg, seed=0)
    pairs = eval_pairs(env, 10, seed=7)
    env.close()
    assert len(log) == 21 and all(np.isfinite(list(row.values())).all() for row in log)
    records = evaluate(GCBCAgent(policy), "wmrobot/PointMaze-v0", kwargs, pairs, budget=100)
    assert np.mean([r.success for r in records]) >= 0.4


def test_bad_gcbc_input_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="gcbc.future"):
        GCBCConfig(future=1.5)
    with pytest.raises(ConfigError, match="gciql.expectile"):
        GCIQLConfig(expectile=1.0)
    path = str(tmp_path / "ip.zarr")
    collect(path, "InvertedPendulum-v5", {}, "random", episodes=2, seed=0, progress=False)
    with pytest.raises(DatasetError, match="goal task's dataset"):
        train_gcbc(EpisodeStore.open(path), GCBCConfig(steps=1), 0)
