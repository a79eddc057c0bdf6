"""An ensemble of predictors: built beside the first, trained on detached latents, its
disagreement the model's own error estimate, saved and loaded with the checkpoint."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from wmrobot.errors import ConfigError
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.train.losses import LossWeights, member_loss
from wmrobot.train.trainer import TrainConfig, descend, optimizers

D, A = 8, 2


def config(**changes) -> ModelConfig:
    cfg = ModelConfig(D, 32, 2, 3, 0.9, 0.0, 1.0, critic=True)
    return replace(cfg, **changes)


def model(ensemble: int = 3, seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel(5, A, config(ensemble=ensemble))


def test_the_members_come_last_so_a_model_without_them_is_drawn_as_before():
    one, three = model(1), model(3)
    assert len(one.members) == 0 and len(three.members) == 2
    shared = one.state_dict()
    for key, value in three.state_dict().items():
        if key.startswith("members."):
            continue
        assert torch.equal(value, shared[key]), key
    # Each member starts from its own weights, so they disagree before any training.
    z, a = torch.randn(64, D), torch.rand(64, A) * 2 - 1
    assert (three.disagreement(z, a) > 0).all()
    assert torch.equal(one.disagreement(z, a), torch.zeros(64))


def test_disagreement_is_the_norm_of_the_members_spread():
    m = model(3)
    z, a = torch.randn(10, D), torch.rand(10, A) * 2 - 1
    with torch.no_grad():
        preds = torch.stack([m.predict(z, a)] + [p(z, a) for p in m.members])
        want = preds.std(0, unbiased=False).norm(dim=-1)
        assert torch.allclose(m.disagreement(z, a), want)
        # Members equal to the first predictor do not disagree at all.
        for member in m.members:
            member.load_state_dict(m.predictor.state_dict())
        assert torch.allclose(m.disagreement(z, a), torch.zeros(10), atol=1e-6)


def test_the_members_learn_without_moving_the_encoder_or_the_first_predictor():
    m = model(3)
    z = m.encode(torch.randn(16, 4, 5))  # (B, K+1, D) with the encoder's gradient
    actions = torch.rand(16, 3, A) * 2 - 1
    targets = torch.randn(16, 3, D)
    loss = member_loss(m, z.detach(), actions, targets)
    loss.backward()
    assert loss > 0
    assert all(p.grad is None for p in m.encoder.parameters())
    assert all(p.grad is None for p in m.predictor.parameters())
    assert all(p.grad is not None for p in m.members.parameters())
    assert member_loss(model(1), z.detach(), actions, targets) == 0


def test_members_fit_a_planted_dynamics_and_then_agree_where_the_data_was():
    """z' = z + 0.1 a (padded): after training the members predict it, and disagree less on
    the data than far from it."""
    m = model(3)
    weights = LossWeights(1, 1, 0.04, 1)
    cfg = TrainConfig(steps=1, batch_size=2, horizon=1, lr=3e-3, weight_decay=0.0, warmup=1,
                      grad_clip=10.0, loss=weights, log_every=1, seed=0)  # fmt: skip
    opt = optimizers(m, cfg)[0]
    assert len(opt.param_groups) == 2  # the members' gradient is clipped apart
    gen = torch.Generator().manual_seed(0)

    def planted(n: int, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
        z0 = torch.randn(n, D, generator=gen) * scale
        acts = torch.rand(n, 3, A, generator=gen) * 2 - 1
        zs = [z0]
        for t in range(3):
            zs.append(zs[-1] + 0.1 * torch.nn.functional.pad(acts[:, t], (0, D - A)))
        return torch.stack(zs, 1), acts

    z, acts = planted(256)
    before = member_loss(m, z, acts, z[:, 1:]).item()
    for _ in range(300):
        z, acts = planted(256)
        descend(member_loss(m, z, acts, z[:, 1:]), [opt], 10.0)
    z, acts = planted(256)
    after = member_loss(m, z, acts, z[:, 1:]).item()
    assert after < 0.05 * before
    with torch.no_grad():
        near = torch.stack([p(z[:, 0], acts[:, 0]) for p in m.members]).std(0).norm(dim=-1)
        far_z, far_a = planted(256, scale=20.0)
        far = torch.stack([p(far_z[:, 0], far_a[:, 0]) for p in m.members]).std(0).norm(dim=-1)
    assert near.mean() < far.mean()


def test_an_ensemble_round_trips_through_a_checkpoint(tmp_path):
    m = model(3)
    m.save(tmp_path / "ck", {})
    back = WorldModel.load(tmp_path / "ck")
    assert back.cfg.ensemble == 3 and len(back.members) == 2
    z, a = torch.randn(4, D), torch.rand(4, A)
    with torch.no_grad():
        assert torch.allclose(back.disagreement(z, a), m.disagreement(z, a))


@pytest.mark.parametrize(
    ("changes", "match"),
    [({"ensemble": 0}, "model.ensemble"), ({"ensemble": 3, "predictor": "gru"}, "predictor=mlp")],
)
def test_bad_ensembles_are_refused_in_one_line(changes, match):
    with pytest.raises(ConfigError, match=match) as e:
        config(**changes)
    assert "\n" not in str(e.value)


def test_a_reward_models_members_learn_in_its_loss_and_the_rest_does_not_feel_them():
    from wmrobot.train.reward import RewardLossConfig, reward_loss

    def build(ensemble: int) -> WorldModel:
        torch.manual_seed(0)
        cfg = ModelConfig(D, 16, 1, 3, 0.9, 0.0, 1.0, task="reward", reward_scale=1.0,
                          ensemble=ensemble, continuation=False)  # fmt: skip
        return WorldModel(5, A, cfg)

    gen = torch.Generator().manual_seed(0)
    inputs = {"state": torch.randn(8, 4, 5, generator=gen)}
    actions = torch.rand(8, 3, A, generator=gen) * 2 - 1
    rewards, ends = torch.randn(8, 3, generator=gen), torch.zeros(8, 3, dtype=torch.bool)
    grads = {}
    for ensemble in (1, 3):
        m = build(ensemble)
        loss, parts, _ = reward_loss(m, inputs, actions, rewards, ends, RewardLossConfig(),
                                     LossWeights(1, 1, 0.04, 1), "vicreg",
                                     torch.Generator().manual_seed(1))  # fmt: skip
        loss.backward()
        grads[ensemble] = [p.grad.clone() for p in m.encoder.parameters()]
        if ensemble == 3:
            assert all(p.grad.abs().sum() > 0 for p in m.members.parameters())
    for one, three in zip(grads[1], grads[3], strict=True):
        assert torch.allclose(one, three)
