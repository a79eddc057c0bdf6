"""Shared fixtures: one CPU thread, synthetic episodes and a tiny collected PointMaze dataset."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from wmrobot.datasets import EpisodeStore, collect

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _in_a_folder_of_its_own(tmp_path_factory, monkeypatch):
    """Each test runs in an empty folder of its own, so that no command it starts, in this
    process or in a child, writes a run directory (runs/...) into the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


ENV_ID = "wmrobot/PointMaze-v0"
ROW_SHAPES = {
    "obs": ((3,), "float32"),
    "action": ((2,), "float32"),
    "reward": ((), "float32"),
}


def synthetic_episode(steps: int, rng: np.random.Generator, seed: int = 0) -> dict[str, Any]:
    """A synthetic episode of ``steps`` actions: ``steps + 1`` rows, the last action NaN."""
    action = rng.uniform(-1, 1, size=(steps + 1, 2)).astype(np.float32)
    action[-1] = np.nan
    reward = rng.normal(size=steps + 1).astype(np.float32)
    reward[-1] = 0.0
    return {
        "obs": rng.normal(size=(steps + 1, 3)).astype(np.float32),
        "action": action,
        "reward": reward,
        "seed": seed,
        "return": float(reward.sum()),
        "success": bool(rng.integers(2)),
    }


@pytest.fixture
def make_episode() -> Callable[..., dict[str, Any]]:
    """``make_episode(steps, rng, seed=0)``: a synthetic episode dict ready for ``append``."""
    return synthetic_episode


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def new_store(tmp_path: Path) -> Callable[..., EpisodeStore]:
    """Make an empty synthetic store under ``tmp_path`` (keys obs, action, reward), of class
    ``kind``: EpisodeStore (through zarr) or the acceleration layer's DirectStore."""

    def make(name: str = "d.zarr", kind: type[EpisodeStore] = EpisodeStore) -> EpisodeStore:
        return kind.create(
            tmp_path / name,
            env={"id": "synthetic", "kwargs": {}},
            spaces={"observation": "Box(3)", "action": "Box(2)"},
            row_shapes=ROW_SHAPES,
            collector={"policy": "test", "seed": 0},
        )

    return make


def read_whole_arrays(path: str | Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A dataset read as diffusion_policy's replay buffer reads one, knowing nothing of our
    attributes: ``meta/episode_ends`` and every ``data/`` array whole. Checks that the arrays
    hold exactly the committed rows and episodes (no capacity past them)."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    ends = root["meta/episode_ends"][:]
    data = {k: root[f"data/{k}"][:] for k in root.attrs["keys"]}
    assert len(ends) == root.attrs["n_episodes"]
    assert (ends[-1] if len(ends) else 0) == root.attrs["n_rows"]
    assert {len(v) for v in data.values()} == {root.attrs["n_rows"]}
    for name, array in root["meta"].arrays():
        assert array.shape[0] == root.attrs["n_episodes"], name
    return ends, data


@pytest.fixture
def read_plainly() -> Callable[[str | Path], tuple[np.ndarray, dict[str, np.ndarray]]]:
    """:func:`read_whole_arrays`: ``(episode_ends, {key: rows})`` of a dataset read with
    plain zarr, checked to hold exactly the committed lengths."""
    return read_whole_arrays


@pytest.fixture(scope="session")
def maze_dataset_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Collected once per session; tests use the per-test copy ``maze_dataset``."""
    path = tmp_path_factory.mktemp("maze") / "maze.zarr"
    collect(str(path), ENV_ID, {"layout": "open"}, episodes=4, seed=0, progress=False)
    return path


@pytest.fixture
def maze_dataset(maze_dataset_master: Path, tmp_path: Path) -> Path:
    """A private copy of a 4-episode PointMaze dataset, safe to modify."""
    path = tmp_path / "maze.zarr"
    shutil.copytree(maze_dataset_master, path)
    return path


def strip_checksums(path: Path) -> None:
    """Make the dataset at ``path`` one written before checksums: each array's ``crc32c``
    codec, and the 4 bytes it appends to each chunk, removed."""
    import json

    for document in path.rglob("zarr.json"):
        node = json.loads(document.read_text())
        if node["node_type"] != "array" or node["codecs"][-1] != {"name": "crc32c"}:
            continue
        node["codecs"] = node["codecs"][:-1]
        document.write_text(json.dumps(node, indent=2))
        for chunk in (document.parent / "c").rglob("*"):
            if chunk.is_file():
                chunk.write_bytes(chunk.read_bytes()[:-4])


@pytest.fixture
def without_checksums() -> Callable[[Path], None]:
    """``without_checksums(path)``: the dataset at ``path`` as written before checksums."""
    return strip_checksums


class _RunsCode:
    """A pickled object whose unpickling would create the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def hostile_pickle(tmp_path: Path) -> tuple[Callable[[Path], Path], Path]:
    """(``write(path)``: a torch file at ``path`` whose pickle would create ``marker`` if
    loaded unsafely, ``marker``): a test asserts that the marker never appears."""
    marker = tmp_path / "code-ran"

    def write(path: Path) -> Path:
        torch.save({"weight": torch.zeros(2), "payload": _RunsCode(marker)}, path)
        return path

    return write, marker


@pytest.fixture(params=["under a file", "read-only folder"])
def unwritable(request: pytest.FixtureRequest, tmp_path: Path):
    """A folder path that cannot be made: below a file (which stops root too), or in a
    read-only folder (which root writes into anyway: skipped as root)."""
    if request.param == "under a file":
        (tmp_path / "a-file").write_text("not a folder")
        yield tmp_path / "a-file" / "out"
        return
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; 'under a file' covers root")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    yield locked / "out"
    locked.chmod(0o755)


@pytest.fixture
def tree_of() -> Callable[[Path], dict[str, str]]:
    """``tree_of(root)``: every path under ``root`` with a hash of its bytes ("dir" for a
    folder), to check that a refused command left it as it was."""

    def tree(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file()
            else "dir"
            for p in sorted(root.rglob("*"))
        }

    return tree
