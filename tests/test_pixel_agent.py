"""Agents on pixel models: frames and goal frames from the env, frame stacks, `wmrobot plan`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wmrobot.agent import Observer, PlanningAgent, observation_kwargs
from wmrobot.cli import main
from wmrobot.cli_common import task_kwargs as _task_kwargs
from wmrobot.envs import make_env
from wmrobot.eval.rollout import evaluate
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.planners import PlannerConfig

ENV_ID, ENV_KWARGS = "wmrobot/PointMaze-v0", {"layout": "open"}


def pixel_model(stack: int = 1, encoder: str = "cnn") -> WorldModel:
    torch.manual_seed(0)
    cfg = ModelConfig(8, 16, 1, 3, 0.9, 0.5, 1.0, encoder=encoder, frame_stack=stack, width=4)
    return WorldModel(4, 2, cfg, image_shape=(16, 16, 3))


class Spy:
    """Records the inputs a model's encoder is given."""

    def __init__(self, model: WorldModel) -> None:
        self.seen: list[dict[str, torch.Tensor]] = []
        encode = model.encode

        def spy(inputs):
            self.seen.append({k: v.clone() for k, v in inputs.items()})
            return encode(inputs)

        model.encode = spy


def frames(batch: int, value: int) -> np.ndarray:
    return np.full((batch, 16, 16, 3), value, dtype=np.uint8)


def test_observer_stacks_frames_newest_last_and_repeats_the_first():
    model = pixel_model(stack=3)
    spy = Spy(model)
    observer = Observer(model, None)
    obs = {"pixels": frames(2, 1), "goal_pixels": frames(2, 9), "desired_goal": np.zeros((2, 2))}
    observer(obs)
    first, goal = spy.seen[0]["pixels"], spy.seen[1]["pixels"]
    assert first.shape == (2, 3, 16, 16, 3) and (first == 1).all()
    assert goal.shape == (2, 3, 16, 16, 3) and (goal == 9).all()
    observer({**obs, "pixels": frames(2, 2)})
    observer({**obs, "pixels": frames(2, 3)})
    newest = spy.seen[4]["pixels"]
    assert [int(newest[0, i].max()) for i in range(3)] == [1, 2, 3]
    observer.keep(np.array([1]))
    observer({**obs, "pixels": frames(1, 4), "goal_pixels": frames(1, 9)})
    assert [int(spy.seen[6]["pixels"][0, i].max()) for i in range(3)] == [2, 3, 4]
    observer.reset()
    observer(obs)
    assert (spy.seen[8]["pixels"] == 1).all()


def test_observer_names_the_missing_frames():
    from wmrobot.errors import ConfigError

    with pytest.raises(ConfigError, match="obs_mode='state\\+pixels'"):
        Observer(pixel_model(), None)({"observation": np.zeros((1, 4)), "desired_goal": [[0, 0]]})


@pytest.mark.parametrize("encoder", ["cnn", "fusion"])
def test_a_pixel_model_plans_from_the_envs_frames_and_goal_frame(encoder):
    model = pixel_model(encoder=encoder)
    spy = Spy(model)
    kwargs = observation_kwargs(model, ENV_KWARGS)
    assert kwargs["obs_mode"] == "state+pixels" and kwargs["width"] == 16
    env = make_env(ENV_ID, kwargs)
    planner = PlannerConfig(5, 8, 1, 2, 1.0, 0.05, 2.0, 1.0, backend="torch")
    agent = PlanningAgent(model, planner, env.unwrapped.goal_observation)
    obs, _ = env.reset(seed=1)
    action, _ = agent.predict(obs)
    assert env.action_space.contains(action.astype(np.float32))
    seen, goal = spy.seen[0], spy.seen[1]
    assert torch.equal(seen["pixels"][0], torch.as_tensor(obs["pixels"]))
    assert torch.equal(goal["pixels"][0], torch.as_tensor(obs["goal_pixels"]))
    assert not torch.equal(seen["pixels"], goal["pixels"])  # the goal frame is another scene
    if encoder == "fusion":
        want = env.unwrapped.goal_observation(obs["desired_goal"][None])
        assert torch.allclose(goal["state"], torch.as_tensor(want, dtype=torch.float32))
    records = evaluate(agent, ENV_ID, kwargs, [{}, {}], budget=3)
    assert [r.steps for r in records] == [3, 3]
    env.close()


