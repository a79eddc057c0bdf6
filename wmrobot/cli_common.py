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

from wmrobot.errors import CheckpointError, ConfigError, WmrobotError
from wmrobot.files import existing_ancestor

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


def check_out(
    path: str | Path, key: str = "out", resume_file: str | None = None, resume: bool = False
) -> Path | None:
    """Refuse, in one line, a ``key=path`` a command may not write its output folder into;
    return the topmost folder that making ``path`` will create (None: it exists).

    Allowed: a new folder whose nearest existing parent is a writable folder, or an empty
    folder. The one non-empty folder a command writes into is its own earlier run being
    continued: ``resume`` asked and ``resume_file`` (train: ``train_state.pt``) there. Anything
    else non-empty is refused, so that no output, ours or the user's, is ever overwritten."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={path} is a file; give a folder that is new or empty")
    held = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if held and not (resume and resume_file and (path / resume_file).is_file()):
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        if resume_file and (path / resume_file).is_file():
            raise ConfigError(
                f"{key}={path} holds an earlier run ({shown}); continue it with resume=true, "
                f"or give another {key}="
            )
        cannot = f" and no {resume_file} to resume from" if resume_file and resume else ""
        raise ConfigError(
            f"{key}={path} is not empty (it holds {shown}){cannot}; give a new or empty folder, "
            f"so that nothing there is overwritten"
        )
    return check_writable(path, key)


def check_writable(folder: str | Path, key: str = "out") -> Path | None:
    """Refuse, in one line, a ``folder`` that cannot be made or written into (its nearest
    existing folder is a file, or read-only); return the topmost folder that making it will
    create (None: it exists)."""
    folder = Path(folder)
    parent = existing_ancestor(folder)
    if not parent.is_dir():
        raise ConfigError(f"{key}={folder} cannot be made: {parent} is a file; give another {key}=")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{key}={folder} cannot be written: {parent} is read-only here; give another {key}="
        )
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    return missing[-1] if missing else None


def full_kwargs(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with the env's defaults filled in, so that spelling a default out (or not)
    names the same env."""
    import inspect

    import gymnasium

    try:
        spec = gymnasium.spec(env_id)
        creator = gymnasium.envs.registration.load_env_creator(spec.entry_point)
        classes = creator.__mro__ if inspect.isclass(creator) else (creator,)
        defaults: dict[str, Any] = {}
        for cls in reversed(classes):  # a subclass's default wins over its base's
            init = cls.__init__ if inspect.isclass(cls) else cls
            if inspect.isclass(cls) and "__init__" not in vars(cls):
                continue
            for p in inspect.signature(init).parameters.values():
                if p.default is not inspect.Parameter.empty:
                    defaults[p.name] = p.default
    except Exception:  # an id gymnasium cannot resolve compares as given
        return dict(kwargs)
    return {**defaults, **spec.kwargs, **kwargs}


# How an env is observed and rendered, not which task it is: a checkpoint trained on frames
# (collected with pixels=N) plans on the same task as the env config without them.
VIEW_KWARGS = ("render_mode", "width", "height", "obs_mode", "camera", "show_goal")


