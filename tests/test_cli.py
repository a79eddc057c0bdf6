"""The `wmrobot` command: help texts, and one clear line with a non-zero exit for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wmrobot.cli import main
from wmrobot.datasets import EpisodeStore
from wmrobot.datasets.policies import PolicySpec
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.train.resume import TRAIN_STATE


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wmrobot.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("collect", "train", "plan", "demo"):
        assert command in out


@pytest.mark.parametrize("command", ["collect", "train", "plan", "demo"])
def test_command_help_shows_options_with_current_values(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: wmrobot {command}" in out
    assert "seed=" in out or "seeds=" in out


def test_help_reflects_overrides(capsys):
    assert main(["collect", "episodes=7", "--help"]) == 0
    assert "episodes=7" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["collect", "env=nosuchenv"], "unknown env 'nosuchenv'"),
        (["collect", "episodes=-3"], "episodes=-3"),
        (["collect", "episodes=abc"], "episodes"),
        (["collect", "nosuchkey=1"], "unknown option 'nosuchkey'"),
        (["collect", "env.id=NoSuch-v9", "episodes=1"], "NoSuch-v9"),
        (["train", "dataset=/does/not/exist.zarr"], "/does/not/exist.zarr"),
        (["train"], "dataset"),
        (["plan", "checkpoint=/does/not/exist"], "/does/not/exist"),
        (["plan", "checkpoint=x", "planner.elites=999"], "planner.elites=999"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["collect", "seed=-1"], "seed=-1"),
        (["plan", "checkpoint=x", "seeds=[]"], "seeds=[]"),
        (["demo", "rl.algo=td3"], "rl.algo='td3'"),
        (["collect", "episodes=1", "out=s3://bucket/x.zarr"], "s3://bucket/x.zarr"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(args, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err


def test_console_script_exit_code_and_stderr(tmp_path):
    result = run_cli("collect", "episodes=0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "wmrobot collect: error: episodes=0 is out of range: it must be >= 1"
    ]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    from wmrobot.datasets import collect

    path = tmp_path_factory.mktemp("data") / "small.zarr"
    collect(
        str(path), "wmrobot/PointMaze-v0", policy=PolicySpec(beta=1.0), episodes=3, progress=False
    )
    return path


def test_data_info_summarises_a_dataset(small_dataset, capsys):
    assert main(["data", "info", str(small_dataset)]) == 0
    out = capsys.readouterr().out
    assert "wmrobot/PointMaze-v0" in out
    assert "3 episodes" in out
    assert "obs/observation" in out


def test_data_validate_and_replay(small_dataset, capsys):
    assert main(["data", "validate", str(small_dataset)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["data", "replay", str(small_dataset), "1"]) == 0
    assert "exact" in capsys.readouterr().out


def test_data_validate_rejects_a_real_action_on_a_final_row(small_dataset, tmp_path, capsys):
    import shutil

    import zarr

    copy = tmp_path / "broken.zarr"
    shutil.copytree(small_dataset, copy)
    group = zarr.open_group(copy, mode="r+")
    last = int(group["meta/episode_ends"][0]) - 1
    group["data/action"][last] = [0.5, 0.5]
    assert main(["data", "validate", str(copy)]) == 2
    assert "last row" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["data", "info", "/no/such.zarr"], "/no/such.zarr"),
        (["data", "replay", "{dataset}", "99"], "episode 99 out of range"),
        (["data", "replay", "{dataset}", "x"], "EPISODE must be an integer"),
        (["data", "frob", "x"], "unknown subcommand 'frob'"),
        (["data", "info"], "expected PATH"),
        (["data", "merge", "out.zarr"], "expected OUT SRC SRC"),
    ],
)
def test_data_bad_input_is_one_line(args, needle, small_dataset, capsys):
    args = [a.format(dataset=small_dataset) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_collect_from_a_gymnasium_mujoco_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["env=halfcheetah", "episodes=2", "+env.kwargs.max_episode_steps=20", "out=hc.zarr"]
    assert main(["collect", *args]) == 0
    assert main(["data", "validate", "hc.zarr"]) == 0
    assert main(["data", "replay", "hc.zarr"]) == 0


@pytest.mark.parametrize(
    ("corrupt", "needle"),
    [
        (lambda g, end: g["data/terminated"].__setitem__(end // 2, True), "set before"),
        (lambda g, end: g["data/obs/observation"].__setitem__(1, [float("nan")] * 4), "NaN"),
        (lambda g, end: g["meta/length"].__setitem__(0, 999), "meta/length"),
    ],
)
def test_data_validate_catches_corruption(corrupt, needle, small_dataset, tmp_path, capsys):
    import shutil

    import zarr

    copy = tmp_path / "broken.zarr"
    shutil.copytree(small_dataset, copy)
    group = zarr.open_group(copy, mode="r+")
    corrupt(group, int(group["meta/episode_ends"][0]))
    assert main(["data", "validate", str(copy)]) == 2
    assert needle in capsys.readouterr().err


def test_an_env_default_spelled_out_names_the_same_env():
    import wmrobot.envs  # noqa: F401  (registers the ids)
    from wmrobot.cli_common import full_kwargs as _full_kwargs

    given = _full_kwargs("wmrobot/PointMaze-v0", {"layout": "umaze"})
    spelled = _full_kwargs("wmrobot/PointMaze-v0", {"layout": "umaze", "frame_skip": 5})
    assert given == spelled and given["frame_skip"] == 5
    assert given != _full_kwargs("wmrobot/PointMaze-v0", {"layout": "umaze", "frame_skip": 4})
    assert given != _full_kwargs("wmrobot/PointMaze-v0", {"layout": "ring"})


def test_a_file_url_names_the_local_dataset_at_its_path(
    small_dataset, tmp_path, monkeypatch, capsys
):
    assert main(["data", "info", f"file://{small_dataset}"]) == 0
    out = capsys.readouterr().out
    assert "3 episodes" in out and "remote" not in out and "KiB" in out
    # collecting to one writes the dataset at that path (it used to make a folder "file:")
    monkeypatch.chdir(tmp_path)
    made = tmp_path / "made.zarr"
    assert main(["collect", "episodes=1", "env.kwargs.layout=open", f"out=file://{made}"]) == 0
    assert EpisodeStore.open(made).n_episodes == 1
    assert not any(p.name.startswith("file:") for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("array", ["meta/episode_ends", "meta/return", "data/action"])
@pytest.mark.parametrize(
    "command",
    [
        ["data", "validate", "{path}"],
        ["data", "validate", "{path}", "--deep"],
        ["data", "info", "{path}"],
        ["train", "dataset={path}", "model.train.steps=1"],
    ],
    ids=["validate", "validate-deep", "info", "train"],
)
def test_a_missing_array_is_one_line_not_a_key_error(
    array, command, small_dataset, tmp_path, capsys
):
    import shutil

    copy = tmp_path / "missing.zarr"
    shutil.copytree(small_dataset, copy)
    shutil.rmtree(copy / array)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main([arg.format(path=copy) for arg in command]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"{array} is missing" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_training_on_a_damaged_chunk_stops_with_one_line(small_dataset, tmp_path, capsys):
    # The case: eight bytes flipped in an observation chunk, and training ran on them.
    import shutil

    copy = tmp_path / "damaged.zarr"
    shutil.copytree(small_dataset, copy)
    chunk = copy / "data" / "obs" / "observation" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    for at in range(40, 48):
        data[at] ^= 0x5A
    chunk.write_bytes(bytes(data))
    assert main(["train", f"dataset={copy}", "model.train.steps=1", f"out={tmp_path}/ck"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "chunk c/0/0 of data/obs/observation is damaged (checksum mismatch)" in err


# ------------------------------------------------------------------------- out= and its folder
def one_line(capsys: pytest.CaptureFixture, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"wmrobot {command}: error:"), err
    return err


def test_train_refuses_to_overwrite_a_checkpoint_without_resume(
    maze_dataset, tmp_path, tree_of, capsys
):
    ckpt = tmp_path / "ckpt"  # what a finished `wmrobot train` leaves
    ckpt.mkdir()
    for name in ("model.pt", "meta.json", "metrics.csv", TRAIN_STATE):
        (ckpt / name).write_text(name)
    before = tree_of(tmp_path)
    assert main(["train", f"dataset={maze_dataset}", f"out={ckpt}"]) == 2
    err = one_line(capsys, "train")
    assert f"out={ckpt} holds an earlier run" in err
    assert "resume=true" in err and "another out=" in err
    assert tree_of(tmp_path) == before
    assert not Path("runs").exists()


COMMANDS_WITH_AN_OUT_FOLDER = [
    ["train", "dataset={data}", "resume=true"],  # resume continues only a run of its own
    ["distill", "checkpoint={ckpt}"],
    ["demo"],
    ["plan", "checkpoint={ckpt}"],
    ["eval", "model", "checkpoint={ckpt}", "dataset={data}"],
]


@pytest.mark.parametrize("args", COMMANDS_WITH_AN_OUT_FOLDER, ids=lambda a: a[0])
@pytest.mark.parametrize(
    ("out", "needle"),
    [
        ("{full}", "is not empty (it holds notes.txt)"),
        ("{file}", "is a file; give a folder"),
        ("{file}/sub", "cannot be made: {file} is a file"),
    ],
    ids=["non-empty folder", "a file", "under a file"],
)
def test_no_command_writes_into_a_folder_not_its_own(
    args, out, needle, maze_dataset, tmp_path, tree_of, capsys
):
    """The one non-empty out= a command writes into is train's own run, resumed."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine too")
    paths = {
        "data": maze_dataset,
        "ckpt": tmp_path / "no-checkpoint-needed",  # out= is checked before anything is read
        "full": tmp_path / "full",
        "file": tmp_path / "notes.txt",
    }
    before = tree_of(tmp_path)
    command = " ".join(args[:2]) if args[0] == "eval" else args[0]
    assert main([*(a.format(**paths) for a in args), "out=" + out.format(**paths)]) == 2
    assert needle.format(**paths) in one_line(capsys, command)
    assert tree_of(tmp_path) == before
    assert not Path("runs").exists()


