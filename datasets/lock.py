"""One writer per local dataset: an exclusive ``flock`` on ``writer.lock`` in its folder.

The kernel drops the lock when the last descriptor of it closes, so a killed writer (even by
SIGKILL) leaves no stale lock. Holds are counted per process: opening a dataset again for
writing in the process that holds it (the collector's writer thread, say) shares the hold. A
``flock`` belongs to the open file description, which a forked child shares: a writer process
forked from the holder writes under the same lock, and the lock lasts until every process
sharing it has closed it or exited. Another process gets a one-line :class:`DatasetError`
naming the holder (pid, host, since when), which the holder writes into the lock file.

Datasets at URLs take no lock here (docs/DATASET.md, "One writer per dataset").
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from wmrobot.errors import DatasetError

LOCK_FILE = "writer.lock"
HOLDER_WAIT = 1.0  # seconds a refused writer waits for a new holder to name itself

# Lock file (device, inode) -> [fd, holds, pid of the process that took it].
_holds: dict[tuple[int, int], list[int]] = {}
_guard = threading.Lock()


def _new_guard() -> None:
    global _guard
    _guard = threading.Lock()  # a forked child may inherit the guard locked by another thread


os.register_at_fork(after_in_child=_new_guard)


class WriterLock:
    """This process's hold on one dataset's writer lock, given up by :meth:`release`."""

    def __init__(self, key: tuple[int, int], file: str) -> None:
        self._key: tuple[int, int] | None = key
        self.file = file

    def release(self) -> None:
        """Give up this hold (once; later calls do nothing). The lock itself goes when no
        hold of this process and no forked process sharing it is left."""
        with _guard:
            key, self._key = self._key, None
            hold = _holds.get(key) if key is not None else None
            if hold is None:
                return
            hold[1] -= 1
            if hold[1] == 0:
                del _holds[key]
                _forget_holder(hold[0], self.file)


def acquire(folder: str | os.PathLike) -> WriterLock:
    """Hold the writer lock of the dataset (or dataset being built) at ``folder``; raises a
    one-line :class:`DatasetError` naming the holder when another process holds it."""
    writer = _try_acquire(folder)
    if writer is None:
        raise DatasetError(busy_message(folder))
    return writer


def forget_inherited() -> None:
    """In a process forked from a holder, close its copies of the locks it inherited (the
    holder's stand): for a writer process that is done, and may take a moment to exit."""
    with _guard:
        for key, (fd, _, pid) in list(_holds.items()):
            if pid != os.getpid():
                del _holds[key]
                os.close(fd)


def busy_message(folder: str | os.PathLike) -> str:
    """The line that tells a second writer who holds ``folder``'s lock."""
    deadline = time.monotonic() + HOLDER_WAIT
    # A new holder writes its name just after it takes the lock.
    while (name := holder(folder)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return (
        f"{str(folder)!r} is being written by {name or 'another process'}; wait for it to "
        f"finish or collect into another path"
    )


def make_locked_folder(prefix: str) -> tuple[str, WriterLock]:
    """A new folder ``<prefix><8 hex digits>`` holding its writer lock (for a dataset being
    built), whatever :func:`remove_abandoned` running elsewhere does meanwhile."""
    while True:
        folder = f"{prefix}{uuid.uuid4().hex[:8]}"
        try:
            os.makedirs(folder)
        except FileExistsError:
            continue
        try:
            writer = _try_acquire(folder)
        except FileNotFoundError:  # removed as abandoned before its lock was taken
            continue
        if writer is not None:
            return folder, writer


def remove_abandoned(folders: Iterable[str | os.PathLike]) -> None:
    """Remove each of these dataset folders whose writer lock nobody holds (what a creation
    that a crash cut short left), never one that a live process is building."""
    for folder in folders:
        file = os.path.join(folder, LOCK_FILE)
        try:  # created if missing: whoever holds the lock owns the folder, also its builder
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # gone meanwhile, or not ours to touch
            continue
        try:
            if _lock(fd, file):
                shutil.rmtree(folder, ignore_errors=True)
        except (OSError, DatasetError):  # removed meanwhile, or on a filesystem without locks
            pass
        finally:
            os.close(fd)


def _try_acquire(folder: str | os.PathLike) -> WriterLock | None:
    """A hold on ``folder``'s lock, None where another process holds it. Raises
    FileNotFoundError where ``folder`` is gone."""
    file = os.path.join(folder, LOCK_FILE)
    with _guard:
        try:
            st = os.stat(file)
            key = (st.st_dev, st.st_ino)
            if key in _holds:  # held by this process, or by the parent it was forked from
                _holds[key][1] += 1
                return WriterLock(key, file)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise DatasetError(
                f"cannot write {str(folder)!r}: {e.strerror}; check its permissions"
            ) from None
        try:
            locked = _lock(fd, file)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return None
        st = os.fstat(fd)
        since = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
        key = (st.st_dev, st.st_ino)
        _holds[key] = [fd, 1, os.getpid()]
        return WriterLock(key, file)


def _lock(fd: int, file: str) -> bool:
    """Take the exclusive lock on ``fd`` without waiting: False where another process holds
    it. Raises FileNotFoundError where ``file`` was removed meanwhile (then the lock locks a
    file nobody else will open)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as e:  # a filesystem without locks
        raise DatasetError(
            f"cannot lock {file!r}: {e.strerror}; write datasets on a filesystem with locks "
            f"(a local disk, or NFS with locking)"
        ) from None
    st = os.fstat(fd)
    try:
        now = os.stat(file)
    except FileNotFoundError:
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        fcntl.flock(fd, fcntl.LOCK_UN)
        raise FileNotFoundError(file)
    return True


def holder(folder: str | os.PathLike) -> str | None:
    """ "pid N on host H (since T)": the writer that ``folder``'s lock file names (the holder,
    or a killed one); None where it names none (nobody writes, or a new holder is about to)."""
    try:
        holder = json.loads(Path(folder, LOCK_FILE).read_text())
        return f"pid {holder['pid']} on host {holder['host']} (since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _forget_holder(fd: int, file: str) -> None:
    """Close ``fd``, then empty the lock file if nobody holds the lock any more (no forked
    process shares it), so that a dataset closed cleanly names no past writer."""
    # Reopened through /proc where there is one: the folder may have been renamed (a new
    # dataset moved into place) since ``file`` was its lock file's path.
    proc = f"/proc/self/fd/{fd}"
    try:
        again = os.open(proc if os.path.exists(proc) else file, os.O_RDWR)
    except OSError:  # removed with its folder (a discarded build)
        again = None
    os.close(fd)
    if again is None:
        return
    try:
        fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(again, 0)
    except OSError:  # held by a process sharing it, or by a new writer already
        pass
    finally:
        os.close(again)