def task_kwargs(env_id: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The kwargs that name the task: :func:`full_kwargs` less the ``VIEW_KWARGS``."""
    full = full_kwargs(env_id, kwargs)
    return {k: v for k, v in full.items() if k not in VIEW_KWARGS}


def trained_on(meta: dict[str, Any], checkpoint: str) -> tuple[str, dict[str, Any]]:
    """The env id and kwargs a checkpoint's model was trained on, or one clear error."""
    if "env" not in meta:
        raise CheckpointError(
            f"checkpoint={checkpoint} records no env (a model saved without its training "
            f"metadata): use a checkpoint written by `wmrobot train` or `wmrobot distill`"
        )
    return meta["env"]["id"], meta["env"]["kwargs"]


def check_same_task(
    meta: dict[str, Any], checkpoint: str, env_id: str, kwargs: dict[str, Any], fix: str
) -> tuple[str, dict[str, Any]]:
    """Refuse, in one line ending in ``fix``, to use a checkpoint on another task (``env_id``
    and ``kwargs``: an env config's, a dataset's) than the one it was trained on; that one."""
    trained_id, trained_kwargs = trained_on(meta, checkpoint)
    if trained_id != env_id or task_kwargs(trained_id, trained_kwargs) != task_kwargs(
        env_id, kwargs
    ):
        raise ConfigError(
            f"the checkpoint was trained on {trained_id} {trained_kwargs}, not {env_id} "
            f"{kwargs}: {fix}"
        )
    return trained_id, trained_kwargs


def run_dir() -> Path:
    """The current Hydra job's output directory (``runs/<command>/<timestamp>/``)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


HYDRA_FILES = {".hydra", "run.log", "config.yaml"}  # what Hydra and run_app write first


def _discard_unused(path: Path, cfg: DictConfig, made: Path | None) -> None:
    """Remove a run directory Hydra made for a run that stopped before producing anything,
    and the folders above it that it leaves empty. A run directory the user named with out=
    goes from ``made`` (the topmost folder the run created) down; if it was there before (an
    empty folder: :func:`check_out`), only Hydra's files in it go."""
    path, cwd, named = path.resolve(), Path.cwd().resolve(), cfg.get("out")
    if {p.name for p in path.iterdir()} - HYDRA_FILES:
        return
    if named and Path(str(named)).resolve() == path:
        if made is not None:
            shutil.rmtree(made)
            return
        for name in HYDRA_FILES & {p.name for p in path.iterdir()}:
            shutil.rmtree(path / name) if (path / name).is_dir() else (path / name).unlink()
        return
    if cwd not in path.parents:
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


def _check_cfg_out(cfg: DictConfig, resume_file: str | None) -> Path | None:
    """:func:`check_out` on ``cfg.out``, if it names one."""
    if not cfg.get("out"):
        return None
    return check_out(str(cfg.out), "out", resume_file, bool(cfg.get("resume", False)))


def run_app(
    command: str,
    config_name: str,
    job: Callable[[DictConfig, Path], Any],
    args: list[str],
    out_folder: bool = True,
    resume_file: str | None = None,
) -> int:
    """Run ``job(cfg, run_dir)`` as the Hydra app of ``configs/<config_name>.yaml``.

    ``args`` are Hydra's: overrides, ``-m`` (a sweep), ``--cfg job``, ... Bad input, ours
    or Hydra's, prints one line ``wmrobot <command>: error: ...`` and returns 2. With
    ``out_folder``, ``out=`` names the folder the command writes (see :func:`check_out`;
    ``resume_file`` marks an earlier run that ``resume=true`` continues); it is checked before
    anything is written, and a run that fails removes the folders it made.
    """
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    made: Path | None = None
    sweep = any(a in ("-m", "--multirun") for a in args)
    try:
        _check_args(args, command)
    except ConfigError as e:
        return error(command, str(e))

    def task(cfg: DictConfig) -> None:
        path = run_dir()
        try:
            # A sweep's out= is checked job by job (its values differ), where it is not the
            # run directory Hydra made for the job, or the sweep's folder above it.
            named = Path(str(cfg.get("out") or path)).resolve()
            if out_folder and sweep and named not in (path.resolve(), *path.resolve().parents):
                _check_cfg_out(cfg, resume_file)
            if (path / ".hydra").is_dir():  # the resolved config, at the top as well
                (path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            job(cfg, path)
        except (WmrobotError, OSError) as e:
            _discard_unused(path, cfg, made)
            # Hydra reports a failed job over several lines; SystemExit passes through it.
            raise SystemExit(error(command, _one_line(e))) from None

    if os.environ.get("RANK", "0") != "0":
        args = [*args, *QUIET_RANK]
    app = hydra.main(config_path=config_dir(), config_name=config_name, version_base=None)(task)
    try:
        if out_folder and not sweep:  # before Hydra makes or writes any folder
            overrides = [a for a in args if "=" in a and not a.startswith(("-", "hydra", "+hydra"))]
            made = _check_cfg_out(compose(config_name, overrides, command), resume_file)
        with _hydra_argv([f"wmrobot {command}", *args]):
            app()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (HydraException, OmegaConfBaseException) as e:
        return error(command, hydra_message(e, command))
    except (WmrobotError, OSError) as e:  # OSError: Hydra could not make the run directory
        return error(command, _one_line(e))
    except KeyboardInterrupt:
        return error(command, "interrupted")
    finally:
        _end_run_logging()
    return 0


# Hydra's command-line flags (``wmrobot <command> --help`` lists them); anything else that
# starts with "-" would end in argparse's usage text over several lines.
_HYDRA_FLAGS = {
    *("-m", "--multirun", "-c", "--cfg", "-p", "--package", "--resolve", "-i", "--info"),
    *("-h", "--help", "--hydra-help", "--version", "-r", "--run", "-cp", "--config-path"),
    *("-cn", "--config-name", "-cd", "--config-dir", "-sc", "--shell-completion"),
    "--experimental-rerun",
}


def _check_args(args: list[str], command: str) -> None:
    """Refuse, in one line, an unknown flag and a config group set to null (which Hydra
    meets with a ValueError and a traceback)."""
    for arg in args:
        if arg.startswith("-") and arg.split("=", 1)[0] not in _HYDRA_FLAGS:
            raise ConfigError(
                f"unknown option {arg!r}; give settings as key=value (see `wmrobot {command} "
                f"--help`)"
            )
        key, eq, value = arg.partition("=")
        group = key.lstrip("+~")
        if eq and value == "null" and (Path(config_dir()) / group).is_dir():
            raise ConfigError(
                f"{group}=null: {group} needs a choice; available: "
                f"{', '.join(group_options(group))}"
            )


def _one_line(e: Exception) -> str:
    """Our message, or for an OSError (a folder or file that cannot be made, read or written)
    the file and the system's reason."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"cannot use {e.filename}: {e.strerror}; check the path and its permissions"
    return str(e).splitlines()[0] if isinstance(e, OSError) else str(e)
