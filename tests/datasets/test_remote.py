"""Datasets at s3:// URLs (collect, resume, read, sample, check) against a local S3 server."""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import s3fs
import torch
import zarr
from moto import server as moto_server

from wmrobot.cli import main
from wmrobot.datasets import EpisodeStore, WindowSampler, collect
from wmrobot.datasets.store import dataset_exists
from wmrobot.errors import DatasetError

ENV_ID = "wmrobot/PointMaze-v0"
KWARGS = {"layout": "open"}
BUCKET = "wmrobot-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``s3://<bucket>`` on moto's S3-compatible server on loopback, reached the way a user
    reaches MinIO or Ceph: through the standard AWS environment variables."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    nowhere = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as mp:
        # No request log in captured output, nothing from the user's ~/.aws, no proxy.
        mp.setattr(logging.getLogger("werkzeug"), "disabled", True)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_CONFIG_FILE", nowhere)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", nowhere)
        mp.setenv("NO_PROXY", "127.0.0.1")
        mp.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        # fsspec caches filesystems by arguments, not environment: drop any made before.
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            s3fs.S3FileSystem().mkdir(BUCKET)
            yield f"s3://{BUCKET}"
        finally:
            forget_s3_filesystems()
            server.stop()


def forget_s3_filesystems() -> None:
    """Close zarr's async S3 clients on zarr's event loop (else aiohttp reports unclosed
    sessions at exit) and drop every cached filesystem, so later tests see this server no more."""
    from zarr.core.sync import sync

    for fs in list(s3fs.S3FileSystem._cache.values()):
        if fs.asynchronous and getattr(fs, "_s3", None) is not None:
            sync(fs._s3.close())
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def remote_maze(s3: str) -> str:
    """Four PointMaze episodes collected into S3: two, then a write that a crash cut short
    (rows past the commit), then resumed to four."""
    url = f"{s3}/maze.zarr"
    assert collect(url, ENV_ID, KWARGS, episodes=2, seed=0, progress=False).episodes == 2
    store = EpisodeStore.open(url, mode="a")
    action = store.array("action")  # grown, as a writer grows it, then written past the commit
    action.resize((store.n_rows + 10, *action.shape[1:]))
    action[store.n_rows :] = 7.0  # never committed
    assert collect(url, ENV_ID, KWARGS, episodes=4, seed=0, progress=False).episodes == 4
    return url


def assert_same_dataset(a: EpisodeStore, b: EpisodeStore) -> None:
    assert a.fingerprint() == b.fingerprint()
    for key in a.keys:
        np.testing.assert_array_equal(a.load([key])[key], b.load([key])[key], err_msg=key)
    for key in ("episode_ends", "seed", "return", "success"):
        np.testing.assert_array_equal(a.meta(key), b.meta(key), err_msg=key)
    # Commits add statistics in a different order when flushed differently: equal to rounding.
    for key, stats in a.attrs["stats"].items():
        for name, values in stats.items():
            np.testing.assert_allclose(values, b.attrs["stats"][key][name], rtol=1e-9)


def test_collecting_and_resuming_on_s3_equals_an_uninterrupted_local_run(
    remote_maze, maze_dataset_master, read_plainly
):
    remote = EpisodeStore.open(remote_maze)
    remote.check_contents()
    assert remote.n_episodes == 4
    assert_same_dataset(remote, EpisodeStore.open(maze_dataset_master))
    # Plain zarr reads it too, as docs/DATASET.md says, and sees no capacity past the commit.
    assert zarr.open_group(remote_maze, mode="r").attrs["n_episodes"] == 4
    read_plainly(remote_maze)


def test_no_free_space_check_is_made_at_a_url_and_that_is_said_once(s3, caplog):
    with caplog.at_level(logging.WARNING, logger="wmrobot"):
        collect(f"{s3}/told.zarr", ENV_ID, KWARGS, episodes=2, flush_every=1, progress=False)
    assert [r.getMessage() for r in caplog.records if "free-space" in r.getMessage()] == [
        f"{s3}/told.zarr: no free-space check is made for a dataset at a URL"
    ]


