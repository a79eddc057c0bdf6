"""Methods evaluated side by side on one fixed evaluation set: summaries, tables, plots."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from wmrobot.agent import ActorAgent, PlanningAgent, RandomAgent  # noqa: E402
from wmrobot.envs import make_env  # noqa: E402
from wmrobot.eval.rollout import decision_latency_ms, evaluate  # noqa: E402
from wmrobot.model.world_model import WorldModel  # noqa: E402
from wmrobot.planners import PlannerConfig  # noqa: E402
from wmrobot.rl import RLConfig  # noqa: E402


@dataclass
class MethodResult:
    """One method's outcome over seeds: success rate per seed, mean steps, decision latency."""

    method: str
    env_steps: int
    success: list[float]
    steps_to_success: float
    latency_ms: float
    episodes: list[dict[str, Any]]
    spread_over: str = "seeds"  # what the seeds vary: planner sampling, RL training, ...
    returns: list[float] | None = None  # mean episode return per seed

    @property
    def return_mean(self) -> float:
        return float(np.mean(self.returns)) if self.returns else float("nan")

    @property
    def return_std(self) -> float:
        return statistics.stdev(self.returns) if self.returns and len(self.returns) > 1 else 0.0

    @property
    def success_mean(self) -> float:
        return float(np.mean(self.success))

    @property
    def success_std(self) -> float:
        return statistics.stdev(self.success) if len(self.success) > 1 else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "env_steps": self.env_steps,
            "success_mean": round(self.success_mean, 4),
            "success_std": round(self.success_std, 4),
            "seeds": len(self.success),
            "spread_over": self.spread_over,
            "steps_to_success": round(self.steps_to_success, 2),
            "return_mean": round(self.return_mean, 3),
            "return_std": round(self.return_std, 3),
            "latency_ms": round(self.latency_ms, 3),
        }


def summarise(
    method: str,
    env_steps: int,
    per_seed: dict[int, list[dict[str, Any]]],
    latency_ms: float,
    spread_over: str,
) -> MethodResult:
    """Fold per-seed episode records into a :class:`MethodResult`."""
    success = [float(np.mean([r["success"] for r in recs])) for recs in per_seed.values()]
    steps = [r["steps"] for recs in per_seed.values() for r in recs if r["success"]]
    returns = [float(np.mean([r["ret"] for r in recs])) for recs in per_seed.values()]
    episodes = [{"method": method, "seed": s, **r} for s, recs in per_seed.items() for r in recs]
    return MethodResult(
        method=method,
        env_steps=env_steps,
        success=success,
        steps_to_success=float(np.mean(steps)) if steps else float("nan"),
        latency_ms=latency_ms,
        episodes=episodes,
        spread_over=spread_over,
        returns=returns,
    )


DISPLAY_NAMES = {"mppi": "MPPI", "cem": "CEM", "icem": "iCEM", "grad": "gradient"}


def evaluate_planner(
    model: WorldModel,
    planner: PlannerConfig,
    env_id: str,
    env_kwargs: dict[str, Any],
    pairs: list[dict[str, Any]],
    budget: int,
    seeds: list[int],
    env_steps: int,
    name: str | None = None,
    hybrid: bool = False,
    episode_seeds: list[int] | None = None,
) -> MethodResult:
    """Receding-horizon planning through ``model`` (the planner ``planner.name``), one run of
    the whole set per planner seed; the row is named ``Mode-2 <PLANNER>`` (``hybrid``: the
    planner seeded by the actor, ``Hybrid <PLANNER>``) unless ``name``. Episode i resets the
    env with ``episode_seeds[i]`` (default i)."""
    display = DISPLAY_NAMES.get(planner.name, planner.name)
    name = name or (f"Hybrid {display} (actor-seeded)" if hybrid else f"Mode-2 {display}")
    env = make_env(env_id, env_kwargs)
    goal_obs = getattr(env.unwrapped, "goal_observation", None)  # None: a reward task
    # Gradient descent from the warm start draws nothing: one seed is the whole result.
    deterministic = planner.name == "grad" and not planner.refine_with_cem
    per_seed = {}
    for seed in seeds[:1] if deterministic else seeds:
        torch.manual_seed(seed)
        agent = PlanningAgent(model, planner, goal_obs, seed=seed, hybrid=hybrid)
        records = evaluate(agent, env_id, env_kwargs, pairs, budget, episode_seeds)
        per_seed[seed] = [r.as_dict() for r in records]
    obs, _ = env.reset(seed=0, options=pairs[0])
    agent = PlanningAgent(model, planner, goal_obs, seed=0, hybrid=hybrid)
    latency = decision_latency_ms(agent, obs)
    env.close()
    # One world model: the spread is over the planner's sampling seeds only.
    spread = "deterministic" if deterministic else "planner"
    return summarise(name, env_steps, per_seed, latency, spread)


