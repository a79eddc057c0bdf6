"""The `wmrobot` command: help texts, and one clear line with a non-zero exit for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wmrobot.cli import main


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