def test_a_creation_cut_short_is_refused_then_replaced(s3, monkeypatch):
    url = f"{s3}/cut.zarr"
    create_array = zarr.Group.create_array

    def dying(group, name, **kwargs):  # after zarr.json and data/old, before the commit
        if name != "data/old":
            raise KeyboardInterrupt
        return create_array(group, name, **kwargs)

    cut_short = {"old": ((3,), "float32"), "new": ((1,), "float32")}
    with monkeypatch.context() as m:
        m.setattr(zarr.Group, "create_array", dying)
        with pytest.raises(KeyboardInterrupt):
            EpisodeStore.create(url, env={}, spaces={}, row_shapes=cut_short)
    assert list(zarr.open_group(f"{url}/data", mode="r").array_keys()) == ["old"]
    with pytest.raises(DatasetError, match="creation was cut short"):
        EpisodeStore.open(url)
    assert not dataset_exists(url)  # so `collect` creates it again
    shapes = {"obs": ((3,), "float32"), "action": ((2,), "float32")}
    EpisodeStore.create(url, env={}, spaces={}, row_shapes=shapes)
    assert EpisodeStore.open(url).n_rows == 0
    assert sorted(zarr.open_group(f"{url}/data", mode="r").array_keys()) == ["action", "obs"]


def test_sampling_windows_from_s3(remote_maze):
    store = EpisodeStore.open(remote_maze)
    sampler = WindowSampler(store, ["obs/observation", "action"], 4)
    batch = sampler.sample(8, torch.Generator().manual_seed(0))
    assert batch["obs/observation"].shape[:2] == (8, 5)
    assert torch.isfinite(batch["action"][:, :4]).all()  # never an episode's final row


def test_command_line_collects_reads_and_validates_s3(
    s3, remote_maze, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # the run directory stays local
    url = f"{s3}/cli.zarr"
    assert main(["collect", "episodes=1", "env.kwargs.layout=open", f"out={url}"]) == 0
    assert EpisodeStore.open(url).n_episodes == 1
    assert main(["data", "info", remote_maze]) == 0
    out = capsys.readouterr().out
    assert "remote" in out and "4 episodes" in out
    assert main(["data", "validate", remote_maze]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {remote_maze} holds 4 valid episodes")


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("s3://no-such-bucket/maze.zarr", "bucket 'no-such-bucket'"),
        ("{s3}/nothing.zarr", "not a wmrobot dataset (no zarr.json"),
        ("{s3}/plain.zarr", "not a wmrobot dataset (no format)"),
    ],
)
def test_bad_urls_are_one_line_errors(s3, name, needle, capsys):
    url = name.format(s3=s3)
    zarr.open_group(f"{s3}/plain.zarr", mode="a")  # a Zarr group that is no dataset
    with pytest.raises(DatasetError, match=re.escape(needle)):
        EpisodeStore.open(url)
    assert main(["data", "validate", url]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_collecting_into_a_missing_bucket_is_refused(s3):
    with pytest.raises(DatasetError, match="bucket 'no-such-bucket'"):
        collect("s3://no-such-bucket/maze.zarr", ENV_ID, KWARGS, episodes=1, progress=False)


def test_without_s3fs_an_s3_url_is_one_line_error(s3, monkeypatch, capsys):
    registry = importlib.import_module("fsspec.registry")._registry  # imported filesystems

    monkeypatch.setitem(sys.modules, "s3fs", None)  # `import s3fs` fails as if not installed
    monkeypatch.delitem(registry, "s3", raising=False)
    with pytest.raises(DatasetError, match="s3fs"):
        EpisodeStore.open(f"{s3}/maze.zarr")
    assert main(["data", "info", f"{s3}/maze.zarr"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "s3fs" in err


def test_a_remote_dataset_takes_no_writer_lock_and_says_so_once(s3, caplog):
    url = f"{s3}/unlocked.zarr"
    with caplog.at_level(logging.WARNING, logger="wmrobot"):
        collect(url, ENV_ID, KWARGS, episodes=2, progress=False)  # creates it
        collect(url, ENV_ID, KWARGS, episodes=3, progress=False)  # resumes it
        EpisodeStore.open(url)  # a reader: nothing to say
    said = [r.getMessage() for r in caplog.records if "writer lock" in r.getMessage()]
    assert said == [
        f"{url}: datasets at URLs take no writer lock; make sure no other process writes it "
        f"meanwhile (docs/DATASET.md, One writer per dataset)"
    ]
    assert EpisodeStore.open(url).n_episodes == 3
