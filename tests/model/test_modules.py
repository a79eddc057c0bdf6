"""Encoders (state, pixels, fusion), predictors (MLP, GRU, transformer) and the SIGReg loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wmrobot.errors import ConfigError
from wmrobot.model.collapse import effective_rank, sigreg_loss
from wmrobot.model.encoders import make_encoder
from wmrobot.model.predictors import PREDICTOR_KINDS, make_predictor

OBS, ACT, D, HIDDEN = 5, 2, 8, 16


def encoder(kind: str, size: int = 32, **overrides) -> nn.Module:
    torch.manual_seed(0)
    kwargs = dict(obs_dim=OBS, image_shape=(size, size, 3), frame_stack=1, latent_dim=D)
    kwargs.update(hidden=HIDDEN, depth=2, width=8)
    kwargs.update(overrides)
    return make_encoder(kind, **kwargs)


def frames(*lead: int, size: int = 32, stack: int = 1, seed: int = 0) -> torch.Tensor:
    shape = (*lead, size, size, 3) if stack == 1 else (*lead, stack, size, size, 3)
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)


# ---------------------------------------------------------------- encoders


def test_state_encoder_is_the_plain_mlp_over_any_leading_dims():
    enc = encoder("mlp")
    assert enc.needs == ("state",)
    assert isinstance(enc.net, nn.Sequential) and isinstance(enc.net[1], nn.LayerNorm)
    state = torch.randn(4, 3, OBS)
    z = enc({"state": state})
    assert z.shape == (4, 3, D)
    torch.testing.assert_close(z, enc.net(state))


@pytest.mark.parametrize("size", [32, 64, 96])
@pytest.mark.parametrize("stack", [1, 3])
def test_pixel_encoder_shapes(size: int, stack: int):
    enc = encoder("cnn", size, frame_stack=stack)
    assert enc.needs == ("pixels",)
    assert enc({"pixels": frames(2, 3, size=size, stack=stack)}).shape == (2, 3, D)
    assert enc({"pixels": frames(5, size=size, stack=stack)}).shape == (5, D)


@pytest.mark.parametrize("stack", [1, 3])
def test_pixel_encoder_matches_a_plain_nchw_pass_with_frames_stacked_on_channels(stack: int):
    enc = encoder("cnn", frame_stack=stack)
    pixels = frames(4, stack=stack)
    x = pixels.float() / 255.0 - 0.5
    per_frame = [x] if stack == 1 else [x[:, s] for s in range(stack)]
    nchw = torch.cat([f.permute(0, 3, 1, 2).contiguous() for f in per_frame], dim=1)
    expected = enc.head(enc.trunk.convs(nchw).flatten(1))
    torch.testing.assert_close(enc({"pixels": pixels}), expected)
    # float frames in [0, 1] (e.g. after augmentation) give the same latents
    torch.testing.assert_close(enc({"pixels": pixels.float() / 255.0}), expected)


def test_pixel_encoder_trains():
    enc = encoder("cnn", frame_stack=2)
    enc({"pixels": frames(3, stack=2)}).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_fusion_encoder_reads_both_state_and_pixels():
    enc = encoder("fusion")
    assert set(enc.needs) == {"state", "pixels"}
    inputs = {"state": torch.randn(2, 3, OBS), "pixels": frames(2, 3)}
    z = enc(inputs)
    assert z.shape == (2, 3, D)
    assert not torch.allclose(z, enc({**inputs, "state": inputs["state"] + 1.0}))
    assert not torch.allclose(z, enc({**inputs, "pixels": frames(2, 3, seed=1)}))


def test_encoder_errors_name_the_bad_value():
    with pytest.raises(ConfigError, match="'vit'.*mlp, cnn, fusion"):
        encoder("vit")
    with pytest.raises(ConfigError, match=r"inputs\['pixels'\].*\['state'\]"):
        encoder("cnn")({"state": torch.zeros(1, OBS)})
    with pytest.raises(ConfigError, match=r"\(2, 32, 32, 4\).*\(32, 32, 3\)"):
        encoder("cnn")({"pixels": torch.zeros(2, 32, 32, 4, dtype=torch.uint8)})
    with pytest.raises(ConfigError, match="H == W"):
        encoder("cnn", image_shape=(32, 48, 3))
    with pytest.raises(ConfigError, match="obs_dim is None"):
        encoder("mlp", obs_dim=None)
    with pytest.raises(ConfigError, match="image_size=8"):
        encoder("cnn", 8)


# ---------------------------------------------------------------- predictors

B, T, HISTORY = 3, 11, 4


def predictor(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return make_predictor(kind, D, ACT, HIDDEN, depth=2, history=HISTORY)


def sequence(seed: int = 0, steps: int = T) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, steps, D, generator=g), torch.rand(B, steps, ACT, generator=g) * 2 - 1


@pytest.mark.parametrize("kind", PREDICTOR_KINDS)
def test_predictor_shapes(kind: str):
    pred = predictor(kind)
    z, a = sequence()
    assert pred(z, a).shape == (B, T, D)
    z_next, _ = pred.step(z[:, 0], a[:, 0], pred.init_state(z[:, 0]))
    assert z_next.shape == (B, D)
    assert pred.rollout(z[:, 0], a).shape == (B, T, D)


@pytest.mark.parametrize("kind", PREDICTOR_KINDS)
@pytest.mark.parametrize("steps", [HISTORY - 1, T])  # shorter and longer than the history
def test_step_with_teacher_forcing_reproduces_forward(kind: str, steps: int):
    pred = predictor(kind)
    z, a = sequence(steps=steps)
    state, outputs = pred.init_state(z[:, 0]), []
    for t in range(steps):
        z_next, state = pred.step(z[:, t], a[:, t], state)
        outputs.append(z_next)
    torch.testing.assert_close(torch.stack(outputs, 1), pred(z, a), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", PREDICTOR_KINDS)
def test_rollout_is_forward_on_its_own_predictions(kind: str):
    pred = predictor(kind)
    z, a = sequence()
    imagined = pred.rollout(z[:, 0], a)
    fed_back = torch.cat([z[:, :1], imagined[:, :-1]], dim=1)
    torch.testing.assert_close(pred(fed_back, a), imagined, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(imagined[:, 0], imagined[:, -1])


@pytest.mark.parametrize("kind", PREDICTOR_KINDS)
def test_predictions_are_frame_causal(kind: str):
    pred = predictor(kind)
    z, a = sequence()
    out, t = pred(z, a), 5
    for z2, a2 in [(z.clone(), a), (z, a.clone())]:
        z2[:, t] += 1.0
        a2[:, t] -= 0.5
        changed = pred(z2, a2)
        torch.testing.assert_close(changed[:, :t], out[:, :t])
        assert (changed[:, t] - out[:, t]).abs().max() > 1e-4


def test_mlp_and_transformer_see_only_their_context():
    z, a = sequence()
    z2 = z.clone()
    z2[:, 2] += 1.0
    mlp_pred, transformer = predictor("mlp"), predictor("transformer")
    torch.testing.assert_close(mlp_pred(z2, a)[:, 3:], mlp_pred(z, a)[:, 3:])
    # the window ending at t holds steps t-3..t: step 2 reaches outputs 2..5 only
    diff = (transformer(z2, a) - transformer(z, a)).abs().amax(dim=(0, 2))
    assert (diff[2 : 2 + HISTORY] > 1e-4).all()
    assert (diff[2 + HISTORY :] == 0).all()


@pytest.mark.parametrize("kind", PREDICTOR_KINDS)
def test_gradients_reach_every_predictor_parameter(kind: str):
    pred = predictor(kind)
    z, a = sequence()
    z.requires_grad_(True)
    (pred(z, a) - torch.randn(B, T, D)).square().mean().backward()
    assert z.grad.abs().sum() > 0
    for name, p in pred.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mlp_predictor_keeps_the_exported_structure():
    pred = predictor("mlp")
    assert isinstance(pred.net, nn.Sequential) and pred.net[0].in_features == D + ACT
    z, a = sequence()
    torch.testing.assert_close(pred(z, a), z + pred.net(torch.cat([z, a], -1)))


def test_predictor_errors_name_the_bad_value():
    with pytest.raises(ConfigError, match="'lstm'.*mlp, gru, transformer"):
        make_predictor("lstm", D, ACT, HIDDEN, 2)
    with pytest.raises(ConfigError, match="hidden=18.*4 heads"):
        make_predictor("transformer", D, ACT, 18, 2)
    with pytest.raises(ConfigError, match="depth=0"):
        make_predictor("gru", D, ACT, HIDDEN, 0)


# ---------------------------------------------------------------- SIGReg


def gaussian_expectation(t_max: float = 3.0) -> float:
    """E[N |phi_N(t) - phi(t)|^2] = 1 - exp(-t^2) under N(0, 1), integrated against
    exp(-t^2/2) over [-t_max, t_max]."""
    erf_part = math.sqrt(2 * math.pi) * math.erf(t_max / math.sqrt(2))
    return erf_part - math.sqrt(2 * math.pi / 3) * math.erf(t_max * math.sqrt(1.5))


def test_sigreg_is_small_for_standard_gaussians_and_large_otherwise():
    g = torch.Generator().manual_seed(0)
    n = 4096
    null = [sigreg_loss(torch.randn(n, 16, generator=g), generator=g).item() for _ in range(8)]
    assert sum(null) / len(null) == pytest.approx(gaussian_expectation(), rel=0.2)
    z = torch.randn(n, 16, generator=g)
    bad = {
        "constant": torch.zeros(n, 16),
        "rank 1": torch.randn(n, 1, generator=g) * torch.ones(1, 16),
        "shrunk": 0.3 * z,
        "inflated": 3.0 * z,
        "shifted": z + 1.0,
    }
    for name, embeddings in bad.items():
        assert sigreg_loss(embeddings, generator=g) > 50 * max(null), name


def test_sigreg_directions_are_seeded_or_fixed():
    z = torch.randn(256, 6, generator=torch.Generator().manual_seed(0))
    z[:, 0] *= 0.3
    draw = [sigreg_loss(z, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert draw[0] == draw[1] and draw[0] != draw[2]
    fixed = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    assert sigreg_loss(z, fixed) == pytest.approx(draw[0].item(), rel=1e-5)
    # an axis direction sees one coordinate alone: the first is N(0, 0.3^2), the third N(0, 1)
    axis = torch.zeros(6, 1)
    axis[0] = 3.0
    assert sigreg_loss(z, axis) > 10 * sigreg_loss(z, axis.roll(2, dims=0))
    with pytest.raises(ConfigError, match=r"\(5, 8\) must be \(D=6, M\)"):
        sigreg_loss(z, torch.randn(5, 8))
    with pytest.raises(ConfigError, match="knots=1"):
        sigreg_loss(z, knots=1)


def test_sigreg_gradient_descent_undoes_a_collapse():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g)
    enc = nn.Linear(8, 8)
    with torch.no_grad():  # rank-1 weights: every embedding on one line
        enc.weight.copy_(0.1 * torch.randn(8, 1, generator=g) @ torch.randn(1, 8, generator=g))
        enc.bias.zero_()
    assert effective_rank(enc(x)) < 1.01
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    for _ in range(300):
        loss = sigreg_loss(enc(x), directions=32, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert effective_rank(enc(x)) > 6.0
    assert loss < 10.0