def test_train_into_a_folder_it_cannot_make_is_one_line(
    maze_dataset, unwritable, tmp_path, tree_of, capsys
):
    before = tree_of(tmp_path)
    assert main(["train", f"dataset={maze_dataset}", f"out={unwritable}"]) == 2
    assert f"out={unwritable} cannot be" in one_line(capsys, "train")
    assert tree_of(tmp_path) == before
    assert not Path("runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_training_on_cuda_without_cuda_is_one_line(maze_dataset, tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["train", f"dataset={maze_dataset}", f"out={out}", "model.train.device=cuda"]) == 2
    err = one_line(capsys, "train")
    assert "CUDA is not available here" in err and "model.train.device=cpu" in err
    assert not out.exists() and not Path("runs").exists()


def test_a_checkpoint_holding_a_hostile_pickle_is_one_line_and_never_runs(
    hostile_pickle, tmp_path, capsys
):
    write, marker = hostile_pickle
    ckpt = tmp_path / "ckpt"
    WorldModel(4, 2, ModelConfig(8, 16, 1, 3, 0.9, 0.5, 1.0)).save(ckpt, {})
    write(ckpt / "model.pt")
    assert main(["plan", f"checkpoint={ckpt}"]) == 2
    err = one_line(capsys, "plan")
    assert f"{ckpt / 'model.pt'} holds objects a safe load refuses (it names io.open)" in err
    assert "re-create it" in err and "weights_only" not in err
    assert not marker.exists()


def test_a_failed_run_removes_the_out_folder_it_made(tmp_path, capsys):
    out = tmp_path / "new" / "run"  # plan's out= names its run directory
    assert main(["plan", "checkpoint=/does/not/exist", f"out={out}"]) == 2
    assert "/does/not/exist" in one_line(capsys, "plan")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()  # one that was there stays, as it was
    assert main(["plan", "checkpoint=/does/not/exist", f"out={tmp_path / 'empty'}"]) == 2
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_sweep_checks_out_job_by_job(maze_dataset, tmp_path, tree_of, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    before = tree_of(tmp_path)
    args = ["train", "-m", f"dataset={maze_dataset}", f"out={tmp_path / 'full'}", "seed=0,1"]
    assert main(args) == 2
    assert "is not empty (it holds notes.txt)" in capsys.readouterr().err.splitlines()[-1]
    assert tree_of(tmp_path) == before


def test_a_read_only_folder_for_out_is_one_line_even_as_root(tmp_path, monkeypatch):
    # The read-only case of the `unwritable` fixture skips as root (root writes anyway); the
    # check itself asks os.access, so it is tested here with os.access saying no.
    from wmrobot import cli_common
    from wmrobot.errors import ConfigError

    monkeypatch.setattr(cli_common.os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match=rf"out={tmp_path}/out cannot be written: .* read-only"):
        cli_common.check_writable(tmp_path / "out")
