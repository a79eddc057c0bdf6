"""Branched model rollouts for SAC (MBPO): the real transitions re-encoded from the dataset, the
model buffer's refreshes, the mixed batches, and SAC learning from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.errors import ConfigError
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.rl.mbpo import BranchConfig, Branched, real_transitions
from wmrobot.train.data import Batches, build_model


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory) -> EpisodeStore:
    path = str(tmp_path_factory.mktemp("mbpo") / "ip.zarr")
    collect(path, "InvertedPendulum-v5", {}, "random", steps=120, seed=0, fast=False,
            progress=False)  # fmt: skip
    return EpisodeStore.open(path)


def reward_model(store: EpisodeStore) -> WorldModel:
    torch.manual_seed(0)
    cfg = ModelConfig(6, 16, 1, 3, 0.9, 0.0, 1.0, task="reward", head_hidden=16, bins=21)
    return build_model(store, cfg).eval()


def test_real_transitions_are_the_datasets_rows_encoded_with_scaled_actions(pendulum):
    model = reward_model(pendulum)
    real = real_transitions(model, pendulum)
    ends = np.asarray(pendulum.episode_ends)
    rows = np.setdiff1d(np.arange(ends[-1]), ends - 1)
    assert len(real["obs"]) == len(rows) == pendulum.n_transitions
    data = pendulum.load(["action", "reward", "terminated"])
    batches = Batches(pendulum, model, horizon=1, batch_size=1)
    pick = torch.as_tensor(rows[[0, 5, -1]])
    with torch.no_grad():
        assert torch.allclose(real["obs"][[0, 5, -1]], model.encode(batches.row_inputs(pick)))
        after = model.encode(batches.row_inputs(pick + 1))
        assert torch.allclose(real["next_obs"][[0, 5, -1]], after)
    mid, half = model.action_scale()
    want = (torch.as_tensor(data["action"][rows]) - mid) / half
    assert torch.allclose(real["actions"], want) and real["actions"].abs().max() <= 1
    assert np.array_equal(real["rewards"][:, 0].numpy(), data["reward"][rows])
    # Each episode's last transition is the one that terminates (the pole fell).
    assert real["dones"].sum() == pendulum.n_episodes
    assert np.array_equal(real["dones"][:, 0].numpy(), data["terminated"][rows].astype(float))


def test_the_model_buffer_keeps_the_last_refreshes_and_batches_mix_by_the_ratio(pendulum):
    model = reward_model(pendulum)
    model.continuation = None  # imagined episodes never end: every rollout is whole
    cfg = BranchConfig(rollouts=10, branch_horizon=3, retain=2, real_ratio=0.25, net=[16])
    branched = Branched(model, cfg, seed=0)
    for n in (1, 2, 3):
        branched.refresh(pendulum)
        assert len(branched.pool["obs"]) == min(n, 2) * 30
    assert branched.sizes == [30, 30]
    # Imagined steps chain: a rollout's next latent is the following step's latent.
    pool = branched.pool
    assert torch.allclose(pool["next_obs"][-20:-10], pool["obs"][-10:])
    with torch.no_grad():
        mid, half = model.action_scale()
        a = mid + pool["actions"] * half
        assert torch.allclose(pool["next_obs"], model.predict(pool["obs"], a), atol=1e-6)
        assert torch.allclose(pool["rewards"][:, 0], model.reward(pool["obs"], a), atol=1e-6)
    branched.real["rewards"][:] = 1e6  # marks the real rows
    batch = branched.sample(64)
    assert batch.observations.shape == (64, 6) and batch.actions.shape == (64, 1)
    assert int((batch.rewards == 1e6).sum()) == 16  # 25 % real


def test_sac_learns_a_planted_reward_from_branched_rollouts(pendulum):
    """The model's reward is exactly -(a - 0.5)^2 (a bandit: gamma 0); trained on model
    rollouts only, SAC's deterministic action goes to 0.5 in the env's units (range [-3, 3]):
    the buffer's scaled actions line up with the rewards computed on the env's."""
    model = reward_model(pendulum)
    model.continuation, model.cfg.gamma = None, 0.0
    model.reward = lambda z, a: -((a - 0.5) ** 2).sum(-1)
    cfg = BranchConfig(rollouts=64, branch_horizon=2, real_ratio=0.0, batch_size=64,
                       net=[64, 64])  # fmt: skip
    branched = Branched(model, cfg, seed=0)
    z = real_transitions(model, pendulum)["obs"][:32]
    before, _ = branched.policy.predict(z.numpy(), deterministic=True)
    for _ in range(40):
        branched.refresh(pendulum)
        branched.update(40)
    after, _ = branched.policy.predict(z.numpy(), deterministic=True)
    assert np.abs(after - 0.5).max() < 0.15 < np.abs(before - 0.5).max()


def test_state_round_trips(pendulum):
    model = reward_model(pendulum)
    cfg = BranchConfig(rollouts=8, net=[16])
    a = Branched(model, cfg, seed=0)
    a.refresh(pendulum)
    a.update(3)
    b = Branched(model, cfg, seed=1)
    b.load_state_dict(a.state_dict())
    z = a.real["obs"][:5].numpy()
    assert np.allclose(
        a.policy.predict(z, deterministic=True)[0], b.policy.predict(z, deterministic=True)[0]
    )
    assert torch.equal(a.pool["obs"], b.pool["obs"]) and a.sizes == b.sizes
    assert b.policy._n_updates == a.policy._n_updates == 3


def test_goal_models_and_bad_settings_are_refused_in_one_line():
    goal = WorldModel(4, 2, ModelConfig(6, 16, 1, 3, 0.9, 0.0, 1.0))
    with pytest.raises(ConfigError, match="needs a reward task"):
        Branched(goal, BranchConfig(), 0)
    for bad, match in (({"real_ratio": 1.5}, "dream.real_ratio"),
                       ({"branch_horizon": 0}, "dream.branch_horizon"),
                       ({"net": []}, "dream.net")):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            BranchConfig(**bad)
