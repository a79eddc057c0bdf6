"""`wmrobot bench`: the tiny suite through Hydra's launcher; finished cells are kept, a killed
cell runs again, the report's numbers are the cells' own; bad input gets one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wmrobot.bench.spec import Suite, parse_cell
from wmrobot.bench.suite import bootstrap_ci, steps_to_reach
from wmrobot.errors import ConfigError

ENV = {**os.environ, "MUJOCO_GL": "egl"}


def bench(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "wmrobot.cli", "bench", "suite=tiny", f"out={out}", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True)


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "cells").glob("*/result.json")}


def test_the_tiny_suite_runs_resumes_and_reports_its_cells(tmp_path):
    out = tmp_path / "bench"
    done = bench(out, "workers=2")
    assert done.returncode == 0, done.stderr[-3000:]
    cells = results(out)
    assert len(cells) == 8  # 1 task x 2 methods x 2 budgets x 2 seeds
    for cell, r in cells.items():
        assert (out / "cells" / cell / "config.json").is_file()
        assert r["env_steps"] == (0 if r["method"] == "random" else r["budget"])
        assert len(r["episodes"]) == 2 and r["return"] == np.mean([e["ret"] for e in r["episodes"]])
    # The report's numbers are the cells': results.csv row by row, report.md's means.
    rows = {r["cell"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == set(cells)
    for cell, r in cells.items():
        assert float(rows[cell]["return"]) == pytest.approx(r["return"])
    report = (out / "report.md").read_text()
    for method in ("random", "ppo"):
        for budget in (64, 128):
            mine = [r["return"] for r in cells.values()
                    if r["method"] == method and r["budget"] == budget]  # fmt: skip
            mean, lo, hi = bootstrap_ci(mine)
            assert f"{mean:.1f} [{lo:.1f}, {hi:.1f}] (2)" in report
    assert (out / "curves-pendulum.png").stat().st_size > 0

    # Resume: nothing runs again. A cell killed half way (no result) runs again, alone.
    stamps = {c: (out / "cells" / c / "result.json").stat().st_mtime_ns for c in cells}
    killed = "pendulum-ppo-128-s1"
    (out / "cells" / killed / "result.json").unlink()
    (out / "cells" / killed / "agent.zip").write_text("half-written")
    again = bench(out, "workers=1", "launcher=basic")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "7 done, 1 to run" in again.stdout + again.stderr
    after = results(out)
    assert after[killed]["return"] == cells[killed]["return"]  # same seed, same result
    for c in cells:
        if c != killed:
            assert (out / "cells" / c / "result.json").stat().st_mtime_ns == stamps[c]


def test_a_folder_of_another_suite_and_bad_cells_are_refused_in_one_line(tmp_path):
    out = tmp_path / "bench"
    done = bench(out, "report_only=true")
    assert done.returncode == 0, done.stderr[-2000:]  # pins the suite, runs nothing
    other = bench(out, "report_only=true", "suite.seeds=[5]")
    assert other.returncode == 2
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds the cells of another suite" in lines[0]
    args = [sys.executable, "-m", "wmrobot.cli", "cell", f"out={out}", "cell=pendulum-sac-64"]
    cell = subprocess.run(args, env=ENV, capture_output=True, text=True)
    assert cell.returncode == 2 and "is not TASK-METHOD-BUDGET-sSEED" in cell.stderr
    with pytest.raises(ConfigError, match="'teleport' is unknown"):
        Suite("x", {"a": {"env": "pointmaze"}}, ["teleport"], [10], [0])
    with pytest.raises(ConfigError, match="suite.budgets"):
        Suite("x", {"a": {"env": "pointmaze"}}, ["random"], [0], [0])
    assert parse_cell("umaze-mppi-10000-s2") == ("umaze", "mppi", 10000, 2)


def test_steps_to_reach_uses_the_best_model_free_final_score():
    def cells(*points):
        return {b: {"mean": m, "env_steps": b} for b, m in points}

    methods = {
        "sac": cells((10, 20.0), (30, 100.0)),
        "ppo": cells((10, 5.0), (30, 50.0)),
        "mppi": cells((10, 95.0), (30, 99.0)),
        "random": cells((10, 0.0), (30, 0.0)),
    }
    target, reach = steps_to_reach(methods)
    assert target == 90.0
    assert reach == {"sac": 30, "ppo": None, "mppi": 10, "random": None}


def test_a_reward_tasks_world_model_is_one_online_run_resumed_budget_by_budget(tmp_path):
    """mppi on a reward task: `wmrobot learn` to the first budget, resumed to the next; each
    budget's model keeps its own dataset, and counts every step and second before it."""
    from wmrobot.bench.suite import pin, run_cell

    small = ["+env.kwargs.max_episode_steps=40", "env.eval.pairs=2", "model.head_hidden=32",
             "model.latent_dim=8", "model.hidden=32", "planner.samples=16", "planner.elites=4",
             "planner.policy_samples=4", "learn.pretrain=10"]  # fmt: skip
    suite = Suite("t", {"pend": {"env": "inverted_pendulum", "overrides": small}}, ["mppi"],
                  [100, 160], [0])  # fmt: skip
    out = tmp_path / "b"
    pin(suite, out)
    late = run_cell("pend-mppi-160-s0", out)  # builds the 100-step model on its way
    early = run_cell("pend-mppi-100-s0", out)
    models = out / "models"
    assert sorted(p.name for p in models.iterdir() if p.is_dir()) == [
        "pend-100-s0", "pend-160-s0", "pend-s0-learn"]  # fmt: skip
    curve = list(csv.DictReader(open(models / "pend-s0-learn" / "curve.csv")))
    assert [int(r["env_steps"]) for r in curve] == [100, 160]
    assert early["env_steps"] == 100 and late["env_steps"] == 160
    first = json.loads((models / "pend-100-s0" / "done.json").read_text())
    second = json.loads((models / "pend-160-s0" / "done.json").read_text())
    assert second["seconds"] > first["seconds"] > 0  # the online run's earlier part included
    assert early["wall_s"] >= first["seconds"]  # a cached model's time is the cell's too


