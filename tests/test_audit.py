"""The model audit: probe maths, what it measures on a trained model against an untrained one,
and the `wmrobot eval model` command."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from wmrobot.cli import main
from wmrobot.datasets import EpisodeStore, collect
from wmrobot.errors import DatasetError
from wmrobot.eval.audit import (
    audit,
    fit_probe,
    probe_quantities,
    r2_score,
    shown_horizons,
)
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.train import LossWeights, TrainConfig, load_checkpoint, save_checkpoint, train
from wmrobot.train.data import build_model

MODEL = ModelConfig(
    latent_dim=8, hidden=32, depth=1, goal_dim=4, ema=0.9, latent_weight=0.0, cost_weight=1.0
)


@pytest.fixture(scope="module")
def maze(tmp_path_factory) -> str:
    """Ten random PointMaze episodes (open layout) of 100 steps."""
    path = tmp_path_factory.mktemp("audit") / "maze.zarr"
    collect(str(path), "wmrobot/PointMaze-v0", {"layout": "open"}, episodes=10, progress=False)
    return str(path)


@pytest.fixture(scope="module")
def umaze(tmp_path_factory) -> str:
    """A dataset of another layout of the same env: the same spaces, another task."""
    path = tmp_path_factory.mktemp("umaze") / "umaze.zarr"
    collect(str(path), "wmrobot/PointMaze-v0", {"layout": "umaze"}, episodes=2, progress=False)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(maze, tmp_path_factory):
    cfg = TrainConfig(
        steps=150,
        batch_size=32,
        horizon=3,
        lr=3e-3,
        weight_decay=0.0,
        warmup=10,
        grad_clip=10.0,
        loss=LossWeights(prediction=1.0, variance=1.0, covariance=0.04, cost=1.0),
        log_every=100,
        seed=0,
        tensorboard=False,
    )
    return train(maze, tmp_path_factory.mktemp("audit") / "ckpt", MODEL, cfg, progress=False)


# ------------------------------------------------------------------------------- probe maths
def test_a_probe_recovers_a_linear_target_and_finds_nothing_in_noise():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3000, 8, generator=gen) * torch.linspace(0.1, 10, 8)  # unequal scales
    weight = torch.randn(8, 3, generator=gen)
    target = z @ weight + 5.0 + 1e-3 * torch.randn(3000, 3, generator=gen)
    probe = fit_probe(z[:2000], target[:2000])
    assert r2_score(target[2000:], probe.predict(z[2000:])) > 0.999

    noise = torch.randn(3000, 3, generator=gen)
    probe = fit_probe(z[:2000], noise[:2000])
    assert abs(r2_score(noise[2000:], probe.predict(z[2000:]))) < 0.02


def test_r2_is_one_for_exact_zero_for_the_mean_and_skips_constant_dimensions():
    y = torch.tensor([[0.0, 7.0], [1.0, 7.0], [2.0, 7.0], [3.0, 7.0]])
    assert r2_score(y, y) == pytest.approx(1.0)
    mean = y.mean(0).expand_as(y)
    assert r2_score(y, mean) == pytest.approx(0.0)
    # The constant second column would divide by zero; only the first counts.
    off = y + torch.tensor([0.0, 100.0])
    assert r2_score(y, off) == pytest.approx(1.0)
    assert np.isnan(r2_score(y[:, 1:], y[:, 1:]))


def test_positions_and_velocities_come_from_the_physics_state(maze):
    store = EpisodeStore.open(maze)
    quantities = {q.name: q for q in probe_quantities(store)}
    assert set(quantities) == {"position", "velocity", "goal position"}
    physics = store.array("physics")[: store.n_rows]
    position = physics[:, quantities["position"].columns]
    velocity = physics[:, quantities["velocity"].columns]
    np.testing.assert_allclose(position, store.array("obs/achieved_goal")[: store.n_rows], 1e-6)
    observation = store.array("obs/observation")[: store.n_rows]
    np.testing.assert_allclose(np.hstack([position, velocity]), observation, rtol=1e-6)


def test_shown_horizons_end_at_the_horizon():
    assert shown_horizons(20) == [1, 2, 5, 10, 20]
    assert shown_horizons(7) == [1, 2, 5, 7]
    assert shown_horizons(1) == [1]


# ------------------------------------------------------------------------------- the audit
def test_a_trained_model_beats_an_untrained_one_and_the_no_change_baseline(maze, checkpoint):
    store = EpisodeStore.open(maze)
    trained, _ = load_checkpoint(checkpoint)
    torch.manual_seed(1)
    untrained = build_model(store, MODEL)
    ours = audit(trained, store, horizon=10, seed=0, max_windows=300)
    theirs = audit(untrained, store, horizon=10, seed=0, max_windows=300)

    assert ours.split["test_episodes"] == theirs.split["test_episodes"]
    assert not set(ours.split["test_episodes"]) & set(ours.split["train_episodes"])
    position, untrained_position = ours.probes["position"], theirs.probes["position"]
    assert position["r2_encoded"] > untrained_position["r2_encoded"]
    assert position["r2_imagined"][4] > untrained_position["r2_imagined"][4]
    assert ours.prediction["normalised"][0] < ours.prediction["baseline_normalised"][0]
    assert theirs.prediction["normalised"][0] > ours.prediction["normalised"][0]
    assert len(ours.prediction["mse"]) == len(position["r2_imagined"]) == 10
    assert ours.collapse["encoded"]["collapsed"] == 0.0
    assert 1 <= ours.collapse["encoded"]["effective_rank"] <= 8


def test_the_audit_is_deterministic_for_a_seed(maze, checkpoint):
    store = EpisodeStore.open(maze)
    model, _ = load_checkpoint(checkpoint)
    a = audit(model, store, horizon=5, seed=3, max_windows=100).as_dict()
    b = audit(model, store, horizon=5, seed=3, max_windows=100).as_dict()
    c = audit(model, store, horizon=5, seed=4, max_windows=100).as_dict()
    assert a == b
    assert a != c


def test_the_audit_refuses_a_dataset_of_other_spaces(maze):
    store = EpisodeStore.open(maze)
    model = WorldModel(6, 2, MODEL)
    with pytest.raises(DatasetError, match=r"observation size 4, but the model was trained on 6"):
        audit(model, store, horizon=5)


def test_the_audit_reads_pixel_models_with_frame_stacks(tmp_path):
    path = str(tmp_path / "pixels.zarr")
    collect(path, "wmrobot/PointMaze-v0", {"layout": "open"}, episodes=3, pixels=16, progress=False)
    store = EpisodeStore.open(path)
    cnn = replace(MODEL, encoder="cnn", frame_stack=2, width=4)
    torch.manual_seed(0)
    report = audit(build_model(store, cnn), store, horizon=4, max_windows=50)
    assert len(report.probes["velocity"]["r2_imagined"]) == 4
    assert np.isfinite(report.prediction["normalised"]).all()

    other = WorldModel(4, 2, cnn, image_shape=(32, 32, 3))
    with pytest.raises(
        DatasetError, match=r"image shape \(16, 16, 3\), but the model was trained on \(32, 32, 3\)"
    ):
        audit(other, store, horizon=4)


# ------------------------------------------------------------------------------------- CLI
def test_eval_model_prints_tables_and_writes_the_json_and_plots(
    maze, checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # Hydra's run directory, runs/eval/<timestamp>/, goes there
    out = tmp_path / "audit"
    args = [f"checkpoint={checkpoint}", f"dataset={maze}", "horizon=6", "max_windows=200"]
    assert main(["eval", "model", *args, f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "linear-probe R²" in printed and "its training data" in printed
    assert {p.name for p in out.iterdir()} == {"audit.json", "prediction_error.png", "probe_r2.png"}
    record = json.loads((out / "audit.json").read_text())
    assert record["horizons"] == [1, 2, 3, 4, 5, 6]
    assert record["dataset"]["training_data"] is True
    assert set(record["probes"]) == {"position", "velocity", "goal position"}
    assert (out / "probe_r2.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def other_spaces_checkpoint(tmp_path):
    return save_checkpoint(
        WorldModel(6, 2, MODEL), tmp_path / "other", {"obs_key": "obs/observation"}
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["checkpoint=/does/not/exist", "dataset={maze}"], "/does/not/exist"),
        (["checkpoint={ckpt}", "dataset=/no/such.zarr"], "/no/such.zarr"),
        (["checkpoint={ckpt}", "dataset={maze}", "horizon=500"], "horizon=500"),
        (["checkpoint={ckpt}", "dataset={maze}", "horizon=abc"], "horizon='abc'"),
        (["checkpoint={ckpt}", "dataset={maze}", "colour=red"], "unknown option 'colour'"),
        (["checkpoint={ckpt}"], "dataset is required"),
        (["checkpoint={other}", "dataset={maze}"], "but the model was trained on 6"),
        # The same spaces, another task: what `plan` refuses too.
        (["checkpoint={ckpt}", "dataset={umaze}"], "audit it on a dataset of its task"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args, needle, maze, umaze, checkpoint, other_spaces_checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    paths = {"maze": maze, "umaze": umaze, "ckpt": checkpoint, "other": other_spaces_checkpoint}
    assert main(["eval", "model", *(a.format(**paths) for a in args)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("wmrobot eval model: error:") and needle in err, err
    assert not (tmp_path / "runs").exists()


def test_eval_needs_a_known_subcommand(capsys):
    assert main(["eval", "frobnicate"]) == 2
    assert "unknown subcommand 'frobnicate'" in capsys.readouterr().err
    assert main(["eval", "--help"]) == 0
    assert "checkpoint=DIR" in capsys.readouterr().out
