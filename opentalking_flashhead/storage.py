"""Housekeeping of shared storage: what a crashed process left behind is removed on the next start.

Each session owns a ``session-…`` directory that ``close()`` removes; a process killed mid-session
cannot, so the first session a process opens sweeps directories idle for more than a day. Several
processes share the storage (OpenTalking's API and worker do), and a session may sit idle for
longer than that: each holds an ``flock`` on a lock file in its directory for its whole life,
which the kernel drops when the process dies, however it dies, and the sweep skips a locked
session. What a live session keeps there is :mod:`.session_files`'. Every removal goes through
:mod:`.confined`, so a symlink the service put anywhere below a root is removed, never followed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from opentalking_flashhead import confined
from opentalking_flashhead.confined import Place

log = logging.getLogger(__name__)

SESSION_PREFIX = "session-"
STALE_AFTER_SEC = 24 * 3600
LOCK_NAME = ".lock"

_swept: set[Path] = set()


def write_error(directory: Path) -> str | None:
    """Why a file cannot be created in ``directory``, or None: tried for real, since ``os.access``
    says yes to root everywhere, even in /sys."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".flashhead-", suffix=".probe"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def lock_session(session: Place) -> int:
    """Create the lock file of a new session directory and hold it: the descriptor to close when
    the session ends (the process ending closes it too)."""
    path = session.path / LOCK_NAME
    with confined.opened_dir(session) as directory:
        fd = os.open(
            LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:  # a file system without flock: say which file
        os.close(fd)
        raise OSError(exc.errno, f"cannot lock it ({exc.strerror})", str(path)) from exc
    return fd


def in_use(session: Place) -> bool:
    """Whether a live process holds ``session``'s lock; when that cannot be told, say yes."""
    try:
        with confined.opened_dir(session) as directory:
            fd = os.open(LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
    except FileNotFoundError:
        return False  # no lock file: the process died before taking it, or it predates locks
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock, if taken


def sweep_stale_sessions(root: Path, *, locks: Path | None = None, max_age_sec: float = STALE_AFTER_SEC) -> list[str]:
    """Remove ``session-*`` directories under ``root`` untouched for ``max_age_sec`` whose session is
    not live (its lock, in ``locks`` or else ``root``, is free); once per process and root. Their
    names are returned."""
    if root in _swept:
        return []
    _swept.add(root)
    cutoff = time.time() - max_age_sec
    removed = []
    try:
        with confined.opened_dir(Place(root)) as fd:
            names = [name for name in os.listdir(fd) if name.startswith(SESSION_PREFIX)]
            stale = [name for name in names if _idle_dir(fd, name, cutoff)]
    except OSError:
        return []
    for name in stale:
        if not in_use(Place(locks or root) / name) and confined.remove(Place(root) / name):
            removed.append(name)
    if removed:
        log.info("removed %d stale FlashHead session dir(s) under %s", len(removed), root)
    return removed


def _idle_dir(dir_fd: int, name: str, cutoff: float) -> bool:
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_mtime < cutoff