def test_methods_of_the_other_kind_of_task_finish_as_skipped_and_mbpo_saves_its_agent(tmp_path):
    from wmrobot.bench.suite import load_results, pending, pin, run_cell

    small = ["+env.kwargs.max_episode_steps=40", "env.eval.pairs=2", "model.head_hidden=32",
             "model.latent_dim=8", "model.hidden=32", "learn.pretrain=10", "dream.updates=2",
             "dream.rollouts=16", "dream.refresh_every=50", "dream.net=[32,32]"]  # fmt: skip
    suite = Suite("t", {"pend": {"env": "inverted_pendulum", "overrides": small}},
                  ["gcbc", "mbpo"], [120], [0])  # fmt: skip
    out = tmp_path / "b"
    pin(suite, out)
    skipped = run_cell("pend-gcbc-120-s0", out)
    assert skipped["skipped"] == "GCBC learns to reach goals: a goal task's method"
    mbpo = run_cell("pend-mbpo-120-s0", out)
    assert mbpo["label"] == "MBPO SAC" and mbpo["env_steps"] == 120
    assert (out / "models" / "pend-120-s0-sac" / "agent.zip").is_file()
    assert pending(suite, out) == [] and [r["method"] for r in load_results(out)] == ["mbpo"]


def test_the_verdict_says_who_wins_and_what_the_world_model_buys():
    from wmrobot.bench.suite import verdict

    def cells(label, *points):
        return {b: {"mean": m, "env_steps": b, "label": label} for b, m in points}

    methods = {"sac": cells("SAC", (10, 50.0), (30, 100.0)),
               "mppi": cells("MPPI", (10, 95.0), (30, 96.0))}  # fmt: skip
    target, reach = steps_to_reach(methods)
    text = verdict(methods, reach)
    assert "MPPI, scores 96.0 against 100.0" in text and "Model-free RL wins here" in text
    assert "10 (world model) against 30 (model-free), 3.0x" in text
    methods["mppi"] = cells("MPPI", (10, 100.0), (30, 100.0))
    assert "wins here" not in verdict(methods, steps_to_reach(methods)[1])
