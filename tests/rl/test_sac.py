"""SB3 SAC and SAC+HER as the demo's model-free baselines: settings, HER relabelling, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3 import HerReplayBuffer

from wmrobot.bench import rl_result
from wmrobot.envs import eval_pairs, make_env
from wmrobot.errors import ConfigError
from wmrobot.rl import RLConfig, make_sac, run_seeds

ENV_ID = "wmrobot/PointMaze-v0"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "rl"


def small(algo: str, **kw) -> RLConfig:
    """A cheap config: small nets, small batches, learning after 100 steps."""
    settings = dict(learning_starts=100, batch_size=32, learning_rate=1e-3, gamma=0.98)
    return RLConfig(algo=algo, **{**settings, "net_arch": [32, 32], **kw})


@pytest.mark.parametrize("name", ["sac", "sac_her"])
def test_config_files_load(name):
    cfg = RLConfig(**yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()))
    assert cfg.algo == name


def test_sac_her_config_is_the_goal_task_setting():
    cfg = RLConfig(**yaml.safe_load((CONFIGS / "sac_her.yaml").read_text()))
    assert (cfg.n_sampled_goal, cfg.goal_selection_strategy) == (4, "future")
    assert (cfg.gamma, list(cfg.net_arch), cfg.label) == (0.98, [256, 256], "SAC+HER (SB3)")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"algo": "td3"}, "rl.algo='td3'"),
        ({"gamma": 2.0}, "rl.gamma=2.0"),
        ({"batch_size": 0}, "rl.batch_size=0"),
        ({"n_sampled_goal": 0}, "rl.n_sampled_goal=0"),
        ({"goal_selection_strategy": "past"}, "rl.goal_selection_strategy='past'"),
        ({"net_arch": [64, 0]}, "rl.net_arch=[64, 0]"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(change, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("[", r"\[")):
        small(**{"algo": "sac_her", **change})


def test_sac_her_relabels_with_future_goals():
    env = make_env(ENV_ID, {"layout": "open"}, max_episode_steps=100)
    model = make_sac(env, small("sac_her", learning_starts=200), steps=250, seed=0)
    model.learn(250)
    buffer = model.replay_buffer
    assert isinstance(buffer, HerReplayBuffer)
    assert buffer.n_sampled_goal == 4

    batch = buffer.sample(512)
    stored = buffer.observations
    real_goals = np.unique(stored["desired_goal"][: buffer.pos, 0], axis=0)
    sampled = batch.observations["desired_goal"].numpy()
    relabelled = ~(sampled[:, None, :] == real_goals[None]).all(-1).any(-1)
    # 4 relabelled goals per real one: about 80% of a batch, and never all of it.
    assert 0.6 < relabelled.mean() < 0.95
    # Each relabelled goal is a goal the same episode achieved at that step or later.
    rows = stored["observation"][: buffer.pos, 0]
    achieved = buffer.next_observations["achieved_goal"][: buffer.pos, 0]
    for obs, goal in zip(
        batch.observations["observation"].numpy()[relabelled], sampled[relabelled], strict=True
    ):
        t = int(np.flatnonzero((rows == obs).all(-1))[0])
        start, length = buffer.ep_start[t, 0], buffer.ep_length[t, 0]
        assert (achieved[t : start + length] == goal).all(-1).any()
    # Rewards are recomputed for the relabelled goal (dense: minus the distance).
    next_achieved = batch.next_observations["achieved_goal"].numpy()
    want = env.unwrapped.compute_reward(next_achieved, sampled)
    np.testing.assert_allclose(batch.rewards.numpy()[:, 0], want, rtol=1e-5, atol=1e-6)


def test_plain_sac_trains_on_a_reward_task():
    env = make_env("HalfCheetah-v5", {}, max_episode_steps=50)
    model = make_sac(env, small("sac", learning_starts=20), steps=60, seed=0)
    model.learn(60)
    assert model.replay_buffer.pos == 60
    assert type(model.replay_buffer) is not HerReplayBuffer


def test_sac_her_on_a_reward_task_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_seeds("HalfCheetah-v5", {}, small("sac_her"), 100, [0], [{}], 10, tmp_path)
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "HalfCheetah-v5" in message and "use rl=sac" in message


def test_the_trained_runs_make_the_demo_row(tmp_path):
    env = make_env(ENV_ID, {"layout": "open"})
    pairs = eval_pairs(env, 2, seed=1234)
    cfg = small("sac_her")
    runs = run_seeds(ENV_ID, {"layout": "open"}, cfg, 120, [0], pairs, 10, tmp_path, 1, False)
    result = rl_result(cfg, 120, runs)
    assert result.method == "SAC+HER (SB3)"
    assert (result.env_steps, result.spread_over, len(result.success)) == (120, "training", 1)
    assert len(result.episodes) == 2 and result.latency_ms > 0
    assert (tmp_path / "sac_her_seed0.zip").exists()
