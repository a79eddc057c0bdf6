"""What every ``wmrobot`` command shares: the one-line error, running a Hydra app, its run dir."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wmrobot.errors import ConfigError, WmrobotError

# `${or:${out},runs/plan/...}` in a command's yaml: out= names the run directory when given.
OmegaConf.register_new_resolver("or", lambda value, default: default if value is None else value)

# Under torchrun only rank 0 keeps a run directory and logs; the other ranks write nothing.
QUIET_RANK = [
    "hydra.run.dir=.",
    "hydra.output_subdir=null",
    "hydra/job_logging=none",
    "hydra/hydra_logging=none",
]


def error(command: str | None, message: str) -> int:
    """Print ``wmrobot <command>: error: <message>`` on stderr; return the exit code 2."""
    where = f"wmrobot {command}" if command else "wmrobot"
    print(f"{where}: error: {message}", file=sys.stderr)
    return 2


def config_dir() -> str:
    """The folder of the packaged Hydra configs (``configs/``)."""
    return str(resources.files("wmrobot.configs"))


def group_options(group: str) -> list[str]:
    """The options of a config group, e.g. ``env`` -> [halfcheetah, pointmaze, ...]."""
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def hydra_message(e: Exception, command: str) -> str:
    """One line for an error Hydra or OmegaConf raised while composing a config."""
    text = str(e)
    missing = re.search(r"Could not find '([\w-]+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        return f"unknown {group} {option!r}; available: {', '.join(group_options(group))}"
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown:
        return f"unknown option {unknown.group(1)!r}; see `wmrobot {command} --help`"
    cause = e.__cause__ or e
    key = getattr(cause, "full_key", None)
    if key and hasattr(cause, "value"):
        return f"{key}={cause.value!r}: {str(cause).splitlines()[0]}"
    return text.strip().splitlines()[0]


def compose(config_name: str, overrides: list[str], command: str | None = None) -> DictConfig:
    """The config ``configs/<config_name>.yaml`` with ``overrides`` (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base=None):
            return hydra_compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(hydra_message(e, command or config_name)) from None


def run_dir() -> Path:
    """The current Hydra job's output directory (``runs/<command>/<timestamp>/``)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _discard_unused(path: Path, cfg: DictConfig) -> None:
    """Remove a run directory Hydra made for a run that stopped before producing anything,
    and the folders above it that it leaves empty; never one the user named with out=."""
    path, cwd, named = path.resolve(), Path.cwd().resolve(), cfg.get("out")
    if named and Path(str(named)).resolve() == path or cwd not in path.parents:
        return
    if {p.name for p in path.iterdir()} - {".hydra", "run.log", "config.yaml"}:
        return
    shutil.rmtree(path)
    for parent in path.parents:  # a sweep's folder holds multirun.yaml and its jobs
        if parent == cwd or {p.name for p in parent.iterdir()} - {"multirun.yaml"}:
            break
        shutil.rmtree(parent)


def _end_run_logging() -> None:
    """Detach the run's log handlers (configs/hydra/*_logging/wmrobot.yaml), so that a
    caller in the same process (a test, a notebook) does not log into a finished run."""
    for name in ("wmrobot", "hydra"):
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


@contextmanager
def _hydra_argv(argv: list[str]):
    """Hydra reads its arguments from sys.argv and prints its own errors with a stack hint:
    hand it ``argv`` and let its errors propagate (HYDRA_FULL_ERROR) so they print as one line."""
    saved_argv, saved_full = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = argv
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        sys.argv = saved_argv
        if saved_full is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full


def run_app(
    command: str, config_name: str, job: Callable[[DictConfig, Path], Any], args: list[str]
) -> int:
    """Run ``job(cfg, run_dir)`` as the Hydra app of ``configs/<config_name>.yaml``.

    ``args`` are Hydra's: overrides, ``-m`` (a sweep), ``--cfg job``, ... Bad input, ours
    or Hydra's, prints one line ``wmrobot <command>: error: ...`` and returns 2.
    """
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    def task(cfg: DictConfig) -> None:
        path = run_dir()
        try:
            if (path / ".hydra").is_dir():  # the resolved config, at the top as well
                (path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            job(cfg, path)
        except WmrobotError as e:
            _discard_unused(path, cfg)
            # Hydra reports a failed job over several lines; SystemExit passes through it.
            raise SystemExit(error(command, str(e))) from None

    if os.environ.get("RANK", "0") != "0":
        args = [*args, *QUIET_RANK]
    app = hydra.main(config_path=config_dir(), config_name=config_name, version_base=None)(task)
    try:
        with _hydra_argv([f"wmrobot {command}", *args]):
            app()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (HydraException, OmegaConfBaseException) as e:
        return error(command, hydra_message(e, command))
    except WmrobotError as e:
        return error(command, str(e))
    except KeyboardInterrupt:
        return error(command, "interrupted")
    finally:
        _end_run_logging()
    return 0
