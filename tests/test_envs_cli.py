"""`wmrobot envs` lists the suite, draws factor grids and reports the evaluation sets."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from wmrobot.cli import main
from wmrobot.envs import TASKS


def test_list_names_every_task_and_factor(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id in TASKS:
        assert env_id in out
    for factor in ("mass", "friction", "light", "camera_x", "door_position"):
        assert factor in out
    assert "HalfCheetah-v5" in out


def test_show_writes_a_grid_whose_rows_differ(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["envs", "show", "tworoom", "--out", str(out), "--size", "32"]) == 0
    grid = iio.imread(out)
    assert grid.ndim == 3 and grid.shape[0] > grid.shape[1]  # more settings than seeds
    # The rows (factor settings) are drawn differently: compare the top and bottom halves.
    half = grid.shape[0] // 2
    assert np.abs(grid[:half].astype(float).mean() - grid[half : 2 * half].mean()) > 0.5


def test_show_prints_the_path_it_wrote(tmp_path, capsys):
    """--out DIR writes <Name>.png in DIR; a name without a suffix is written as given."""
    for out, written in [(tmp_path, tmp_path / "PointMaze.png"), (tmp_path / "grid", None)]:
        assert main(["envs", "show", "pointmaze", "--out", str(out), "--size", "16"]) == 0
        written = written or out
        assert capsys.readouterr().out.split() == ["envs", "show:", "wrote", str(written)]
        assert written.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PointMaze.png", "grid"]


def test_show_into_a_folder_it_cannot_make_is_one_line(unwritable, tmp_path, tree_of, capsys):
    before = tree_of(tmp_path)
    assert main(["envs", "show", "pointmaze", "--out", str(unwritable / "g.png")]) == 2
    err = capsys.readouterr().err
    assert f"--out={unwritable} cannot be" in err and err.count("\n") == 1
    assert tree_of(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "nope"], "unknown task 'nope'"),
        (["show", "pointmaze", "layout=spiral"], "unknown PointMaze layout 'spiral'"),
        (["show", "pointmaze", "--size", "big"], "--size 'big'"),
        (["frobnicate"], "unknown usage"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(args, message, capsys):
    assert main(["envs", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_evalsets_lists_each_frozen_set(capsys):
    assert main(["envs", "evalsets"]) == 0
    out = capsys.readouterr().out
    assert "pointmaze-umaze" in out and "tworoom" in out
