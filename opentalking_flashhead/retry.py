"""When to try again: one backoff schedule and one give-up rule for everything that is retried.

The HTTP layer retries an exchange (:mod:`.service`), the client a whole chunk (:mod:`.client`):
both pause longer after each failure, and give up once the next attempt could not start before
their deadline, rather than starting one that has no time left to answer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

#: Pauses between retries of a failed attempt (seconds); the last one repeats.
RETRY_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0)


def step(schedule: Sequence[float], n: int) -> float:
    """The ``n``-th pause of ``schedule`` (from 0), its last one once it runs out."""
    return schedule[min(n, len(schedule) - 1)]


class Backoff:
    """The failures of one operation so far, and the pause before its next attempt."""

    def __init__(self, schedule: Sequence[float] = RETRY_BACKOFF) -> None:
        self.schedule = schedule
        self.failures = 0

    def next_pause(self, give_up: float) -> float | None:
        """Count one failure; the pause before the next attempt, or None when that attempt would
        start at or after ``give_up`` (``time.monotonic()``)."""
        pause = step(self.schedule, self.failures)
        self.failures += 1
        return None if time.monotonic() + pause >= give_up else pause
