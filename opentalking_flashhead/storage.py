"""Housekeeping of shared storage: what a crashed process left behind is removed on the next start.

Each session owns a ``session-…`` directory that ``close()`` removes; a process killed mid-session
cannot, so the first session a process opens sweeps directories idle for more than a day.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

SESSION_PREFIX = "session-"
STALE_AFTER_SEC = 24 * 3600

_swept: set[Path] = set()


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
