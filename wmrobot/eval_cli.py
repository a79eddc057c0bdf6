"""``wmrobot eval``: audit a trained world model on a dataset (prediction error, probes,
collapse), as a table, ``audit.json`` and PNG plots."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from wmrobot.cli_common import check_same_task, error, run_app

USAGE = """usage: wmrobot eval model checkpoint=DIR dataset=PATH [key=value ...]

  model      audit a world model on a dataset's episodes, split by episode (seeded) into
             probe-train and probe-test ones:
             - latent prediction error for h = 1..horizon on test episodes: the imagined
               latent rollout(encode(o_t), a_t..) against encode_target(o_t+h), divided by
               the latents' variance (1 = no better than the mean latent), next to the
               no-change baseline encode_target(o_t)
             - linear-probe R² (ridge, fit on train episodes, scored on test episodes) of
               positions and velocities (MuJoCo qpos and qvel from data/physics, else the
               observation) and of the achieved goal, from encoded latents at t and from
               imagined latents after h steps (the probe fitted on encoded ones)
             - collapse: effective rank and per-dimension std of encoded latents and of
               imagined latents at h = horizon
             Prints the tables; writes audit.json (every number, per h), prediction_error.png
             and probe_r2.png into out.

options (key=value):
  checkpoint=DIR       checkpoint directory made by `wmrobot train` (required)
  dataset=PATH         Zarr dataset of the checkpoint's task (required); its own training data
                       is fine: the split holds episodes out of the probes, not of the model
  horizon=20           steps imagined ahead (each used episode must hold that many)
  seed=0               seed of the episode split and of the windows drawn
  max_windows=1000     windows of horizon steps drawn from each of the two splits
  test_fraction=0.25   share of episodes held out to score the probes
  threads=1            torch CPU threads
  out=DIR              output folder (default: the run directory, runs/eval/<timestamp>/)

example: wmrobot eval model checkpoint=runs/train/<ts>/checkpoint dataset=data/maze.zarr
"""


def _finite(value: Any) -> Any:
    """NaN (an R² of a quantity that never varies) as null, so audit.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def print_report(report: Any, console: Console) -> None:
    from wmrobot.eval.audit import shown_horizons

    split, pred = report.split, report.prediction
    shown = shown_horizons(report.horizons[-1])
    console.print(
        f"latent prediction error (MSE / latent variance) on {len(split['test_episodes'])} "
        f"held-out episodes, {split['test_windows']} windows"
    )
    table = Table()
    for col in ("h", "model", "no change", "model / no change"):
        table.add_column(col, justify="right")
    for h in shown:
        model, still = pred["normalised"][h - 1], pred["baseline_normalised"][h - 1]
        table.add_row(str(h), f"{model:.4f}", f"{still:.4f}", f"{model / still:.2f}")
    console.print(table)

    console.print(
        f"linear-probe R² (fit on {len(split['train_episodes'])} episodes, scored on "
        f"{len(split['test_episodes'])} others), from encoded latents and imagined ones (h steps)"
    )
    table = Table()
    table.add_column("quantity")
    table.add_column("source")
    table.add_column("encoded", justify="right")
    for h in shown:
        table.add_column(f"h={h}", justify="right")
    for name, probe in report.probes.items():
        r2 = [probe["r2_encoded"], *(probe["r2_imagined"][h - 1] for h in shown)]
        table.add_row(name, probe["source"], *(f"{v:.3f}" for v in r2))
    console.print(table)

    d = split["latent_dim"]
    for which, c in report.collapse.items():
        where = "encoded latents" if which == "encoded" else f"latents imagined at h={shown[-1]}"
        console.print(
            f"{where}: effective rank {c['effective_rank']:.2f} of {d}, std per dim "
            f"{c['z_std_min']:.3g}..{c['std_max']:.3g} (median {c['std_median']:.3g}), "
            f"{c['dead_dims']} dead, {'COLLAPSED' if c['collapsed'] else 'not collapsed'}"
        )


