"""A miniature of the whole path through the CLI: collect -> train -> plan, and its artifacts."""

from __future__ import annotations

import json
from pathlib import Path

from wmrobot.cli import main
from wmrobot.datasets import EpisodeStore
from wmrobot.train import load_checkpoint


def _only(pattern: str, root: Path) -> Path:
    found = sorted(root.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_miniature_pipeline_beats_random_on_an_easy_goal_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "maze.zarr"
    assert main(["collect", "policy=colored", "episodes=30", f"out={data}"]) == 0
    store = EpisodeStore.open(data)
    assert store.n_episodes == 30
    assert store.n_transitions > 1000

    assert (
        main(["train", f"dataset={data}", "model.train.steps=800", "model.train.log_every=50"]) == 0
    )
    ckpt = _only("runs/train/*/checkpoint", tmp_path)
    for name in ("model.pt", "meta.json", "metrics.csv"):
        assert (ckpt / name).is_file()
    model, meta = load_checkpoint(ckpt)
    assert meta["dataset"]["fingerprint"] == store.fingerprint()
    assert meta["dataset"]["transitions"] == store.n_transitions

    # A checkpoint is planned only on the env it was trained on.
    assert main(["plan", f"checkpoint={ckpt}", "env.kwargs.layout=umaze"]) == 2

    easy = ["env.eval.pairs=12", "env.eval.max_distance=1.2", "env.eval.budget=40"]
    run = tmp_path / "plan-run"
    args = [f"checkpoint={ckpt}", "seeds=[0]", "video=false", f"out={run}", *easy]
    assert main(["plan", *args]) == 0
    for name in ("results.csv", "results.json", "results.md", "results.png", "episodes.csv"):
        assert (run / name).is_file(), name
    for name in ("config.yaml", "run.log"):
        assert (run / name).is_file(), name
    report = json.loads((run / "results.json").read_text())
    assert report["provenance"]["checkpoint"]["dataset"]["fingerprint"] == store.fingerprint()
    assert len(report["provenance"]["evaluation_set"]) == 12
    assert report["provenance"]["config"]["planner"]["samples"] > 0
    results = {r["method"]: r for r in report["results"]}
    mppi, random = results["Mode-2 MPPI"], results["random"]
    assert mppi["env_steps"] == store.n_transitions
    assert sum(mppi["success"]) > sum(random["success"]) + 0.25, (mppi, random)

    # Mode-1: distil the planner into an actor, then plan with it and with the hybrid.
    assert main(["plan", *args, "agent.mode=1", f"out={tmp_path / 'no-actor'}"]) == 2
    actor_ckpt = tmp_path / "actor-ckpt"
    distill = [
        "distill",
        f"checkpoint={ckpt}",
        f"out={actor_ckpt}",
        "planner.backend=torch",
        "actor.states=512",
        "actor.rounds=1",
        "actor.episodes=8",
        "actor.budget=40",
        "actor.steps=400",
        "actor.hidden=64",
    ]
    assert main(distill) == 0
    _, actor_meta = load_checkpoint(actor_ckpt)
    record = actor_meta["distill"]
    assert record["dataset"]["fingerprint"] == store.fingerprint()
    assert [h["stage"] for h in record["history"]] == ["imitation", "dagger 1"]
    assert record["env_steps"] > 0
    for mode in ("1", "hybrid"):
        out = tmp_path / f"mode-{mode}"
        plan = [f"checkpoint={actor_ckpt}", "seeds=[0]", "video=false", f"out={out}", *easy]
        assert main(["plan", *plan, f"agent.mode={mode}", "planner.backend=torch"]) == 0
        rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["results"]}
        agent = rows["Mode-1 actor" if mode == "1" else "Hybrid MPPI (actor-seeded)"]
        assert sum(agent["success"]) > sum(rows["random"]["success"]) + 0.25, rows
        assert agent["env_steps"] == store.n_transitions + record["env_steps"]
