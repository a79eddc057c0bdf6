"""Agents' save and load: the model's checkpoint plus the agent's settings as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wmrobot.agent import AGENT_FILE, ActorAgent, PlanningAgent
from wmrobot.errors import CheckpointError
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.planners import PlannerConfig
from wmrobot.train.checkpoint import load_checkpoint


def model() -> WorldModel:
    torch.manual_seed(0)
    cfg = ModelConfig(16, 32, 2, 8, 0.99, 0.1, 1.0, critic=True, actor=True)
    return WorldModel(4, 2, cfg).eval()


def goal_observation(desired_goal: np.ndarray) -> np.ndarray:
    """A state at the goal position (the first two of four coordinates), at rest."""
    return np.concatenate([desired_goal, np.zeros_like(desired_goal)], axis=-1)


PLANNER = PlannerConfig(
    horizon=5,
    samples=32,
    iterations=2,
    elites=4,
    init_std=1.0,
    min_std=0.05,
    max_std=2.0,
    terminal_weight=2.0,
    name="cem",
    backend="torch",
    replan_every=2,
)


def observations(steps: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    goal = rng.uniform(-1, 1, (2, 2)).astype(np.float32)
    return [
        {"observation": rng.normal(size=(2, 4)).astype(np.float32), "desired_goal": goal}
        for _ in range(steps)
    ]


@pytest.mark.parametrize("hybrid", [False, True])
def test_a_loaded_planning_agent_acts_as_the_saved_one(hybrid, tmp_path):
    agent = PlanningAgent(model(), PLANNER, goal_observation, seed=3, hybrid=hybrid)
    agent.save(tmp_path / "agent")
    settings = json.loads((tmp_path / "agent" / AGENT_FILE).read_text())
    assert settings["mode"] == ("hybrid" if hybrid else "2") and settings["seed"] == 3
    assert settings["planner"]["name"] == "cem" and settings["planner"]["replan_every"] == 2
    loaded = PlanningAgent.load(tmp_path / "agent", goal_observation)
    fresh = PlanningAgent(model(), PLANNER, goal_observation, seed=3, hybrid=hybrid)
    other = PlanningAgent(model(), PLANNER, goal_observation, seed=4, hybrid=hybrid)
    for obs in observations():  # the same seed: the same plans, replanned every 2 steps
        action = fresh.predict(obs)[0]
        np.testing.assert_array_equal(loaded.predict(obs)[0], action)
        assert not np.array_equal(other.predict(obs)[0], action)  # the seed matters


@pytest.mark.parametrize("fast", [False, True])
def test_a_loaded_actor_agent_acts_as_the_saved_one(fast, tmp_path):
    agent = ActorAgent(model(), goal_observation, fast=fast)
    agent.save(tmp_path)
    loaded = ActorAgent.load(tmp_path, goal_observation)
    assert (loaded.fast is None) == (not fast)
    for obs in observations():
        np.testing.assert_array_equal(loaded.predict(obs)[0], agent.predict(obs)[0])
    # the directory is a plain model checkpoint too
    weights, _ = load_checkpoint(tmp_path)
    torch.testing.assert_close(weights.state_dict(), agent.model.state_dict())


def test_load_refuses_another_agent_a_bare_checkpoint_and_a_malformed_file(tmp_path):
    ActorAgent(model(), goal_observation).save(tmp_path)
    with pytest.raises(CheckpointError, match="holds agent='ActorAgent', not PlanningAgent"):
        PlanningAgent.load(tmp_path, goal_observation)
    (tmp_path / AGENT_FILE).write_text('{"agent": "ActorAgent"}')
    with pytest.raises(CheckpointError, match="is malformed: ActorAgent needs"):
        ActorAgent.load(tmp_path, goal_observation)
    (tmp_path / AGENT_FILE).unlink()
    with pytest.raises(CheckpointError, match="holds a model but no agent.json"):
        ActorAgent.load(tmp_path, goal_observation)


def test_an_agent_saved_from_a_checkpoint_keeps_what_it_was_trained_on(tmp_path):
    trained = {"env": {"id": "wmrobot/PointMaze-v0", "kwargs": {}}, "dataset": {"transitions": 9}}
    model().save(tmp_path / "ckpt", trained)
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    PlanningAgent(loaded, PLANNER, goal_observation).save(tmp_path / "agent")
    _, meta = load_checkpoint(tmp_path / "agent")
    assert meta["env"] == trained["env"] and meta["dataset"] == trained["dataset"]
    assert meta["created"] == loaded.meta["created"]  # the training run's provenance, kept


def test_save_writes_over_a_model_directory_never_over_other_files(tmp_path, tree_of):
    agent = ActorAgent(model(), goal_observation)
    agent.save(tmp_path / "agent")
    agent.save(tmp_path / "agent")  # its own directory: saved again
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    before = tree_of(tmp_path)
    with pytest.raises(CheckpointError, match=r"holds files that are not a model's \(notes.txt\)"):
        agent.save(tmp_path / "mine")
    with pytest.raises(CheckpointError, match="is a file"):
        agent.save(tmp_path / "mine" / "notes.txt")
    assert tree_of(tmp_path) == before