def evaluate_actor(
    model: WorldModel,
    env_id: str,
    env_kwargs: dict[str, Any],
    pairs: list[dict[str, Any]],
    budget: int,
    env_steps: int,
    episode_seeds: list[int] | None = None,
) -> MethodResult:
    """Mode-1: the actor head (a reward task's policy prior), one forward pass per action. It
    is deterministic, so one run of the set (seed 0) is its whole result."""
    agent = ActorAgent(model, goal_observation(env_id, env_kwargs))
    per_seed, latency = _runs({0: agent}, env_id, env_kwargs, pairs, budget, episode_seeds)
    return summarise("Mode-1 actor", env_steps, per_seed, latency, "deterministic")


def goal_observation(env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """The task's ``goal_observation`` (None on a reward task)."""
    env = make_env(env_id, env_kwargs)
    found = getattr(env.unwrapped, "goal_observation", None)
    env.close()
    return found


def _runs(
    agents: dict[int, Any],
    env_id: str,
    env_kwargs: dict[str, Any],
    pairs: list[dict[str, Any]],
    budget: int,
    episode_seeds: list[int] | None,
) -> tuple[dict[int, list[dict[str, Any]]], float]:
    """One run of the set per (seed, deterministic agent): the episode records per seed and
    the mean decision latency (one env, 200 calls each)."""
    env = make_env(env_id, env_kwargs)
    per_seed, latencies = {}, []
    for seed, agent in agents.items():
        records = evaluate(agent, env_id, env_kwargs, pairs, budget, episode_seeds)
        per_seed[seed] = [r.as_dict() for r in records]
        obs, _ = env.reset(seed=0, options=pairs[0])
        latencies.append(decision_latency_ms(agent, obs, calls=200))
    env.close()
    return per_seed, float(np.mean(latencies))


def evaluate_random(
    env_id: str,
    env_kwargs: dict[str, Any],
    pairs: list[dict[str, Any]],
    budget: int,
    seeds: list[int],
    episode_seeds: list[int] | None = None,
) -> MethodResult:
    """Uniform random actions, one run of the set per seed (episode i reset with
    ``episode_seeds[i]``, default i)."""
    env = make_env(env_id, env_kwargs)
    low, high = env.action_space.low, env.action_space.high
    per_seed = {}
    for s in seeds:
        agent = RandomAgent(low, high, s)
        records = evaluate(agent, env_id, env_kwargs, pairs, budget, episode_seeds)
        per_seed[s] = [r.as_dict() for r in records]
    obs, _ = env.reset(seed=0, options=pairs[0])
    latency = decision_latency_ms(RandomAgent(low, high, 0), obs)
    env.close()
    return summarise("random", 0, per_seed, latency, "policy")


def evaluate_dream(
    model: WorldModel,
    agents: dict[int, Any],
    label: str,
    env_id: str,
    env_kwargs: dict[str, Any],
    pairs: list[dict[str, Any]],
    budget: int,
    env_steps: int,
    episode_seeds: list[int] | None = None,
) -> MethodResult:
    """SB3 agents trained in the model's dream (one per training seed, ``agents``), each
    acting through the encoder with its deterministic action; the spread is over dream
    training. ``env_steps``: the dataset's, the only real steps they cost."""
    from wmrobot.rl.dream import DreamAgent

    goal_obs = goal_observation(env_id, env_kwargs)
    dreamers = {seed: DreamAgent(model, policy, goal_obs) for seed, policy in agents.items()}
    per_seed, latency = _runs(dreamers, env_id, env_kwargs, pairs, budget, episode_seeds)
    return summarise(label, env_steps, per_seed, latency, "training")


def rl_result(cfg: RLConfig, steps: int, runs: list[dict[str, Any]]) -> MethodResult:
    """The model-free row from :func:`~wmrobot.rl.run_seeds`' runs (one SB3 agent per seed,
    trained anew for ``steps`` env steps: the spread is over RL training); named by
    ``cfg.label``."""
    per_seed = {r["seed"]: r["records"] for r in runs}
    latency = sum(r["latency_ms"] for r in runs) / len(runs)
    return summarise(cfg.label, steps, per_seed, latency, "training")


def write_report(
    results: list[MethodResult],
    out: str | Path,
    title: str,
    provenance: dict[str, Any] | None = None,
    score: str = "success",
) -> Table:
    """Write results.csv/json/md, episodes.csv and results.png into ``out``; return the table.

    ``provenance`` (config, versions, dataset fingerprint, evaluation set) goes into
    results.json so that every number can be traced to what produced it. ``score``: the
    column the table and plot show, "success" (goal tasks) or "return" (reward tasks).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    episodes = [e for r in results for e in r.episodes]
    with open(out / "episodes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(episodes[0]))
        writer.writeheader()
        writer.writerows(episodes)
    (out / "results.json").write_text(
        json.dumps(
            {
                "title": title,
                "provenance": provenance or {},
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )

    table = Table(title=title)
    reward = score == "return"
    middle = ("return (mean ± std)",) if reward else ("success (mean ± std)",)
    last = () if reward else ("steps to goal",)
    columns = ("method", "env steps", *middle, "seeds (varying)", *last)
    for col in (*columns, "latency"):
        table.add_column(col, justify="left" if col == "method" else "right")
    lines = [
        f"# {title}",
        "",
        "| " + " | ".join(columns) + " | latency (ms) |",
        "|---|" + "---:|" * len(columns),
    ]
    for r in results:
        if reward:
            value = (f"{r.return_mean:.1f} ± {r.return_std:.1f}",)
        else:
            steps = "-" if np.isnan(r.steps_to_success) else f"{r.steps_to_success:.1f}"
            value = (f"{100 * r.success_mean:.1f}% ± {100 * r.success_std:.1f}",)
        seeds = f"{len(r.success)} ({r.spread_over})"
        cells = (r.method, f"{r.env_steps:,}", *value, seeds, *(() if reward else (steps,)))
        table.add_row(*cells, f"{r.latency_ms:.2f} ms")
        lines.append("| " + " | ".join(cells) + f" | {r.latency_ms:.2f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(results, out / "results.png", title, score)
    return table


def _plot(results: list[MethodResult], path: Path, title: str, score: str = "success") -> None:
    names = [r.method for r in results]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(len(results))
    if score == "return":
        means, stds = [r.return_mean for r in results], [r.return_std for r in results]
        dots = [r.returns or [] for r in results]
        label, limits = "episode return", None
    else:
        means = [100 * r.success_mean for r in results]
        stds = [100 * r.success_std for r in results]
        dots = [[100 * s for s in r.success] for r in results]
        label, limits = "success rate (%)", (0, 105)
    ax1.bar(x, means, yerr=stds, capsize=6, color="#4C72B0")
    for i, d in enumerate(dots):
        ax1.scatter([i] * len(d), d, color="k", s=12, zorder=3)
    ax1.set(
        xticks=x,
        xticklabels=names,
        ylabel=label,
        ylim=limits,
        title=f"{score} (bars: mean ± std; dots: seeds)",
    )
    ax2.bar(x, [r.latency_ms for r in results], color="#DD8452")
    ax2.set(
        xticks=x,
        xticklabels=names,
        ylabel="ms per decision (log)",
        yscale="log",
        title="decision latency, one env",
    )
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(table: Table) -> None:
    # CI logs report 80 columns; keep each row on one line.
    Console(width=max(shutil.get_terminal_size().columns, 110)).print(table)