def test_view_settings_do_not_change_the_task():
    plain = _task_kwargs(ENV_ID, {"layout": "umaze"})
    seen = {"layout": "umaze", "render_mode": "rgb_array", "width": 64, "height": 64}
    seen["show_goal"] = False  # what collect(pixels=N) records: frames without the marker
    assert _task_kwargs(ENV_ID, seen) == plain
    assert _task_kwargs(ENV_ID, {"layout": "ring"}) != plain


def test_wmrobot_plan_runs_a_pixel_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "px.zarr"
    collect = ["collect", "env.kwargs.layout=open", "episodes=3", "pixels=16", f"out={data}"]
    assert main(collect) == 0
    ckpt = tmp_path / "ck"
    train = ["train", f"dataset={data}", "model=pixels_cnn", f"out={ckpt}"]
    assert main([*train, "model.train.steps=5", "model.train.critic.finetune=2"]) == 0
    out = tmp_path / "plan"
    easy = ["env.eval.pairs=2", "env.eval.budget=4", "env.kwargs.layout=open", "seeds=[0]"]
    assert main(["plan", f"checkpoint={ckpt}", f"out={out}", "planner.backend=torch", *easy]) == 0
    rows = json.loads((out / "results.json").read_text())["results"]
    assert {r["method"] for r in rows} == {"random", "Mode-2 MPPI"}
    assert (out / "mpc_episode.gif").is_file()


def test_fusion_reads_only_the_proprio_columns_and_keeps_them_when_saved(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(8, 16, 1, 3, 0.9, 0.5, 1.0, encoder="fusion", width=4, proprio=[2, 3])
    mean, std = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 1.0, 2.0, 4.0])
    model = WorldModel(4, 2, cfg, obs_mean=mean, obs_std=std, image_shape=(16, 16, 3))
    spy = Spy(model)
    pixels = torch.as_tensor(frames(2, 5))
    state = torch.tensor([[0.0, 0.0, 5.0, 8.0], [9.0, -9.0, 5.0, 8.0]])
    inputs = model._inputs({"state": state, "pixels": pixels})
    assert torch.equal(inputs["state"], torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    z = model.encode({"state": state, "pixels": pixels})
    assert torch.allclose(z[0], z[1])  # the positions (columns 0, 1) are never read
    moved = model.encode({"state": state + torch.tensor([0.0, 0.0, 2.0, 0.0]), "pixels": pixels})
    assert not torch.allclose(moved, z)  # the speeds are
    assert len(spy.seen) == 2
    model.save(tmp_path / "ck")
    loaded = WorldModel.load(tmp_path / "ck")
    assert loaded.cfg.proprio == [2, 3]
    assert torch.allclose(loaded.encode({"state": state, "pixels": pixels}), z)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoder": "cnn", "proprio": [2]}, "needs model.encoder=fusion"),
        ({"encoder": "fusion", "proprio": [2, 2]}, "distinct indices"),
        ({"encoder": "fusion", "proprio": []}, "distinct indices"),
        ({"encoder": "fusion", "proprio": [4]}, "indexes past the state vector's 4 values"),
    ],
)
def test_bad_proprio_is_refused_in_one_line(kwargs, match):
    from wmrobot.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        cfg = ModelConfig(8, 16, 1, 3, 0.9, 0.5, 1.0, width=4, **kwargs)
        WorldModel(4, 2, cfg, image_shape=(16, 16, 3))
