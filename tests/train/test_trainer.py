"""The trainer's guards and logs: NaN data, anti-collapse choice, EMA schedule, TensorBoard,
critic fine-tuning, and DDP training under torchrun (gloo, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.errors import ConfigError, DatasetError
from wmrobot.model import ModelConfig
from wmrobot.train import LossWeights, TrainConfig, load_checkpoint, train
from wmrobot.train.data import build_model
from wmrobot.train.resume import TRAIN_STATE


def tiny_model(**changes) -> ModelConfig:
    cfg = ModelConfig(
        latent_dim=8, hidden=16, depth=1, goal_dim=3, ema=0.9, latent_weight=0.5, cost_weight=1.0
    )
    return replace(cfg, **changes)


def tiny_train(steps: int = 6, **changes) -> TrainConfig:
    cfg = TrainConfig(
        steps=steps,
        batch_size=16,
        horizon=3,
        lr=1e-3,
        weight_decay=0.0,
        warmup=2,
        grad_clip=10.0,
        loss=LossWeights(1.0, 1.0, 0.04, 1.0),
        log_every=2,
        seed=0,
        checkpoint_every=2,
        tensorboard=False,
    )
    return replace(cfg, **changes)


def read_metrics(out):
    import csv

    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_nan_in_the_data_stops_training_and_keeps_the_last_good_state(maze_dataset, tmp_path):
    import zarr

    begin, end = EpisodeStore.open(maze_dataset).episode_bounds(1)
    obs = zarr.open_group(str(maze_dataset), mode="r+")["data/obs/observation"]
    row = obs[begin + 5]
    row[0] = np.nan  # one value in one row of four episodes
    obs[begin + 5] = row
    out = tmp_path / "run"
    with pytest.raises(DatasetError) as err:
        train(
            str(maze_dataset), out, tiny_model(), tiny_train(steps=500, checkpoint_every=1),
            progress=False,
        )  # fmt: skip
    message = str(err.value)
    assert "\n" not in message
    assert "'obs/observation'" in message and "NaN/Inf" in message
    bad = int(message.split(" at step ")[1].split(":")[0])
    assert 0 < bad < 499 and "last good state is kept" in message
    state = torch.load(out / TRAIN_STATE, weights_only=True)  # the step before the bad one
    assert state["step"] == bad - 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("anticollapse", ["vicreg", "sigreg", "none"])
def test_the_anti_collapse_term_is_the_one_chosen(maze_dataset, tmp_path, anticollapse):
    out = tmp_path / anticollapse
    train(
        str(maze_dataset), out, tiny_model(), tiny_train(anticollapse=anticollapse),
        progress=False,
    )  # fmt: skip
    rows = read_metrics(out)
    variance = [float(r["variance"]) for r in rows]
    sigreg = [float(r["sigreg"]) for r in rows]
    assert (max(variance) > 0) == (anticollapse == "vicreg")
    assert (max(sigreg) > 0) == (anticollapse == "sigreg")


def test_an_unknown_anti_collapse_term_is_a_config_error(maze_dataset, tmp_path):
    with pytest.raises(ConfigError, match="anticollapse"):
        train(
            str(maze_dataset), tmp_path, tiny_model(), tiny_train(anticollapse="barlow"),
            progress=False,
        )  # fmt: skip


def test_the_ema_momentum_follows_its_cosine_schedule(maze_dataset):
    model = build_model(EpisodeStore.open(maze_dataset), tiny_model(ema=0.99, ema_end=1.0))
    m = [model.momentum(s, 101) for s in range(101)]
    assert m[0] == pytest.approx(0.99) and m[-1] == pytest.approx(1.0)
    assert m[50] == pytest.approx(0.995)
    assert all(b >= a for a, b in zip(m, m[1:], strict=False))
    constant = build_model(EpisodeStore.open(maze_dataset), tiny_model(ema=0.9))
    assert {constant.momentum(s, 10) for s in range(10)} == {0.9}


def test_tensorboard_gets_the_logged_scalars(maze_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb-run"
    train(str(maze_dataset), out, tiny_model(), tiny_train(tensorboard=True), progress=False)
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [int(r["step"]) for r in read_metrics(out)]
    assert loss[0].value == pytest.approx(float(read_metrics(out)[0]["loss"]), rel=1e-4)


def test_torchrun_trains_one_model_with_ddp_on_two_processes(maze_dataset, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "wmrobot.cli", "train", f"dataset={maze_dataset}",
        "model.train.steps=8", "model.train.batch_size=16", "model.train.horizon=3",
        "model.train.log_every=2", "model.train.tensorboard=false", "model.hidden=16",
        "model.latent_dim=8", "model.critic=false",
    ]  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=work)
    assert done.returncode == 0, done.stderr[-2000:]
    # No out=: rank 0 alone makes the run directory, and the other rank writes nothing.
    (out,) = (run / "checkpoint" for run in (work / "runs" / "train").iterdir())
    assert sorted(p.name for p in work.iterdir()) == ["runs"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["ranks_in_sync"] is True  # every weight equal
    assert [int(r["step"]) for r in read_metrics(out)] == [0, 2, 4, 6, 7]  # rank 0 alone
    model, _ = load_checkpoint(out)
    assert model.critic is None and model.latent_dim == 8


@pytest.fixture(scope="module")
def pixel_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("pixels") / "maze.zarr"
    collect(
        str(path), "wmrobot/PointMaze-v0", {"layout": "open"}, episodes=3, seed=0, pixels=16,
        progress=False,
    )  # fmt: skip
    return path


@pytest.mark.parametrize(
    "encoder, stack", [("cnn", 1), ("cnn", 3), ("fusion", 2)], ids=["cnn", "cnn-stack3", "fusion"]
)
def test_pixel_models_train_and_round_trip(pixel_dataset, tmp_path, encoder, stack):
    out = tmp_path / encoder
    cfg = tiny_model(encoder=encoder, frame_stack=stack, width=4, critic=True)
    train(str(pixel_dataset), out, cfg, tiny_train(steps=3), progress=False)
    model, meta = load_checkpoint(out)
    assert model.image_shape == (16, 16, 3) and meta["input_keys"]["pixels"] == "pixels"
    frames = torch.randint(0, 256, (5, stack, 16, 16, 3), dtype=torch.uint8)
    inputs = {"pixels": frames if stack > 1 else frames[:, 0], "state": torch.randn(5, 4)}
    z = model.encode(inputs)
    assert z.shape == (5, 8) and torch.isfinite(z).all()
    assert model.value(z, z.flip(0)).shape == (5,)
    rows = read_metrics(out)
    assert all(np.isfinite(float(r["loss"])) for r in rows)


def test_the_critic_fine_tunes_on_the_frozen_encoder_after_the_joint_run(maze_dataset, tmp_path):
    from wmrobot.train.critic import CriticConfig

    out = tmp_path / "critic"
    cfg = tiny_train(steps=4, critic=CriticConfig(batch_size=32, finetune=6))
    train(str(maze_dataset), out, tiny_model(critic=True, critic_hidden=16), cfg, progress=False)
    rows = read_metrics(out)
    tail = [r for r in rows if int(r["step"]) >= 4]
    assert [int(r["step"]) for r in tail] == [4, 6, 8, 9] and all(r["loss"] == "" for r in tail)
    model, _ = load_checkpoint(out)
    joint = tmp_path / "joint-only"  # the same run without fine-tuning
    train(
        str(maze_dataset), joint, model.cfg,
        replace(cfg, critic=CriticConfig(batch_size=32, finetune=0)), progress=False,
    )  # fmt: skip
    plain, tuned = load_checkpoint(joint)[0].state_dict(), model.state_dict()
    # Fine-tuning moves the critic (and its target) only; the world model stays frozen.
    moved = {name for name, value in plain.items() if not torch.equal(value, tuned[name])}
    assert moved and all(name.startswith("critic") for name in moved), moved
    assert any(name.startswith("critic_target.") for name in moved)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(str(maze_dataset), out, model.cfg, cfg, progress=False, resume=True)  # finished
    after, _ = load_checkpoint(out)
    for key, value in after.state_dict().items():
        assert torch.equal(value, before[key]), key  # a finished run is not fine-tuned twice


@pytest.mark.parametrize("anticollapse", ["none", "vicreg"])
def test_the_collapse_flag_fires_without_an_anti_collapse_term_only(
    maze_dataset, tmp_path, anticollapse
):
    """PLDM's set-up (targets from the online encoder, with gradient, no cost head): without a
    term against it the latents shrink towards a point, and the log says so."""
    out = tmp_path / anticollapse
    cfg = tiny_train(
        400,
        batch_size=128,
        lr=3e-3,
        warmup=20,
        log_every=50,
        checkpoint_every=400,
        anticollapse=anticollapse,
        stop_gradient=False,
        loss=LossWeights(1.0, 1.0, 0.04, cost=0.0),
    )
    model = ModelConfig(16, 64, 2, 8, ema=0.99, latent_weight=0.0, cost_weight=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(str(maze_dataset), out, model, cfg, progress=False)
    rows = read_metrics(out)
    flags = [int(r["collapsed"]) for r in rows]
    said = [w for w in caught if "latents look collapsed" in str(w.message)]
    if anticollapse == "none":
        assert flags[-1] == 1 and len(said) == 1, [r["z_std"] for r in rows]
        assert float(rows[-1]["z_std"]) < 0.2 * max(float(r["z_std"]) for r in rows)
    else:
        assert not any(flags) and not said


@pytest.mark.parametrize("stack", [1, 2], ids=["one-frame", "stack2"])
def test_cached_critic_batches_equal_the_encoded_ones(pixel_dataset, stack):
    """The fine-tuning's gathered latents are the target encoder's latents of the very rows
    (and goals, shown as the planner shows them) that Batches.transitions draws."""
    from wmrobot.train.critic import CriticConfig, td_loss
    from wmrobot.train.data import Batches, LatentTransitions

    store = EpisodeStore.open(pixel_dataset)
    torch.manual_seed(0)
    cfg = tiny_model(encoder="cnn", frame_stack=stack, width=4, critic=True)
    model = build_model(store, cfg)
    batches = Batches(store, model, 3, 8, CriticConfig(batch_size=64))
    latents = LatentTransitions(batches, model)
    encoded = batches.sample(torch.Generator().manual_seed(5), windows=False)["critic"]
    gathered = latents.sample(torch.Generator().manual_seed(5))["critic"]
    assert torch.equal(encoded["steps"], gathered["steps"])
    assert torch.equal(encoded["reached"], gathered["reached"])
    with torch.no_grad():
        for key, name in (("now", "z"), ("next", "z_next"), ("goal", "goal_z")):
            torch.testing.assert_close(model.encode_target(encoded[key]), gathered[name])
    if stack > 1:  # a goal is a still stack of its frame
        goal = encoded["goal"]["pixels"]
        assert torch.equal(goal[:, 0], goal[:, 1])
    loss, _ = td_loss(model, encoded, CriticConfig())
    torch.testing.assert_close(loss, td_loss(model, gathered, CriticConfig())[0])


def test_a_critic_off_the_joint_run_is_trained_only_in_fine_tuning(maze_dataset, tmp_path):
    from wmrobot.train.critic import CriticConfig

    model_cfg = tiny_model(critic=True, critic_hidden=16)
    runs = {}
    for name, critic in [
        ("joint", CriticConfig(batch_size=32, finetune=1)),
        ("separate", CriticConfig(batch_size=32, finetune=1, joint=False)),
    ]:
        out = tmp_path / name
        train(str(maze_dataset), out, model_cfg, tiny_train(steps=4, critic=critic),
              progress=False)  # fmt: skip
        runs[name] = read_metrics(out)
    assert all(r["critic"] != "" for r in runs["joint"])
    jepa_rows = [r for r in runs["separate"] if int(r["step"]) < 4]
    assert jepa_rows and all(r["critic"] == "" for r in jepa_rows)  # no TD during the JEPA run
    assert [r["critic"] != "" for r in runs["separate"] if int(r["step"]) >= 4] == [True]
    with pytest.raises(ConfigError, match="joint=false with model.train.critic.finetune=0"):
        CriticConfig(joint=False, finetune=0)
