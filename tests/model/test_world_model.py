"""WorldModel shapes, rollout, EMA target and cost; the anti-collapse terms and diagnostics."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from wmrobot.model import ModelConfig, WorldModel
from wmrobot.model.collapse import covariance_loss, effective_rank, variance_loss

OBS, ACT, D = 4, 2, 8


def tiny_model(**overrides) -> WorldModel:
    cfg = ModelConfig(
        latent_dim=D, hidden=16, depth=2, goal_dim=3, ema=0.9, latent_weight=1.0, cost_weight=1.0
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    return WorldModel(OBS, ACT, cfg)


def test_shapes():
    model = tiny_model()
    obs = torch.randn(5, 7, OBS)
    z = model.encode(obs)
    assert z.shape == (5, 7, D)
    assert model.encode_target(obs).shape == (5, 7, D)
    assert model.predict(z, torch.zeros(5, 7, ACT)).shape == (5, 7, D)
    assert model.rollout(z[:, 0], torch.zeros(5, 6, ACT)).shape == (5, 6, D)
    assert model.cost(z, z[:, :1]).shape == (5, 7)
    assert model.task_cost(z, z[:, :1]).shape == (5, 7)


def test_rollout_equals_repeated_predict():
    model = tiny_model()
    z0, actions = torch.randn(3, D), torch.rand(3, 4, ACT) * 2 - 1
    zs = model.rollout(z0, actions)
    z = z0
    for t in range(4):
        z = model.predict(z, actions[:, t])
        torch.testing.assert_close(zs[:, t], z)
    assert not torch.allclose(zs[:, 0], zs[:, -1])


def test_observations_are_normalised_with_the_dataset_stats():
    mean, std = torch.tensor([1.0, -2.0, 0.5, 0.0]), torch.tensor([2.0, 0.5, 1.0, 4.0])
    plain = tiny_model()
    scaled = WorldModel(OBS, ACT, plain.cfg, obs_mean=mean, obs_std=std)
    scaled.load_state_dict({**plain.state_dict(), "obs_mean": mean, "obs_std": std})
    obs = torch.randn(6, OBS)
    torch.testing.assert_close(scaled.encode(obs * std + mean), plain.encode(obs))


def test_update_target_is_an_ema_step():
    model = tiny_model()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(torch.randn_like(p))
    online = [p.clone() for p in model.encoder.parameters()]
    target = [p.clone() for p in model.target_encoder.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(online, target, strict=True))

    model.update_target(momentum=0.5)
    for p_t, a, b in zip(model.target_encoder.parameters(), online, target, strict=True):
        torch.testing.assert_close(p_t, 0.5 * a + 0.5 * b)

    model.update_target()  # the config's momentum, 0.9
    for p_t, a, b in zip(model.target_encoder.parameters(), online, target, strict=True):
        torch.testing.assert_close(p_t, 0.9 * (0.5 * a + 0.5 * b) + 0.1 * a)

    model.update_target(momentum=0.0)
    for p_t, a in zip(model.target_encoder.parameters(), online, strict=True):
        torch.testing.assert_close(p_t, a)


def test_encode_target_carries_no_gradient():
    model = tiny_model()
    obs = torch.randn(4, OBS, requires_grad=True)
    assert not model.encode_target(obs).requires_grad
    assert model.encode(obs).requires_grad
    assert not any(p.requires_grad for p in model.target_encoder.parameters())
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in model.target_encoder.parameters()}


def test_latent_cost_is_zero_at_the_goal_and_the_mean_squared_distance_elsewhere():
    model = tiny_model(latent_weight=1.0, cost_weight=0.0)
    z, goal = torch.randn(5, D), torch.randn(5, D)
    torch.testing.assert_close(model.cost(goal, goal), torch.zeros(5))
    torch.testing.assert_close(model.cost(z, goal), (z - goal).pow(2).mean(-1))


def test_task_cost_is_a_metric_in_goal_space():
    model = tiny_model()
    a, b, c = torch.randn(3, 16, D)
    assert torch.all(model.task_cost(a, a) < 1e-3)
    torch.testing.assert_close(model.task_cost(a, b), model.task_cost(b, a))
    assert torch.all(model.task_cost(a, c) <= model.task_cost(a, b) + model.task_cost(b, c) + 1e-3)
    assert torch.all(model.task_cost(a, b) > 0)


def test_cost_combines_both_terms_by_their_weights():
    z, goal = torch.randn(2, 5, D)
    latent = tiny_model(latent_weight=1.0, cost_weight=0.0).cost(z, goal)
    task = tiny_model(latent_weight=0.0, cost_weight=1.0).cost(z, goal)
    both = tiny_model(latent_weight=2.0, cost_weight=3.0).cost(z, goal)
    torch.testing.assert_close(both, 2.0 * latent + 3.0 * task)


def test_config_dict_rebuilds_the_model():
    model = tiny_model()
    spec = model.config_dict()
    obs_dim, action_dim = spec.pop("obs_dim"), spec.pop("action_dim")
    image_shape, state_key = spec.pop("image_shape"), spec.pop("state_key")
    again = WorldModel(
        obs_dim, action_dim, ModelConfig(**spec), image_shape=image_shape, state_key=state_key
    )
    again.load_state_dict(model.state_dict())
    obs = torch.randn(3, OBS)
    torch.testing.assert_close(again.encode(obs), model.encode(obs))


def test_effective_rank_detects_collapse():
    torch.manual_seed(0)
    isotropic = torch.randn(4096, D)
    collapsed = torch.randn(4096, 1) * torch.randn(1, D)  # every embedding on one line
    assert effective_rank(isotropic) == pytest.approx(D, rel=0.05)
    assert effective_rank(collapsed) == pytest.approx(1.0, abs=1e-3)
    assert effective_rank(torch.ones(10, D)) == pytest.approx(1.0)


def test_variance_loss_penalises_only_small_spread():
    torch.manual_seed(0)
    assert variance_loss(torch.randn(4096, D) * 3) == 0
    assert variance_loss(torch.zeros(64, D)) == pytest.approx(1.0, abs=0.02)
    half = torch.cat([torch.randn(4096, D // 2) * 3, torch.zeros(4096, D // 2)], dim=1)
    assert variance_loss(half) == pytest.approx(0.5, abs=0.01)


def test_covariance_loss_penalises_correlated_dimensions():
    torch.manual_seed(0)
    independent = torch.randn(4096, D)
    correlated = torch.randn(4096, 1).repeat(1, D)
    assert covariance_loss(independent) < 0.01
    # Every off-diagonal covariance is ~1: D * (D - 1) entries, divided by D.
    assert covariance_loss(correlated) == pytest.approx(D - 1, rel=0.1)


def test_anti_collapse_terms_have_gradients():
    z = torch.randn(32, D, requires_grad=True)
    (variance_loss(z * 0.1) + covariance_loss(z)).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_collapse_report_flags_collapsed_embeddings_only():
    from wmrobot.model.collapse import collapse_report

    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(2048, 16, generator=g)
    on_a_line = torch.randn(2048, 1, generator=g) * torch.randn(1, 16, generator=g)
    dead_dimension = healthy.clone()
    dead_dimension[:, 3] = 0.7
    assert collapse_report(healthy)["collapsed"] == 0.0
    assert collapse_report(on_a_line)["collapsed"] == 1.0
    assert collapse_report(dead_dimension)["collapsed"] == 1.0
    assert collapse_report(dead_dimension)["z_std_min"] < 1e-6


def test_collapse_report_flags_latents_shrinking_towards_a_point():
    from wmrobot.model.collapse import SHRINK_FRACTION, collapse_report

    healthy = torch.randn(2048, 16, generator=torch.Generator().manual_seed(0))
    peak = collapse_report(healthy)["z_std_mean"]
    # A uniform shrink keeps the rank (and every probe) but heads for the constant solution.
    shrunk = collapse_report(healthy * 0.5 * SHRINK_FRACTION, peak_std=peak)
    assert shrunk["effective_rank"] > 12 and shrunk["shrunk"] == shrunk["collapsed"] == 1.0
    assert collapse_report(healthy * 2 * SHRINK_FRACTION, peak_std=peak)["collapsed"] == 0.0
    assert collapse_report(healthy * 0.01)["collapsed"] == 0.0  # no history: scale is free


def test_window_inputs_keep_the_state_and_stack_pixel_frames():
    batch = {
        "obs/observation": torch.randn(2, 6, OBS),
        "pixels": torch.arange(2 * 6 * 16 * 16 * 3)
        .remainder(256)
        .to(torch.uint8)
        .view(2, 6, 16, 16, 3),
    }
    state = tiny_model()
    assert state.frames == 1
    assert torch.equal(state.window_inputs(batch)["state"], batch["obs/observation"])

    stacked = WorldModel(
        OBS, ACT, replace(tiny_model().cfg, encoder="cnn", frame_stack=3, width=4),
        image_shape=(16, 16, 3),
    )  # fmt: skip
    assert stacked.frames == 3 and set(stacked.window_inputs(batch)) == {"pixels"}
    pixels = stacked.window_inputs(batch)["pixels"]
    assert pixels.shape == (2, 4, 3, 16, 16, 3)  # windows lose the 2 rows that start the stack
    for t in range(4):
        for j in range(3):  # frame j of the stack at t is row t + j, the newest last
            assert torch.equal(pixels[:, t, j], batch["pixels"][:, t + j])


def test_save_and_load_round_trip_with_config_and_provenance(tmp_path):
    model = tiny_model(critic=True, actor=True)
    model.obs_mean.fill_(0.5)
    directory = model.save(tmp_path / "model", {"steps": 3})
    assert sorted(p.name for p in directory.iterdir()) == ["meta.json", "model.pt"]
    loaded = WorldModel.load(directory)
    assert not loaded.training and loaded.config_dict() == model.config_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["steps"] == 3 and meta["model"] == model.config_dict()
    assert meta["versions"]["torch"] == torch.__version__ and "created" in meta
    # a model saved again keeps the provenance of the run that made it
    meta_in = {"versions": {"torch": "0.0"}, "created": "then"}
    again = json.loads((model.save(tmp_path / "again", meta_in) / "meta.json").read_text())
    assert again["versions"] == {"torch": "0.0"} and again["created"] == "then"


def test_load_never_runs_code_from_the_weights_file(tmp_path, hostile_pickle):
    from wmrobot.errors import CheckpointError

    write, marker = hostile_pickle
    directory = tiny_model().save(tmp_path / "model")
    write(directory / "model.pt")
    with pytest.raises(CheckpointError, match="model.pt holds objects a safe load refuses"):
        WorldModel.load(directory)
    assert not marker.exists()
