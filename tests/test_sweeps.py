"""Every command is a Hydra app: sweeps (-m) and launchers, Hydra's run directories and logging."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wmrobot.cli import main
from wmrobot.datasets import collect

TINY_TRAIN = [
    "model.train.steps=2",
    "model.train.batch_size=8",
    "model.train.horizon=2",
    "model.train.log_every=1",
    "model.train.tensorboard=false",
    "model.hidden=16",
    "model.latent_dim=8",
    "model.critic=false",
]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep") / "tiny.zarr"
    collect(str(path), "wmrobot/PointMaze-v0", {"layout": "open"}, episodes=2, progress=False)
    return path


def test_a_joblib_sweep_runs_two_jobs_each_with_its_own_checkpoint(
    tiny_dataset, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    assert main(["train", *args, f"dataset={tiny_dataset}", *TINY_TRAIN]) == 0
    (sweep,) = (tmp_path / "runs" / "train" / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for seed, job in enumerate(jobs):
        meta = json.loads((job / "checkpoint" / "meta.json").read_text())
        assert meta["seed"] == seed
        assert (job / "checkpoint" / "model.pt").is_file()
        assert (job / ".hydra" / "config.yaml").is_file() and (job / "config.yaml").is_file()
        assert f"checkpoint {job.resolve()}/checkpoint" in (job / "run.log").read_text()


def test_a_run_writes_hydras_run_directory_with_its_config_and_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["collect", "episodes=1", "env.kwargs.layout=open", "seed=3"]) == 0
    (run,) = (tmp_path / "runs" / "collect").iterdir()
    assert "seed: 3" in (run / "config.yaml").read_text()
    assert "seed: 3" in (run / ".hydra" / "config.yaml").read_text()
    assert "collect: 1 episodes, 100 steps" in (run / "run.log").read_text()
    assert (run / "dataset.zarr").is_dir()


def run_cli(cwd, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wmrobot.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["train", "dataset=d.zarr", "model.train.lr=-1"],
            "wmrobot train: error: model.train.lr=-1.0 is out of range: it must be > 0",
        ),
        (
            ["train", "dataset=d.zarr", "model.train.lrr=1"],
            "wmrobot train: error: unknown option 'model.train.lrr'; see `wmrobot train --help`",
        ),
        (
            ["train", "-m", "dataset=/no/such.zarr", "seed=0,1"],
            "wmrobot train: error: '/no/such.zarr' is not a wmrobot dataset (no such path); "
            "make one with `wmrobot collect`",
        ),
        (
            ["train", "-m", "dataset=d.zarr", "seed=0,-1", "model.train.lrr=1"],
            "wmrobot train: error: unknown option 'model.train.lrr'; see `wmrobot train --help`",
        ),
    ],
)
def test_bad_input_through_hydra_is_one_line_exit_2_and_no_directory(tmp_path, args, line):
    done = run_cli(tmp_path, *args)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [line]
    assert "HYDRA_FULL_ERROR" not in done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_lists_options_with_values_and_descriptions(capsys):
    assert main(["train", "-m", "model.train.steps=7", "--help"]) == 0
    out = capsys.readouterr().out
    assert "model.train.steps=7" in out and "optimisation steps" in out
    assert "model.train.lr=0.001" in out
    assert main(["collect", "env=reacher", "--help"]) == 0
    out = capsys.readouterr().out
    assert 'env.id="wmrobot/Reacher-v0"' in out and "planner" not in out


def test_a_non_zero_rank_makes_no_run_directory_and_no_log(tmp_path):
    done = run_cli(
        tmp_path, "collect", "episodes=1", "env.kwargs.layout=open", "out=d.zarr", RANK="1"
    )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["d.zarr"]
    assert "collect:" not in done.stdout + done.stderr


def test_runs_started_at_once_get_directories_of_their_own(tmp_path):
    """Two commands started in the same second must never share a run directory (and so a
    dataset with two writers, or one checkpoint)."""
    cmd = [sys.executable, "-m", "wmrobot.cli", "collect", "episodes=2", "env.kwargs.layout=open"]
    runs = [subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE) for _ in range(2)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    made = sorted((tmp_path / "runs" / "collect").iterdir())
    assert len(made) == 2
    for run_dir in made:
        assert (run_dir / "dataset.zarr").is_dir() and (run_dir / "run.log").is_file()
