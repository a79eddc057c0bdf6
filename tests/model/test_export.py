"""The model's export: plain arrays that the Numba planners score as the torch objective."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch
from torch import nn

from wmrobot.errors import ConfigError
from wmrobot.model.export import ExportedModel, Layer, export_mlp
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.planners import Objective, PlannerConfig
from wmrobot.planners.numba.kernels import pack_mlp
from wmrobot.planners.numba.scoring import pack_model, score

CFG = ModelConfig(16, 32, 2, 8, 0.99, latent_weight=0.3, cost_weight=0.7)


def model(**changes) -> WorldModel:
    torch.manual_seed(0)
    values = {**{f.name: getattr(CFG, f.name) for f in fields(CFG)}, **changes}
    image_shape = (16, 16, 3) if values["encoder"] != "mlp" else None
    return WorldModel(4, 2, ModelConfig(**values), image_shape=image_shape).eval()


def planner_config() -> PlannerConfig:
    """Every objective term on: terminal weight, value (where there is a critic), smoothness."""
    return PlannerConfig(
        horizon=5,
        samples=8,
        iterations=1,
        elites=2,
        init_std=1.0,
        min_std=0.05,
        max_std=2.0,
        terminal_weight=2.0,
        value_weight=0.5,
        smooth_weight=0.05,
    )


@pytest.mark.parametrize("critic", [False, True])
def test_the_export_scores_as_the_torch_objective(critic):
    wm = model(critic=critic)
    objective = Objective(wm, planner_config())
    assert (objective.value_weight > 0) == critic  # the value term counts only with a critic
    gen = torch.Generator().manual_seed(1)
    z0, goal = torch.randn(3, 16, generator=gen), torch.randn(3, 16, generator=gen)
    actions = torch.rand(3, 7, 5, 2, generator=gen) * 2 - 1
    with torch.no_grad():
        expect = objective(z0, goal, actions).numpy()
    got = score(pack_model(wm), objective, z0, goal, actions)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


def test_the_export_is_plain_arrays_and_the_objectives_coefficients():
    wm = model(critic=True, actor=True)
    with torch.no_grad():
        wm.obs_std[0] = 0.0  # floored, as WorldModel.encode divides by it
    exported = wm.export()
    assert isinstance(exported, ExportedModel)
    assert (exported.latent_weight, exported.cost_weight) == (0.3, 0.7)
    assert (exported.latent_dim, exported.action_dim, exported.predictor_kind) == (16, 2, "mlp")
    assert exported.obs_std[0] > 0
    np.testing.assert_array_equal(exported.action_low, -np.ones(2, np.float32))
    depths = {"predictor": 2, "cost_head": 1, "critic": 2, "encoder": 2, "actor": 2}
    for part, depth in depths.items():
        layers = getattr(exported, part)
        kinds = ["linear", "layernorm", "relu"] * depth + ["linear"]
        assert [layer.kind for layer in layers] == kinds
        for layer in layers:
            for array in (layer.weight, layer.bias):
                assert array is None or (type(array) is np.ndarray and array.dtype == np.float32)
    first = exported.predictor[0]
    assert first.weight.shape == (32, 16 + 2)  # (out, in), as torch's Linear
    np.testing.assert_array_equal(first.weight, wm.predictor.net[0].weight.detach().numpy())
    with torch.no_grad():
        wm.predictor.net[0].weight.zero_()
    assert np.abs(first.weight).max() > 0  # a copy: the model trains on, the export stays


def test_parts_that_are_not_mlps_export_as_none():
    gru = model(predictor="gru").export()
    assert gru.predictor_kind == "gru" and gru.predictor is None
    assert gru.critic is None and gru.actor is None  # no critic, no actor head
    assert model(encoder="cnn").export().encoder is None
    with pytest.raises(ConfigError, match="model.predictor=gru: use planner.backend=torch"):
        pack_model(model(predictor="gru"))


def test_a_layer_of_another_kind_is_named_and_refused():
    layers = export_mlp(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    assert [layer.kind for layer in layers] == ["linear", "Tanh", "linear"]
    assert layers[1] == Layer("Tanh")
    with pytest.raises(ConfigError, match="the actor has Tanh: use planner.backend=torch"):
        pack_mlp(layers, 3, "actor")
    assert export_mlp(nn.GRU(3, 4)) is None


def test_a_reward_models_export_carries_its_heads_and_scalars():
    wm = model(
        task="reward", continuation=True, reward_loss="regression", reward_scale=2.0, q_heads=3,
        head_hidden=24, gamma=0.9,
    )  # fmt: skip
    exported = wm.export()
    assert (exported.task, exported.scalar_kind) == ("reward", "regression")
    assert exported.cost_head is None and exported.critic is None
    assert len(exported.q_heads) == 3
    kinds = ["linear", "layernorm", "relu"] * 2 + ["linear"]
    for part in (exported.reward_head, exported.continuation, exported.policy, *exported.q_heads):
        assert [layer.kind for layer in part] == kinds
    assert exported.reward_head[0].weight.shape == (24, 16 + 2)  # over [z, a]
    assert exported.q_heads[2][-1].weight.shape == (1, 24)  # one regression output
    assert exported.policy[-1].weight.shape == (2 * 2, 24)  # mean and raw log std
    assert exported.continuation[-1].weight.shape == (1, 24)
    np.testing.assert_array_equal(exported.points, wm.scalar.points.numpy())
    assert exported.reward_scale == 2.0 and exported.value_scale == pytest.approx(20.0)
    assert exported.gamma == pytest.approx(0.9)
    assert exported.log_std_min < exported.log_std_max
    twohot = model(task="reward", reward_loss="twohot", bins=11, reward_scale=1.0).export()
    assert twohot.scalar_kind == "twohot" and twohot.points.shape == (11,)
    assert twohot.continuation is None  # none asked for


def test_a_goal_models_export_has_no_reward_heads():
    exported = model(critic=True).export()
    assert exported.task == "goal" and exported.scalar_kind is None
    assert exported.reward_head is None and exported.continuation is None
    assert exported.q_heads == () and exported.policy is None