def plot_report(report: Any, out: Path, title: str) -> list[Path]:
    """``prediction_error.png`` and ``probe_r2.png`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    h, pred = report.horizons, report.prediction
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.semilogy(h, pred["normalised"], "o-", ms=3, label="world model")
    ax.semilogy(h, pred["baseline_normalised"], "s--", ms=3, label="no change (z_t)")
    ax.set_xlabel("horizon h (steps)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("latent MSE / latent variance")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    paths = [out / "prediction_error.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    lowest = 0.0
    styles = ["o-", "s--", "^:", "d-."]  # quantities may coincide (PointMaze: goal = position)
    for i, (name, probe) in enumerate(report.probes.items()):
        r2 = [probe["r2_encoded"], *probe["r2_imagined"]]
        ax.plot([0, *h], r2, styles[i % len(styles)], ms=3, label=name)
        lowest = min(lowest, *(v for v in r2 if math.isfinite(v)))
    ax.set_ylim(max(lowest, -1.0) - 0.05, 1.02)  # below -1 is off the chart: useless anyway
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("h: 0 = encoded latent at t, h > 0 = imagined after h steps")
    ax.set_ylabel("linear-probe R² (held-out episodes)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out / "probe_r2.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def audit_command(cfg: DictConfig, run_dir: Path) -> Path:
    """Load, audit, print, and write the artifacts; returns the output folder."""
    import dataclasses

    import torch

    from wmrobot.config import validate
    from wmrobot.datasets import EpisodeStore
    from wmrobot.eval.audit import audit
    from wmrobot.provenance import git_revision, versions
    from wmrobot.train import load_checkpoint

    options = dataclasses.asdict(validate("eval_model", cfg))
    console = Console(width=max(shutil.get_terminal_size().columns, 110))
    torch.set_num_threads(options["threads"])
    model, meta = load_checkpoint(options["checkpoint"])
    store = EpisodeStore.open(options["dataset"])
    env = store.attrs["env"]
    if "env" in meta:  # a model saved bare records none: its spaces are still checked
        check_same_task(
            meta, options["checkpoint"], env["id"], env.get("kwargs") or {},
            f"audit it on a dataset of its task (dataset={options['dataset']} is not one)",
        )  # fmt: skip
    fingerprint = store.fingerprint()
    own = fingerprint == meta.get("dataset", {}).get("fingerprint")
    console.print(
        f"eval model: {options['checkpoint']} ({meta.get('steps', '?')} training steps) on "
        f"{options['dataset']}{' (its training data)' if own else ''}, "
        f"horizon {options['horizon']}, seed {options['seed']}"
    )
    report = audit(
        model,
        store,
        horizon=options["horizon"],
        test_fraction=options["test_fraction"],
        seed=options["seed"],
        max_windows=options["max_windows"],
        obs_key=meta.get("obs_key", "obs/observation"),
    )
    print_report(report, console)

    out = Path(options["out"]) if options["out"] else run_dir
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "checkpoint": {"path": options["checkpoint"], "steps": meta.get("steps")},
        "model": meta.get("model"),
        "dataset": {
            "path": options["dataset"],
            "fingerprint": fingerprint,
            "training_data": own,
            "env": store.attrs["env"],
        },
        "options": options,
        **report.as_dict(),
        "versions": versions(),
        "git_revision": git_revision(),
    }
    (out / "audit.json").write_text(json.dumps(_finite(record), indent=2))
    title = f"{Path(options['checkpoint']).name} on {env['id']} {env.get('kwargs') or ''}"
    plot_report(report, out, title.strip())
    console.print(f"eval model: wrote audit.json, prediction_error.png, probe_r2.png to {out}/")
    return out


def main(args: list[str]) -> int:
    """``wmrobot eval <subcommand> ...``; the exit code."""
    if not args or any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    sub, rest = args[0], args[1:]
    if sub != "model":
        return error("eval", f"unknown subcommand {sub!r}; choose one of: model")
    return run_app("eval model", "eval_model", audit_command, rest)
