"""``wmrobot envs``: list the task suite, draw frames under factor settings, score the
evaluation sets with the scripted experts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from wmrobot.cli_common import check_writable, error
from wmrobot.errors import EnvError, WmrobotError

USAGE = """usage: wmrobot envs [list | show NAME [options] | evalsets [--score] [--write]]

  list (default)     the tasks: observation modes, factors of variation (group: name [bounds]),
                     expert, evaluation sets; and the gymnasium MuJoCo envs the wrapper serves
  show NAME          a PNG grid of the first frames of four seeded episodes (and the goal image)
                     under several factor settings; NAME is a task id or its short name
                     (PointMaze, TwoRoom, ...); KEY=VALUE are task arguments (layout=medium)
      --out FILE     where to write it (default: NAME.png; a folder: in it, NAME.png)
      --size N       frame size (default 96)
  evalsets           the frozen evaluation sets (task, arguments, budget)
      --score        also measure the scripted expert's and uniform random actions' success
      --write        redraw the files from the tasks' samplers (after a deliberate change)
"""

# Rows of the `show` grid: a label and the factor values pinned for it.
SETTINGS: list[tuple[str, dict[str, float]]] = [
    ("nominal", {}),
    ("light 0.4", {"light": 0.4}),
    ("light 1.8", {"light": 1.8}),
    ("hue +0.33", {"hue": 0.33}),
    ("floor 0.5", {"floor": 0.5}),
    ("camera +x +y", {"camera_x": 0.12, "camera_y": 0.12}),
]


def resolve(name: str) -> str:
    """A task id from ``name``: the id itself, or its short name in any case."""
    from wmrobot.envs import TASKS
    from wmrobot.errors import EnvError

    if name in TASKS:
        return name
    short = {k.split("/")[1].rsplit("-", 1)[0].lower(): k for k in TASKS}
    if name.lower() in short:
        return short[name.lower()]
    raise EnvError(f"unknown task {name!r}; choose one of {sorted(short)} (or their ids)")


def list_tasks(console: Console) -> None:
    from rich.markup import escape

    from wmrobot.envs import TASKS, make_env
    from wmrobot.envs.base import COMMON_FACTORS
    from wmrobot.envs.evalsets import EVALSETS
    from wmrobot.envs.experts import EXPERTS
    from wmrobot.envs.wrappers import GYMNASIUM_MUJOCO

    table = Table(title="wmrobot tasks (obs_mode: state, pixels, state+pixels)")
    for col in ("id", "obs", "action", "steps", "expert", "evaluation sets", "factors"):
        table.add_column(col)
    factors: dict[str, Any] = {}  # every task's factors, common ones once
    for env_id, (_, steps) in TASKS.items():
        env = make_env(env_id)
        base = env.unwrapped
        factors.update({f.name: f for f in base.FACTORS})
        own = [f for f in base.FACTORS if f not in COMMON_FACTORS]
        table.add_row(
            env_id,
            str(env.observation_space["observation"].shape[0]),
            str(env.action_space.shape[0]),
            str(steps),
            "yes" if isinstance(base, tuple(EXPERTS)) else "no",
            ", ".join(n for n, spec in EVALSETS.items() if spec[0] == env_id),
            escape(", ".join(["common", *(f"{f.name} [{f.low:g}, {f.high:g}]" for f in own)])),
        )
        env.close()
    console.print(table)
    common = Table(title="factors of variation (every task has the common ones; (task): its own)")
    for col in ("name", "group", "nominal", "bounds", "what it does"):
        common.add_column(col)
    for f in factors.values():
        common.add_row(
            f.name if f in COMMON_FACTORS else f"{f.name} (task)",
            f.group,
            f"{f.nominal:g}",
            escape(f"[{f.low:g}, {f.high:g}]"),
            f.doc,
        )
    console.print(common)
    console.print(
        escape(
            "Factors are held at nominal unless given: factors={name: value or [min, max]}, "
            "drawn per episode from the reset seed and recorded in datasets (meta/factors)."
        )
    )
    console.print(
        f"Gymnasium MuJoCo envs in the same obs modes (make_env(id, {{'obs_mode': ...}})): "
        f"{', '.join(GYMNASIUM_MUJOCO)}"
    )


def image_path(out: str | None, env_id: str) -> Path:
    """Where ``show --out`` writes, checked before any frame is drawn: ``out`` itself, or in a
    folder ``out`` (one that exists, or a name ending in "/"; here without one) ``<Name>.png``."""
    name = f"{env_id.split('/')[1].rsplit('-', 1)[0]}.png"
    path = Path(out or name)
    if path.is_dir() or (out or "").endswith("/"):
        path = path / name
    if path.is_dir():
        raise EnvError(f"--out {path} is a folder; give a file name")
    kind = path.suffix[1:].lower()
    if kind and kind not in _image_types():
        raise EnvError(
            f"--out {path}: matplotlib writes no {kind!r} images; end the name with one of "
            f"{', '.join('.' + k for k in _image_types())}"
        )
    check_writable(path.parent, "--out")
    return path


def _image_types() -> list[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return sorted(FigureCanvasBase.get_supported_filetypes())


def show(env_id: str, out: Path, size: int, kwargs: dict[str, Any], seeds: int = 4) -> Path:
    """Write a grid: one row per factor setting, one column per seed, then the goal image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wmrobot.envs import make_env

    env = make_env(env_id, kwargs, obs_mode="pixels", width=size, height=size)
    base = env.unwrapped
    settings = list(SETTINGS)
    for f in base.FACTORS:
        if f.group == "layout":
            settings += [(f"{f.name} {v:g}", {f.name: v}) for v in (f.low, f.high)]
    fig, axes = plt.subplots(
        len(settings), seeds + 1, figsize=(1.3 * (seeds + 1), 1.3 * len(settings)), squeeze=False
    )
    for row, (label, factors) in enumerate(settings):
        for col in range(seeds):
            obs, _ = env.reset(seed=col, options={"factors": factors})
            axes[row, col].imshow(obs["pixels"])
        axes[row, seeds].imshow(obs["goal_pixels"])  # the last seed's goal
        axes[row, 0].set_ylabel(label, fontsize=7)
    for col in range(seeds):
        axes[0, col].set_title(f"seed {col}", fontsize=7)
    axes[0, seeds].set_title(f"goal (seed {seeds - 1})", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{env_id} {kwargs or ''}".strip(), fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The format from the name's suffix (:func:`image_path` checked it), PNG for a name
    # without one: the file is written at ``out`` exactly (matplotlib would add ".png").
    fig.savefig(out, dpi=90, format=out.suffix[1:].lower() or "png")
    plt.close(fig)
    env.close()
    return out


def evalsets(console: Console, score: bool, write: bool) -> None:
    from wmrobot.envs.evalsets import EVALSETS, load_evalset, success_rate, write_evalsets

    if write:
        for path in write_evalsets():
            console.print(f"wrote {path}")
    table = Table(title="frozen evaluation sets (50 seeded start/goal pairs each)")
    for col in ("name", "task", "arguments", "budget", "version"):
        table.add_column(col, no_wrap=col in ("name", "task"))
    if score:
        for col in ("expert success", "expert steps", "random success"):
            table.add_column(col, justify="right")
    for name in EVALSETS:
        evalset = load_evalset(name)
        row = [name, evalset.env_id, str(evalset.kwargs), str(evalset.budget), str(evalset.version)]
        if score:
            expert, steps = success_rate(evalset, "expert")
            random, _ = success_rate(evalset, "random")
            row += [f"{expert:.0%}", f"{steps:.1f}", f"{random:.0%}"]
        table.add_row(*row)
    console.print(table)


def _value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    sub, rest = (args[0], args[1:]) if args else ("list", [])
    console = Console(width=max(shutil.get_terminal_size().columns, 120))
    try:
        if sub == "list" and not rest:
            list_tasks(console)
        elif sub == "show" and rest:
            options, kwargs, positional = {"--out": None, "--size": "96"}, {}, []
            it = iter(rest)
            for arg in it:
                if arg in options:
                    options[arg] = next(it, None)
                    if options[arg] is None:
                        return error("envs show", f"{arg} needs a value")
                elif "=" in arg:
                    key, value = arg.split("=", 1)
                    kwargs[key] = _value(value)
                else:
                    positional.append(arg)
            if len(positional) != 1:
                return error("envs show", f"expected one task NAME, got {positional}")
            env_id = resolve(positional[0])
            size = options["--size"]
            if not size.isdigit():
                return error("envs show", f"--size {size!r} must be a whole number of pixels")
            path = image_path(options["--out"], env_id)
            show(env_id, path, int(size), kwargs)
            console.print(f"envs show: wrote {path}")
        elif sub == "evalsets" and set(rest) <= {"--score", "--write"}:
            evalsets(console, "--score" in rest, "--write" in rest)
        else:
            return error("envs", f"unknown usage {' '.join(args)!r}; see `wmrobot envs --help`")
    except WmrobotError as e:
        return error("envs", str(e))
    return 0
