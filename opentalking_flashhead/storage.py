"""Housekeeping of shared storage: what a crashed process left behind is removed on the next start.

Each session owns a ``session-…`` directory that ``close()`` removes; a process killed mid-session
cannot, so the first session a process opens sweeps directories idle for more than a day. A job
the client gave up on may still be running on the service and write its clip after ``close()``;
:func:`remove_lingering` keeps watching for that.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

SESSION_PREFIX = "session-"
STALE_AFTER_SEC = 24 * 3600

#: How often :func:`remove_lingering` looks again, and for how long at least: a job the client gave
#: up on after a short timeout may still run its course on the service.
LINGER_POLL_SEC = 1.0
LINGER_MIN_SEC = 60.0

_swept: set[Path] = set()
_lingering: set[asyncio.Task[None]] = set()


def write_error(directory: Path) -> str | None:
    """Why a file cannot be created in ``directory``, or None: tried for real, since ``os.access``
    says yes to root everywhere, even in /sys."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".flashhead-", suffix=".probe"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def sweep_stale_sessions(root: Path, *, max_age_sec: float = STALE_AFTER_SEC) -> list[Path]:
    """Remove ``session-*`` directories under ``root`` untouched for ``max_age_sec``; once per process and root."""
    if root in _swept or not root.is_dir():
        return []
    _swept.add(root)
    cutoff = time.time() - max_age_sec
    removed = []
    for directory in root.glob(f"{SESSION_PREFIX}*"):
        try:
            stale = directory.is_dir() and directory.stat().st_mtime < cutoff
        except OSError:
            continue
        if stale:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    if removed:
        log.info("removed %d stale FlashHead session dir(s) under %s", len(removed), root)
    return removed


def remove_lingering(paths: list[Path], for_sec: float) -> None:
    """Remove ``paths`` now, and again every second for ``for_sec`` in the background.

    For a closed session whose jobs were abandoned (timed out, cancelled while running): the
    service may still write their clips, recreating the directories. The watch ends with the
    event loop at the latest.
    """
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)
    if for_sec > 0:
        task = asyncio.get_running_loop().create_task(_watch(paths, time.monotonic() + for_sec))
        _lingering.add(task)
        task.add_done_callback(_lingering.discard)


async def _watch(paths: list[Path], until: float) -> None:
    while time.monotonic() < until:
        await asyncio.sleep(LINGER_POLL_SEC)
        for path in paths:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed %s, written by a FlashHead job after its session closed", path)
