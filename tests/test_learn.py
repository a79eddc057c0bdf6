"""`wmrobot learn`: the online loop, killed with SIGKILL and resumed, ends where an
uninterrupted run ends; its bad inputs get one line."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wmrobot.datasets import EpisodeStore

# A tiny run: 400 env steps of InvertedPendulum in 50-step episodes, a small model and planner.
TINY = [
    "learn.steps=400",
    "learn.seed_steps=100",
    "learn.pretrain=20",
    "learn.eval_every=200",
    "learn.eval_episodes=2",
    "learn.checkpoint_every=50",
    "+env.kwargs.max_episode_steps=50",
    "model.latent_dim=8",
    "model.hidden=32",
    "model.train.batch_size=32",
    "model.train.log_every=10",
    "model.train.tensorboard=false",
    "planner.samples=16",
    "planner.iterations=2",
    "planner.elites=4",
    "planner.policy_samples=4",
]


def wmrobot(*args: str) -> list[str]:
    return [sys.executable, "-m", "wmrobot.cli", "learn", *TINY, *args]


def rows(path: Path, drop: str) -> list[dict[str, str]]:
    """A CSV's rows without the wall-clock column ``drop``."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != drop} for r in csv.DictReader(f)]


# The reward task (InvertedPendulum, learn's default) and a goal task (PointMaze).
TASKS = {
    "reward": ["model.head_hidden=32", "model.bins=21"],
    "goal": ["env=pointmaze", "model=state_mlp"],
    "mbpo": [  # SAC on the latents, real and branched model rollouts
        "model.head_hidden=32",
        "model.bins=21",
        "learn.actor=sac",
        "dream.refresh_every=50",
        "dream.rollouts=32",
        "dream.branch_horizon=2",
        "dream.updates=2",
        "dream.batch_size=32",
        "dream.net=[32,32]",
    ],
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_learn_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, task):
    env = {**os.environ, "MUJOCO_GL": "egl"}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(wmrobot(f"out={whole}", *TASKS[task]), check=True, env=env,
                   capture_output=True)  # fmt: skip

    proc = subprocess.Popen(wmrobot(f"out={cut}", *TASKS[task]), env=env, stderr=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, preexec_fn=_default_sigint)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (cut / "curve.csv").exists():  # the first evaluation, half way
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended early"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "checkpoint").exists()  # it was cut short
    done = subprocess.run(wmrobot(f"out={cut}", "resume=true", *TASKS[task]), env=env,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    a, b = (
        EpisodeStore.open(str(whole / "dataset.zarr")),
        EpisodeStore.open(str(cut / "dataset.zarr")),
    )
    assert a.n_episodes == b.n_episodes and a.n_transitions == b.n_transitions == 400
    for key in a.keys:
        np.testing.assert_array_equal(a.load([key])[key], b.load([key])[key], err_msg=key)
    for key in ("episode_ends", "seed", "return"):
        np.testing.assert_array_equal(a.meta(key), b.meta(key))
    assert rows(whole / "curve.csv", "wall_s") == rows(cut / "curve.csv", "wall_s")
    assert len(rows(whole / "curve.csv", "wall_s")) == 2
    assert rows(whole / "metrics.csv", "seconds") == rows(cut / "metrics.csv", "seconds")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["learn.seed_steps=500", "learn.steps=400"], "learn.seed_steps=500 leaves no step"),
        (["learn.noise=-1"], "learn.noise"),
        (["env.id=CartPole-v1"], "Discrete(2) actions"),
        (["model.task=bogus"], "model.task='bogus' is unknown"),
        (["planner.policy_samples=-1"], "planner.policy_samples=-1"),
        (["env=pointmaze"], "is a goal task and model.task=reward"),
        (["model.task=goal"], "has no goals and model.task=goal"),
        (["learn.actor=dance"], "learn.actor='dance' is unknown"),
        (["learn.actor=sac", "env=pointmaze", "model=state_mlp"], "learns from rewards"),
        (["learn.actor=sac", "dream.real_ratio=2"], "dream.real_ratio=2"),
    ],
)
def test_learn_bad_input_is_one_line(tmp_path, args, message):
    out = tmp_path / "run"
    done = subprocess.run(wmrobot(f"out={out}", *args), capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not out.exists()  # nothing half-written


def test_plan_scores_a_learned_model_over_the_envs_own_episode_length(tmp_path):
    """`wmrobot plan` on a reward task: return over the fixed episodes beside random actions,
    each episode as long as the env's time limit (env.eval.budget=null)."""
    env = {**os.environ, "MUJOCO_GL": "egl"}
    subprocess.run(wmrobot(f"out={tmp_path / 'l'}", *TASKS["reward"]), check=True, env=env,
                   capture_output=True)  # fmt: skip
    plan = [sys.executable, "-m", "wmrobot.cli", "plan", f"checkpoint={tmp_path / 'l/checkpoint'}"]
    plan += ["env=inverted_pendulum", "+env.kwargs.max_episode_steps=50", "env.eval.pairs=3"]
    plan += ["seeds=[0]", "video=false", "planner.samples=16", "planner.elites=4"]
    done = subprocess.run([*plan, f"out={tmp_path / 'p'}"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    episodes = list(csv.DictReader(open(tmp_path / "p" / "episodes.csv")))
    assert sorted({e["method"] for e in episodes}) == ["Mode-2 MPPI", "random"]
    for method in ("random", "Mode-2 MPPI"):
        mine = [e for e in episodes if e["method"] == method]
        assert len(mine) == 3 and all(1 <= int(e["steps"]) <= 50 for e in mine)
        # +1 per step upright (0 for the step the pole falls)
        assert all(int(e["steps"]) - 1 <= float(e["ret"]) <= int(e["steps"]) for e in mine)
    random_steps = sorted(int(e["steps"]) for e in episodes if e["method"] == "random")
    assert random_steps[0] < 50  # random actions let the pole fall


def test_resume_needs_only_the_folder_and_a_larger_budget_continues(tmp_path):
    """`learn out=DIR resume=true` repeats DIR's own overrides; raising learn.steps continues
    a finished run, its curve up to the old budget kept."""
    env = {**os.environ, "MUJOCO_GL": "egl"}
    out = tmp_path / "run"
    short = [a for a in wmrobot(f"out={out}", *TASKS["goal"]) if a != "learn.steps=400"]
    subprocess.run([*short, "learn.steps=300"], check=True, env=env, capture_output=True)
    first = rows(out / "curve.csv", "wall_s")
    bare = [sys.executable, "-m", "wmrobot.cli", "learn", f"out={out}", "resume=true"]
    done = subprocess.run([*bare, "learn.steps=400"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    curve = rows(out / "curve.csv", "wall_s")
    assert [r["env_steps"] for r in curve] == ["200", "300", "400"]
    assert curve[:2] == first
    assert EpisodeStore.open(str(out / "dataset.zarr")).n_transitions == 400
    changed = subprocess.run([*bare, "model.hidden=64"], env=env, capture_output=True)
    assert changed.returncode != 0  # another model: refused in one line
    assert b"is a run of another env, model" in changed.stderr
