"""Checkpoints round-trip and fail clearly; the trainer writes one from a tiny dataset."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import zarr

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.errors import CheckpointError, DatasetError
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.train import LossWeights, TrainConfig, load_checkpoint, save_checkpoint, train


def tiny_config(latent_dim: int = 8) -> ModelConfig:
    return ModelConfig(
        latent_dim=latent_dim,
        hidden=16,
        depth=1,
        goal_dim=3,
        ema=0.9,
        latent_weight=0.5,
        cost_weight=1.0,
    )


def tiny_train_config(steps: int = 4) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=8,
        horizon=3,
        lr=1e-3,
        weight_decay=0.0,
        warmup=1,
        grad_clip=10.0,
        loss=LossWeights(prediction=1.0, variance=1.0, covariance=0.04, cost=1.0),
        log_every=2,
        seed=0,
    )


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = WorldModel(4, 2, tiny_config(), obs_mean=torch.full((4,), 0.5))
    directory = save_checkpoint(model, tmp_path / "ckpt", {"steps": 7})
    return model, directory


def test_round_trip_gives_identical_outputs(saved):
    model, directory = saved
    loaded, meta = load_checkpoint(directory)
    assert meta["steps"] == 7
    assert meta["model"] == model.config_dict()
    assert not loaded.training
    obs, actions = torch.randn(5, 4), torch.rand(5, 6, 2) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded.encode(obs), model.encode(obs))
        assert torch.equal(loaded.encode_target(obs), model.encode_target(obs))
        z = model.encode(obs)
        assert torch.equal(loaded.rollout(z, actions), model.rollout(z, actions))
        assert torch.equal(loaded.cost(z, z.flip(0)), model.cost(z, z.flip(0)))
    assert torch.equal(loaded.obs_mean, torch.full((4,), 0.5))
    assert not list(directory.glob("*.partial"))


def test_missing_directory_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")


def test_truncated_weights_are_a_checkpoint_error(saved):
    _, directory = saved
    weights = directory / "model.pt"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.pt"):
        load_checkpoint(directory)


def test_weights_of_another_config_are_a_checkpoint_error(saved):
    _, directory = saved
    meta = json.loads((directory / "meta.json").read_text())
    meta["model"]["latent_dim"] = 16
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match its model config"):
        load_checkpoint(directory)


def test_malformed_meta_is_a_checkpoint_error(saved):
    _, directory = saved
    (directory / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="malformed"):
        load_checkpoint(directory)


def test_train_writes_a_loadable_checkpoint(maze_dataset, tmp_path):
    out = train(
        str(maze_dataset), tmp_path / "run", tiny_config(), tiny_train_config(), progress=False
    )
    assert {"model.pt", "meta.json", "metrics.csv"} <= {p.name for p in out.iterdir()}

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 2, 3]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert {"prediction", "variance", "covariance", "cost", "effective_rank"} <= set(rows[0])

    model, meta = load_checkpoint(out)
    store = EpisodeStore.open(maze_dataset)
    assert meta["dataset"]["fingerprint"] == store.fingerprint()
    assert meta["dataset"]["episodes"] == 4
    assert meta["obs_key"] == "obs/observation" and meta["steps"] == 4
    stats = store.attrs["stats"]["obs/observation"]
    np.testing.assert_allclose(model.obs_mean.numpy(), stats["mean"], rtol=1e-6)
    assert model.action_low.tolist() == [-1.0, -1.0] and model.action_high.tolist() == [1.0, 1.0]
    assert model.encode(torch.zeros(1, 4)).shape == (1, 8)


def test_training_is_reproducible_for_a_seed(maze_dataset, tmp_path):
    cfg = tiny_train_config(steps=3)
    a, _ = load_checkpoint(
        train(str(maze_dataset), tmp_path / "a", tiny_config(), cfg, progress=False)
    )
    b, _ = load_checkpoint(
        train(str(maze_dataset), tmp_path / "b", tiny_config(), cfg, progress=False)
    )
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_nan_in_the_observations_stops_training(maze_dataset, tmp_path):
    observation = zarr.open_group(maze_dataset, mode="r+")["data/obs/observation"]
    n = EpisodeStore.open(maze_dataset).n_rows
    observation[:n] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        train(
            str(maze_dataset), tmp_path / "run", tiny_config(), tiny_train_config(), progress=False
        )


def test_training_needs_a_goal_conditioned_dataset(new_store, make_episode, tmp_path):
    new_store().append([make_episode(5, np.random.default_rng(0))])
    with pytest.raises(DatasetError, match="obs/observation"):
        train(str(tmp_path / "d.zarr"), tmp_path / "run", tiny_config(), tiny_train_config())


def test_a_hostile_pickle_is_refused_in_one_line_and_never_runs(saved, hostile_pickle):
    write, marker = hostile_pickle
    _, directory = saved
    path = write(directory / "model.pt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(directory)
    assert str(refused.value) == (
        f"{path} holds objects a safe load refuses (it names io.open); it was not written by "
        f"wmrobot or is damaged: re-create it"
    )
    assert not marker.exists()


def test_a_model_directory_holds_only_what_its_writers_write():
    """check_model_dir's list names every file that training and agents put beside a model."""
    from wmrobot.agent import AGENT_FILE
    from wmrobot.model.checkpoint import MODEL_DIR_FILES
    from wmrobot.train.metrics import METRICS
    from wmrobot.train.resume import TRAIN_STATE

    assert {METRICS, TRAIN_STATE, AGENT_FILE, "tb"} <= MODEL_DIR_FILES


def test_training_into_a_folder_of_other_files_is_refused_before_it_writes(tmp_path, tree_of):
    dataset = tmp_path / "d.zarr"
    collect(str(dataset), "wmrobot/PointMaze-v0", episodes=2, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    before = tree_of(tmp_path / "mine")
    with pytest.raises(CheckpointError, match="holds files that are not a model's"):
        train(str(dataset), tmp_path / "mine", tiny_config(), tiny_train_config(), progress=False)
    assert tree_of(tmp_path / "mine") == before
