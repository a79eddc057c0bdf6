"""Mode-1 actor (wmrobot.distill, wmrobot.agent): hindsight rows, the compiled actor,
imitation, DAgger and the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wmrobot.agent import ActorAgent, FastActor, PlanningAgent, actor_plan
from wmrobot.distill import (
    DistillConfig,
    LabelBuffer,
    attach_actor,
    distill,
    fit_actor,
    hindsight_rows,
    to_unit,
)
from wmrobot.envs import make_env
from wmrobot.errors import ConfigError
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.planners import PlannerConfig
from wmrobot.train import load_checkpoint, save_checkpoint

ENV_ID, ENV_KWARGS = "wmrobot/PointMaze-v0", {"layout": "open"}


def maze_model(seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(16, 32, 2, 8, 0.99, 0.1, 1.0, critic=True, critic_hidden=32)
    env = make_env(ENV_ID, ENV_KWARGS)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    return WorldModel(4, 2, cfg, action_low=torch.as_tensor(low), action_high=torch.as_tensor(high))


def small_planner(**changes) -> PlannerConfig:
    base = dict(horizon=5, samples=16, iterations=2, elites=4, init_std=1.0, min_std=0.05)
    base.update(max_std=2.0, terminal_weight=2.0, backend="torch")
    return PlannerConfig(**{**base, **changes})


def test_hindsight_rows_stay_inside_episodes_and_goals_come_later():
    ends = np.array([5, 6, 20, 23])
    rows, goals = hindsight_rows(ends, 4000, future=1.0, rng=np.random.default_rng(0))
    episode = np.searchsorted(ends, rows, side="right")
    assert not np.isin(rows, ends - 1).any()  # a last row has no action
    assert (episode == np.searchsorted(ends, goals, side="right")).all()
    assert (goals > rows).all()
    assert set(np.unique(episode)) == {0, 2, 3}  # the one-row episode gives none
    _, anywhere = hindsight_rows(ends, 4000, future=0.0, rng=np.random.default_rng(0))
    assert (anywhere < rows).any() and anywhere.max() <= 22


@pytest.mark.parametrize("envs", [1, 7])  # one env: row by row; 7: in a block of lanes
def test_compiled_actor_matches_torch_and_declines_other_layers(envs):
    model = maze_model()
    attach_actor(model, hidden=48, depth=2)
    rng = np.random.default_rng(0)
    obs, goal = rng.normal(size=(envs, 4)), rng.normal(size=(envs, 4))
    fast = FastActor.build(model)
    assert fast is not None
    with torch.no_grad():
        z = model.encode(torch.as_tensor(obs, dtype=torch.float32))
        goal_z = model.encode(torch.as_tensor(goal, dtype=torch.float32))
        expect = model.act(z, goal_z).numpy()
    np.testing.assert_allclose(fast(obs, goal), expect, atol=1e-5)
    assert FastActor.build(maze_model()) is None  # no actor head
    model.actor.net.append(torch.nn.Tanh())  # a layer the kernels do not run
    assert FastActor.build(model) is None


def test_fit_actor_learns_a_labelling_function():
    model = maze_model()
    actor = attach_actor(model, hidden=64, depth=2)
    g = torch.Generator().manual_seed(0)
    z, goal = torch.randn(512, 16, generator=g), torch.randn(512, 16, generator=g)
    labels = torch.tanh(goal[:, :2] - z[:, :2])  # a direction towards the goal
    data = LabelBuffer()
    data.add(z, goal, labels)
    before = (actor(z, goal) - labels).pow(2).mean().item()
    optimiser = torch.optim.Adam(actor.parameters(), lr=3e-3)
    fit_actor(actor, optimiser, data, steps=400, batch_size=128, generator=g)
    after = (actor(z, goal) - labels).pow(2).mean().item()
    assert after < 0.1 * before, (before, after)


def test_to_unit_inverts_the_actors_rescaling():
    model = maze_model()
    attach_actor(model, hidden=8, depth=1)
    z = torch.randn(5, 16)
    action = model.act(z, z.flip(0))
    unit = model.actor(z, z.flip(0))
    assert torch.allclose(to_unit(model, action), unit, atol=1e-6)


def test_distill_imitates_then_runs_dagger_rounds_and_the_checkpoint_keeps_the_actor(
    maze_dataset, tmp_path
):
    from wmrobot.datasets import EpisodeStore

    model = maze_model()
    store = EpisodeStore.open(maze_dataset)
    env = make_env(ENV_ID, ENV_KWARGS)
    cfg = DistillConfig(states=64, rounds=2, episodes=3, budget=8, steps=30, hidden=32)
    history = distill(
        model, small_planner(), store, ENV_ID, ENV_KWARGS, cfg, seed=0, say=lambda _: None
    )
    assert [h["stage"] for h in history] == ["imitation", "dagger 1", "dagger 2"]
    labels = [h["labels"] for h in history]
    assert labels[0] == 64 and labels[1] > 64 and labels[2] > labels[1]
    assert all(0 < h["env_steps"] <= 3 * 8 for h in history[1:])
    assert all(0.0 <= h["success"] <= 1.0 for h in history[1:])
    assert model.cfg.actor and model.cfg.actor_hidden == 32
    assert all(p.requires_grad for p in model.predictor.parameters())  # as it was
    assert not any(p.requires_grad for p in model.critic_target.parameters())

    save_checkpoint(model, tmp_path / "ck", {"env": {"id": ENV_ID, "kwargs": ENV_KWARGS}})
    loaded, _ = load_checkpoint(tmp_path / "ck")
    obs, _ = env.reset(seed=3)
    a = ActorAgent(model, env.unwrapped.goal_observation).predict(obs)[0]
    b = ActorAgent(loaded, env.unwrapped.goal_observation, fast=False).predict(obs)[0]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert env.action_space.contains(a.astype(np.float32))
    env.close()


def test_distill_leaves_the_world_model_unchanged(maze_dataset):
    from wmrobot.datasets import EpisodeStore

    model = maze_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = DistillConfig(states=32, rounds=1, episodes=2, budget=5, steps=10, hidden=16)
    store = EpisodeStore.open(maze_dataset)
    distill(model, small_planner(), store, ENV_ID, ENV_KWARGS, cfg, seed=1, say=lambda _: None)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(k.startswith("actor.") for k in after)


@pytest.mark.parametrize("envs", [1, 3])
def test_actor_plan_is_the_actors_own_imagined_rollout(envs):
    model = maze_model()
    attach_actor(model, hidden=16, depth=1)
    z, goal = torch.randn(envs, 16), torch.randn(envs, 16)
    plan = actor_plan(model, z, goal, horizon=4)
    assert plan.shape == (envs, 4, 2)
    with torch.no_grad():
        z1 = model.predict(z, plan[:, 0])
        assert torch.allclose(plan[:, 0], model.act(z, goal))
        assert torch.allclose(plan[:, 1], model.act(z1, goal), atol=1e-6)
    fast = FastActor.build(model)
    assert fast is not None and fast.predictor is not None  # else actor_plan falls back to torch
    compiled = actor_plan(model, z, goal, horizon=4, fast=fast)
    assert torch.allclose(compiled, plan, atol=1e-5)


def test_modes_that_need_an_actor_refuse_a_model_without_one():
    model = maze_model()
    goal_obs = make_env(ENV_ID, ENV_KWARGS).unwrapped.goal_observation
    with pytest.raises(ConfigError, match="wmrobot distill"):
        ActorAgent(model, goal_obs)
    with pytest.raises(ConfigError, match="agent.mode=hybrid"):
        PlanningAgent(model, small_planner(), goal_obs, hybrid=True)


@pytest.mark.parametrize(
    "field, value", [("states", 0), ("rounds", -1), ("future", 1.5), ("lr", 0.0)]
)
def test_distill_config_names_the_bad_value(field, value):
    with pytest.raises(ConfigError, match=f"actor.{field}={value}"):
        DistillConfig(**{field: value}).check()


def test_evaluation_rows_say_what_their_seeds_vary():
    from wmrobot.bench import evaluate_actor, evaluate_planner

    model = maze_model()
    pairs, budget = [{}, {}], 3
    grad = small_planner(name="grad", grad_steps=2)
    rows = {
        "grad": evaluate_planner(model, grad, ENV_ID, ENV_KWARGS, pairs, budget, [0, 1], 0),
        "mppi": evaluate_planner(
            model, small_planner(), ENV_ID, ENV_KWARGS, pairs, budget, [0, 1], 0
        ),
    }
    attach_actor(model, hidden=8, depth=1)
    rows["actor"] = evaluate_actor(model, ENV_ID, ENV_KWARGS, pairs, budget, 0)
    assert (rows["grad"].spread_over, len(rows["grad"].success)) == ("deterministic", 1)
    assert (rows["mppi"].spread_over, len(rows["mppi"].success)) == ("planner", 2)
    assert (rows["actor"].spread_over, len(rows["actor"].success)) == ("deterministic", 1)
    assert rows["actor"].method == "Mode-1 actor"


def test_evaluate_resets_each_episode_with_its_seed():
    """DAgger episodes draw their starts and goals from reset seeds of their own."""
    from wmrobot.eval.rollout import evaluate

    class Recorder:
        def __init__(self):
            self.first = None

        def predict(self, obs, deterministic=True):
            if self.first is None:
                self.first = {k: v.copy() for k, v in obs.items()}
            return np.zeros((len(obs["desired_goal"]), 2), np.float32), None

    policy = Recorder()
    records = evaluate(policy, ENV_ID, ENV_KWARGS, [{}, {}], budget=2, seeds=[5, 9])
    assert [r.steps for r in records] == [2, 2]
    for row, seed in enumerate([5, 9]):
        env = make_env(ENV_ID, ENV_KWARGS)
        obs, _ = env.reset(seed=seed)
        env.close()
        np.testing.assert_array_equal(policy.first["desired_goal"][row], obs["desired_goal"])
        np.testing.assert_array_equal(policy.first["observation"][row], obs["observation"])
    assert not np.array_equal(policy.first["desired_goal"][0], policy.first["desired_goal"][1])
