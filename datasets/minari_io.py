"""Convert between wmrobot datasets and Minari datasets (Farama's offline-RL format, HDF5)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wmrobot.datasets.spaces import describe_spaces, space_from_json
from wmrobot.datasets.store import (
    EpisodeStore,
    dataset_exists,
    episode_row_shapes,
    is_local,
    normalise_path,
)
from wmrobot.errors import DatasetError, EnvError
from wmrobot.provenance import git_revision, versions

if TYPE_CHECKING:
    import gymnasium as gym
    from minari import MinariDataset

BATCH = 256  # episodes per read and per write: bounds memory on large datasets
IMPORTED = "minari-import"  # the collector policy recorded on an imported dataset
# Minari metadata that describe its storage, spaces or env: recorded elsewhere on import.
_STORAGE_METADATA = {
    "observation_space",
    "action_space",
    "env_spec",
    "total_episodes",
    "total_steps",
    "data_format",
    "jpeg_encoding",
    "dataset_size",
}


def _minari() -> Any:
    """The minari module, or one clear line on how to install it (it is an optional extra)."""
    try:
        import h5py  # noqa: F401  (Minari's HDF5 backend fails late without it)
        import minari
    except ImportError:
        raise DatasetError(
            "converting to or from Minari needs minari with HDF5: pip install 'wmrobot[minari]'"
        ) from None
    return minari


def minari_root(root: str | os.PathLike | None = None) -> Path:
    """Where Minari keeps datasets: ``root``, else $MINARI_DATASETS_PATH, else
    ~/.minari/datasets."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    # Minari reads MINARI_DATASETS_PATH at every call; it has no root argument.
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _check_dataset_id(dataset_id: str) -> None:
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: Minari's parser on an id without -v<N>
        raise DatasetError(
            f"{dataset_id!r} is not a Minari dataset id: use (namespace/)name-v<version>, "
            f"e.g. wmrobot/maze-random-v0"
        ) from None


