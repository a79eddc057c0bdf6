"""The reward-task benchmark: rl-zoo3's SAC settings, resumable runs, and the report's numbers."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from wmrobot.errors import ConfigError
from wmrobot.rl.zoo import make_zoo_sac, zoo_settings

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "reward_baselines.py"
spec = importlib.util.spec_from_file_location("reward_baselines", BENCHMARK)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def plant(out: Path, env_id: str, method: str, seed: int, rows: list[tuple[int, float]]) -> Path:
    """A curve CSV with ``(env_steps, return_mean)`` rows (std 1, wall = steps / 100)."""
    path = out / env_id / f"{method}-seed{seed}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(bench.COLUMNS)] + [f"{s},{r},1.0,{s / 100}" for s, r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_zoo_settings_are_rl_zoo3s_for_the_mujoco_tasks():
    assert zoo_settings("HalfCheetah-v5") == {"learning_starts": 10_000}
    assert zoo_settings("Swimmer-v4") == {"learning_starts": 10_000, "gamma": 0.9999}
    assert zoo_settings("Reacher-v5") == {}  # no rl-zoo3 entry: SB3's defaults
    model = make_zoo_sac("HalfCheetah-v5", seed=3)
    assert (model.learning_starts, model.gamma, model.batch_size, model.seed) == (
        10_000,
        0.99,
        256,
        3,
    )
    assert make_zoo_sac("InvertedPendulum-v5", seed=0).learning_starts == 100


def test_an_env_without_zoo_settings_gets_one_line():
    with pytest.raises(ConfigError) as e:
        zoo_settings("wmrobot/PointMaze-v0")
    text = str(e.value)
    assert "\n" not in text and "'wmrobot/PointMaze-v0'" in text and "HalfCheetah-v5" in text


def test_steps_to_a_return_and_return_at_a_checkpoint():
    curve = np.array([[0, -300, 1, 0], [5000, 1500, 1, 9], [10000, 2500, 1, 19]], float)
    assert bench.steps_to(curve, 2000) == 10000
    assert bench.steps_to(curve, 2000, horizon=5000) is None
    assert bench.steps_to(curve, -300) == 0
    assert bench.value_at(curve, 5000) == 1500 and bench.value_at(curve, 7000) is None


def test_the_report_table_from_planted_curves(tmp_path):
    env = "HalfCheetah-v5"
    # Seed 0 ran to 100k and reaches 4000 only after the 3-seed budget (50k): not counted.
    plant(tmp_path, env, "sac", 0, [(0, -300), (50_000, 2500), (80_000, 4100), (100_000, 4500)])
    plant(tmp_path, env, "sac", 1, [(0, -280), (25_000, 2100), (50_000, 3500)])
    plant(tmp_path, env, "sac", 2, [(0, -290), (50_000, 1500)])
    plant(tmp_path, env, "wmrobot", 0, [(0, -300), (10_000, 4200), (50_000, 5000)])
    plant(tmp_path, env, "wmrobot", 1, [(0, -300), (5_000, 900)])  # still running
    text = bench.report(tmp_path)
    head, sac, ours = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert head.split(" | ")[2:5] == [
        "return at 50,000",
        "return at 100,000",
        "steps to 2000 within 50,000",
    ]
    cells = [c.strip() for c in sac.strip("|").split("|")]
    assert cells[:2] == ["sac", "0 1 2"]
    assert cells[2] == f"{np.mean([2500, 3500, 1500]):.1f} ± {np.std([2500, 3500, 1500]):.1f} (3)"
    assert cells[3] == "4500.0 ± 0.0 (1)"
    assert cells[4] == f"{np.mean([50_000, 25_000]):,.0f} (2/3 reached)"
    assert cells[5] == "– (0/3 reached)"
    assert head.endswith("| wall s at 50,000 |")
    assert cells[6] == "500.0 ± 0.0 (3)"  # training wall time at the 3-seed budget
    assert ours.split(" | ")[1] == "0 1 (to 5,000)"
    assert ours.split(" | ")[4:6] == ["10,000 (1/2 reached)", "10,000 (1/2 reached)"]
    bench.plot(tmp_path, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_finished_runs_are_skipped_and_unfinished_ones_restart(tmp_path):
    calls = []

    def fake(env_id, budget, seed, path, every):
        calls.append((env_id, budget, seed, every))
        plant(tmp_path, env_id, "fake", seed, [(s, 0.0) for s in range(0, budget + 1, every)])

    env = "Reacher-v5"
    plant(tmp_path, env, "fake", 0, [(0, -10), (20_000, -4)])  # finished
    plant(tmp_path, env, "fake", 1, [(0, -10), (4_000, -8)])  # killed at 4k
    plant(tmp_path, env, "fake", 2, [])  # killed before its first row
    registry = {"fake": fake}
    ran = bench.run_all([env], [0, 1, 2, 3], ["fake"], tmp_path, registry=registry)
    assert calls == [(env, 20_000, s, 1_000) for s in (1, 2, 3)]
    assert ran == [tmp_path / env / f"fake-seed{s}.csv" for s in (1, 2, 3)]
    calls.clear()
    assert bench.run_all([env], [0, 1, 2, 3], ["fake"], tmp_path, registry=registry) == []
    # A larger budget reruns every run that stops short of it.
    bench.run_all([env], [0], ["fake"], tmp_path, budget=30_000, registry=registry)
    assert calls == [(env, 30_000, 0, 1_000)]


def test_a_sac_run_writes_its_curve_to_the_budget(tmp_path):
    path = tmp_path / "InvertedPendulum-v5" / "sac-seed0.csv"
    bench.run_sac("InvertedPendulum-v5", 250, 0, path, 100)
    curve = bench.read_curve(path)
    assert curve[:, 0].tolist() == [0, 100, 200, 250]  # a row at 0 and one at the budget
    assert (np.diff(curve[:, 3]) >= 0).all() and (curve[:, 1] > 0).all()
    assert bench.finished(path, 250) and not bench.finished(path, 251)
    # A shorter budget is the same run cut short: the 100k run's 50k row is a 50k run's.
    short = tmp_path / "short.csv"
    bench.run_sac("InvertedPendulum-v5", 200, 0, short, 100)
    np.testing.assert_array_equal(bench.read_curve(short)[:, :3], curve[:3, :3])


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--envs", "Hopper-v5"], "no default budget for 'Hopper-v5': pass --budget"),
        (["--envs", "Pusher-v5", "--budget", "10"], "no tuned SAC settings for env id 'Pusher-v5'"),
        (["--report"], "no learning-curve CSVs under"),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, capsys, argv, named):
    out = tmp_path / "results"
    assert bench.main([*argv, "--out", str(out), "--plot", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err
    assert not out.exists() and not (tmp_path / "c.png").exists()


def test_the_report_is_printed_and_written(tmp_path, capsys):
    plant(tmp_path, "InvertedPendulum-v5", "sac", 0, [(0, 10), (5_000, 960), (10_000, 1000)])
    assert bench.main(["--report", "--out", str(tmp_path), "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"\| sac \| 0 \| 960\.0 ± 0\.0 \(1\) \| 1000\.0 ± 0\.0 \(1\) \| 5,000 \(1/1", out
    )
    assert (tmp_path / "REPORT.md").read_text() in out and (tmp_path / "c.png").exists()