# ------------------------------------------------------------------------------------ import
def import_minari(source: str, out: str | os.PathLike) -> EpisodeStore:
    """A new wmrobot dataset ``out`` holding every episode of the Minari dataset ``source``.

    ``source`` is a dataset id (looked up as ``minari.load_dataset`` does, never downloaded)
    or a Minari dataset folder. Minari stores no physics state, so the result has no
    ``data/physics`` and cannot be replayed. It is built aside and renamed into place, so a
    failure leaves nothing at ``out``.
    """
    minari = _minari()
    out = normalise_path(out)
    if dataset_exists(out):
        raise DatasetError(f"{out!r} already exists; convert into a new path")
    dataset = _open_minari(minari, source)
    obs_space, action_space = dataset.observation_space, dataset.action_space
    obs_keys = _check_spaces(obs_space, action_space, source)
    if dataset.total_episodes == 0:
        raise DatasetError(f"Minari dataset {source!r} holds no episodes")
    metadata = dataset.storage.metadata
    spec = dataset.env_spec
    env = {
        "id": spec.id if spec else None,
        "kwargs": _make_kwargs(spec) if spec else {},
        "spec": spec.to_json() if spec else None,
    }
    spaces = describe_spaces(obs_space, action_space)
    collector = {
        **{k: _jsonable(v) for k, v in metadata.items() if k not in _STORAGE_METADATA},
        "policy": IMPORTED,
        "source": str(source),
        "versions": {**versions(), "minari": minari.__version__},
        "git_revision": git_revision(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    dtypes = {k: (obs_space if n is None else obs_space[n]).dtype for k, n in obs_keys.items()}
    store = None  # created from the first episodes' layout; kept aside until sealed
    try:
        indices = dataset.episode_indices
        for lo in range(0, len(indices), BATCH):
            batch = indices[lo : lo + BATCH]
            episode_meta = list(dataset.storage.get_episode_metadata(batch))
            episodes = [
                _from_minari(ep, meta, obs_keys, dtypes)
                for ep, meta in zip(dataset.iterate_episodes(batch), episode_meta, strict=True)
            ]
            if store is None:
                store = EpisodeStore.create(
                    out,
                    env=env,
                    spaces=spaces,
                    row_shapes=episode_row_shapes(episodes[0]),
                    collector=collector,
                    sealed=False,
                )
            store.append(episodes)
        assert store is not None
        store.finalize_stats()
        store.shrink()  # before the seal: the finished dataset reads right with plain zarr
        store.seal()
        store.close()
    except BaseException:
        if store is not None:
            store.discard()
        raise
    return EpisodeStore.open(out)


def _open_minari(minari: Any, source: str) -> MinariDataset:
    """The Minari dataset at the folder ``source``, or with the id ``source``."""
    folder = Path(source).expanduser()
    if folder.exists():
        data = folder / "data" if (folder / "data").is_dir() else folder
        if not (data / "metadata.json").is_file():
            raise DatasetError(
                f"{source!r} is not a Minari dataset folder (no data/metadata.json in it)"
            )
    else:
        _check_dataset_id(source)
        data = minari_root() / source / "data"
        if not data.is_dir():
            raise DatasetError(
                f"no Minari dataset {source!r} in {minari_root()}; give a dataset folder, set "
                f"MINARI_DATASETS_PATH, or fetch it first with `minari download {source}`"
            )
    try:
        return minari.MinariDataset(data)
    except Exception as e:  # Minari raises several types for unreadable or too new datasets
        raise DatasetError(f"cannot read Minari dataset {source!r}: {_one_line(e)}") from None


def _check_spaces(
    obs_space: gym.Space, action_space: gym.Space, source: str
) -> dict[str, str | None]:
    """Our ``obs`` keys for ``obs_space`` (key -> its name in a Dict observation), or one
    clear line when the spaces do not fit our format (Box actions, Box or flat Dict of Box
    observations)."""
    import gymnasium as gym

    if not isinstance(action_space, gym.spaces.Box):
        raise DatasetError(
            f"Minari dataset {source!r} has action space {action_space}; wmrobot datasets hold "
            f"Box (continuous) actions only"
        )
    if isinstance(obs_space, gym.spaces.Box):
        return {"obs": None}
    if isinstance(obs_space, gym.spaces.Dict) and all(
        isinstance(s, gym.spaces.Box) for s in obs_space.spaces.values()
    ):
        return {f"obs/{name}": name for name in obs_space.spaces}
    raise DatasetError(
        f"Minari dataset {source!r} has observation space {obs_space}; wmrobot datasets hold "
        f"a Box or a Dict of Box observations"
    )


def _from_minari(
    ep: Any, meta: Mapping[str, Any], obs_keys: Mapping[str, str | None], dtypes: Mapping
) -> dict[str, Any]:
    """One Minari episode (T actions, T+1 observations) as our T+1 rows."""
    steps = len(ep.rewards)
    rows = {
        key: np.asarray(ep.observations if name is None else ep.observations[name], dtypes[key])
        for key, name in obs_keys.items()
    }
    for key, values in rows.items():
        if len(values) != steps + 1:
            raise DatasetError(
                f"Minari episode {ep.id} has {len(values)} observations ({key}) for {steps} "
                f"actions; a Minari 0.4+ episode keeps T+1"
            )
    action = np.asarray(ep.actions, dtype=np.float32)
    rewards = np.asarray(ep.rewards, dtype=np.float64)
    infos = ep.infos or {}
    seed = meta.get("seed")
    if "success" in meta:  # written by export_minari
        success = bool(meta["success"])
    else:  # as our collector does: the task's is_success at any step (not at reset)
        success = "is_success" in infos and bool(np.any(infos["is_success"][-steps:]))
    return {
        **rows,
        "action": np.concatenate([action, np.full((1, *action.shape[1:]), np.nan, np.float32)]),
        "reward": np.append(rewards, 0.0).astype(np.float32),
        "terminated": np.append(np.asarray(ep.terminations, dtype=bool), False),
        "truncated": np.append(np.asarray(ep.truncations, dtype=bool), False),
        # Minari's automatic seeds are 64-bit; ours are int64, with -1 for none.
        "seed": int(seed) if seed is not None and 0 <= int(seed) < 2**63 else -1,
        "return": float(meta["return"]) if "return" in meta else float(rewards.sum()),
        "success": success,
    }


def _make_kwargs(spec: Any) -> dict[str, Any]:
    """The ``make_env`` kwargs that re-create the env of ``spec``, as our collector records
    them: the arguments that differ from the registered ones, and a changed time limit."""
    import gymnasium as gym

    import wmrobot.envs  # noqa: F401  (registers our ids)

    registered = gym.registry.get(spec.id)
    defaults = registered.kwargs if registered else {}
    kwargs = {k: v for k, v in spec.kwargs.items() if k not in defaults or defaults[k] != v}
    limit = registered.max_episode_steps if registered else None
    if spec.max_episode_steps is not None and spec.max_episode_steps != limit:
        kwargs["max_episode_steps"] = spec.max_episode_steps
    return _jsonable(kwargs)


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (Minari metadata hold sets and NumPy scalars)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


# ------------------------------------------------------------------------------------ export
def export_minari(
    path: str | os.PathLike,
    dataset_id: str,
    *,
    root: str | os.PathLike | None = None,
    author: str | None = None,
    author_email: str | None = None,
    description: str | None = None,
) -> MinariDataset:
    """Write the wmrobot dataset ``path`` as the Minari dataset ``dataset_id`` into ``root``
    (default: Minari's own, see :func:`minari_root`), so ``minari.load_dataset(dataset_id)``
    opens it. The env spec and spaces are the env's when it can still be made; otherwise
    spaces come from the data and there is no env spec. Only observations, actions, rewards
    and flags go across (no physics, pixels or goals); ``algorithm_name`` is our collecting
    policy, and the metadata key ``wmrobot`` records where the data came from.
    """
    minari = _minari()
    store = EpisodeStore.open(path)
    _check_dataset_id(dataset_id)
    root = minari_root(root)
    final = root / dataset_id
    if final.exists():
        raise DatasetError(
            f"Minari dataset {dataset_id!r} already exists in {root}; choose another id or "
            f"version, or delete it with `minari delete {dataset_id}`"
        )
    if store.n_episodes == 0:
        raise DatasetError(f"{store.path!r} holds no episodes to export")
    attrs = store.attrs
    obs_keys = [k for k in store.keys if k == "obs" or k.startswith("obs/")]
    env, obs_space, action_space = _env_and_spaces(store, obs_keys)
    algorithm = _algorithm_name(attrs["collector"])
    if description is None:
        description = (
            f"{store.n_episodes} episodes ({store.n_transitions} steps) of "
            f"{attrs['env']['id']} collected by wmrobot with policy {algorithm}"
        )
    provenance = {
        "source": os.path.abspath(store.path) if is_local(store.path) else store.path,
        "fingerprint": store.fingerprint(),
        "env": attrs["env"],
        "collector": attrs["collector"],
    }
    episode_meta: list[dict[str, Any]] = []
    # Built under a hidden folder of ``root`` (Minari's listing skips those) and renamed into
    # place: a failed or killed export leaves no half-written dataset under the id, and no
    # folder of its own making (``root`` and the folders above it that did not exist).
    build = root / f".wmrobot-export-{uuid.uuid4().hex[:8]}"
    new = [p for p in (root, *root.parents) if not p.exists()]
    done = False
    try:
        try:
            build.mkdir(parents=True)
        except OSError as e:  # root is a file, lies under one, or is not ours to write
            raise DatasetError(
                f"cannot write into {root}: {e.strerror}; give another root"
            ) from None
        with _minari_root(build), warnings.catch_warnings():
            # Minari warns about each optional field left out (code_permalink, eval_env, ...).
            warnings.filterwarnings("ignore", r".*(is set to None|env_spec is None)", UserWarning)
            batches = _buffers(minari, store, obs_keys, episode_meta)
            dataset = minari.create_dataset_from_buffers(
                dataset_id,
                next(batches),
                env=env,
                observation_space=obs_space,
                action_space=action_space,
                algorithm_name=algorithm,
                author=author,
                author_email=author_email,
                description=description,
                requirements=["wmrobot"]
                if str(attrs["env"]["id"]).startswith("wmrobot/")
                else None,
                jpeg_encoding=False,  # lossless: image observations stay exact
            )
            for batch in batches:
                dataset.update_dataset_from_buffer(batch)
            dataset.storage.update_episode_metadata(episode_meta)
            dataset.storage.update_metadata({"wmrobot": provenance})
        from minari.dataset.minari_dataset import parse_dataset_id
        from minari.namespace import create_namespace, list_local_namespaces

        namespace = parse_dataset_id(dataset_id)[0]
        with _minari_root(root):
            if namespace is not None and namespace not in list_local_namespaces():
                create_namespace(namespace)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(build / dataset_id, final)
        except OSError as e:
            raise DatasetError(f"cannot move the export into {final}: {e.strerror}") from None
        done = True
    finally:
        shutil.rmtree(new[-1] if new and not done else build, ignore_errors=True)
        if env is not None:
            env.close()
    with _minari_root(root):
        return minari.load_dataset(dataset_id)


def _env_and_spaces(
    store: EpisodeStore, obs_keys: list[str]
) -> tuple[gym.Env | None, gym.Space, gym.spaces.Box]:
    """The dataset's env (None if it cannot be made) and the observation and action spaces:
    the env's if they are the ones recorded, else the recorded descriptions, else (datasets
    that predate those) Boxes built from the data."""
    import gymnasium as gym

    from wmrobot.envs import make_env

    record, spaces = store.attrs["env"], store.attrs["spaces"]
    env = None
    if record.get("id"):
        try:
            env = make_env(record["id"], record.get("kwargs", {}))
        except (EnvError, ImportError):  # an env of a package not installed here
            env = None
    if (
        env is not None
        and repr(env.observation_space) == spaces.get("observation")
        and repr(env.action_space) == spaces.get("action")
    ):
        return env, env.observation_space, env.action_space

    if "observation_space" in spaces:  # recorded exactly (datasets since session 2)
        return (
            env,
            space_from_json(spaces["observation_space"]),
            space_from_json(spaces["action_space"]),
        )

    def box(key: str) -> gym.spaces.Box:
        array = store.array(key)
        if array.dtype.kind == "f":
            low, high = -np.inf, np.inf
        else:  # integer observations, e.g. uint8 images
            low, high = np.iinfo(array.dtype).min, np.iinfo(array.dtype).max
        return gym.spaces.Box(low, high, array.shape[1:], array.dtype)

    if obs_keys == ["obs"]:
        obs_space: gym.Space = box("obs")
    else:
        obs_space = gym.spaces.Dict({k.split("/", 1)[1]: box(k) for k in obs_keys})
    action_space = gym.spaces.Box(
        np.asarray(spaces["action_low"], np.float32),
        np.asarray(spaces["action_high"], np.float32),
        dtype=np.float32,
    )
    return env, obs_space, action_space


def _buffers(
    minari: Any, store: EpisodeStore, obs_keys: list[str], episode_meta: list[dict[str, Any]]
) -> Iterator[list[Any]]:
    """Our episodes as Minari EpisodeBuffers, ``BATCH`` at a time; appends each episode's
    metadata (Minari's usual reward summary, plus our return and success) to
    ``episode_meta``."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    summary = minari.EpisodeMetadataCallback()
    keys = [*obs_keys, "action", "reward", "terminated", "truncated"]
    episodes = store.iter_episodes(keys, batch=BATCH)
    while chunk := list(itertools.islice(episodes, BATCH)):
        batch = []
        for ep in chunk:
            obs = {k.split("/", 1)[1]: ep[k] for k in obs_keys if k != "obs"}
            rewards = ep["reward"][:-1].astype(np.float64)
            seed = int(ep["seed"])
            batch.append(
                EpisodeBuffer(
                    seed=seed if seed >= 0 else None,
                    observations=ep["obs"] if obs_keys == ["obs"] else obs,
                    actions=ep["action"][:-1],
                    rewards=rewards,
                    terminations=ep["terminated"][:-1],
                    truncations=ep["truncated"][:-1],
                )
            )
            episode_meta.append(
                {
                    **summary({"rewards": rewards}),
                    "return": float(ep["return"]),
                    "success": bool(ep["success"]),
                }
            )
        yield batch


def _algorithm_name(collector: Mapping[str, Any]) -> str:
    """Minari's ``algorithm_name`` for a dataset: the policy that collected it, with its
    parameters (the sources' policies for a merged dataset)."""
    if "merged_from" in collector:
        names = dict.fromkeys(_algorithm_name(s["collector"]) for s in collector["merged_from"])
        return " + ".join(names)
    if collector.get("policy") == IMPORTED:
        return str(collector.get("algorithm_name", IMPORTED))
    params = collector.get("policy_params") or {}
    listed = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{collector.get('policy')} ({listed})" if listed else str(collector.get("policy"))
