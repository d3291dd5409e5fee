"""Which resident worker a session's chunks go to (``OPENTALKING_FLASHHEAD_RESIDENT_TARGETS``).

Behind one OmniRT coordinator, several ``opentalking-flashhead worker`` processes each keep their
own sessions' streams, so every chunk of a session must reach the same worker
(``config.resident_target``). Sessions are spread evenly over the targets (the one with fewest
sessions pinned, process-wide); a session whose target fails moves to another for its next try
(continuity restarts from the face there), and a target that keeps failing is skipped for a while.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentalking_flashhead.errors import ConfigError, FlashHeadError, ServiceUnavailable

log = logging.getLogger(__name__)

#: Failures in a row after which a target is skipped, and for how long.
FAILURES_BEFORE_SKIP = 2
SKIP_SEC = 30.0


def parse_targets(name: str, value: object) -> tuple[str, ...]:
    """``host:port,host:port,...`` → the targets, in order, each once; ConfigError naming ``name``."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, Iterable) else [value]
    targets: list[str] = []
    for item in (str(entry).strip() for entry in items):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name}: {item!r} is not host:port (e.g. gpu1:50061,gpu2:50061)")
        if item not in targets:
            targets.append(item)
    return tuple(targets)


@dataclass
class _Health:
    sessions: int = 0
    failures: int = 0
    skipped_until: float = 0.0


class TargetPool:
    """The targets of one process, with the sessions pinned to each and their recent failures."""

    def __init__(self, targets: tuple[str, ...], clock: Callable[[], float] = time.monotonic) -> None:
        if not targets:
            raise ValueError("a TargetPool needs at least one target")
        self.targets = targets
        self._clock = clock
        self._health = {target: _Health() for target in targets}
        self._lock = threading.Lock()

    def pin(self) -> Pin:
        """A new session's pin, on the least loaded target that is not being skipped."""
        with self._lock:
            target = self._choose(exclude=None)
            self._health[target].sessions += 1
        return Pin(self, target)

    def sessions(self) -> dict[str, int]:
        with self._lock:
            return {target: health.sessions for target, health in self._health.items()}

    def _choose(self, exclude: str | None) -> str:
        now = self._clock()
        others = [t for t in self.targets if t != exclude] or list(self.targets)
        usable = [t for t in others if self._health[t].skipped_until <= now] or others
        # Fewest sessions first; among equals, fewest recent failures, then the configured order.
        return min(usable, key=lambda t: (self._health[t].sessions, self._health[t].failures))

    def _move(self, target: str, cause: FlashHeadError) -> str:
        with self._lock:
            health = self._health[target]
            health.failures += 1
            if health.failures >= FAILURES_BEFORE_SKIP:
                health.skipped_until = self._clock() + SKIP_SEC
            chosen = self._choose(exclude=target)
            health.sessions -= 1
            self._health[chosen].sessions += 1
        if chosen != target:
            log.warning(
                "FlashHead resident target %s failed (%s); the session moves to %s, its stream restarting from the "
                "face%s",
                target,
                cause,
                chosen,
                f"; {target} skipped for {SKIP_SEC:g} s" if health.failures >= FAILURES_BEFORE_SKIP else "",
            )
        return chosen

    def _succeeded(self, target: str) -> None:
        with self._lock:
            self._health[target].failures = 0
            self._health[target].skipped_until = 0.0

    def _release(self, target: str) -> None:
        with self._lock:
            self._health[target].sessions -= 1


class Pin:
    """One session's target: where its chunks go until the target fails."""

    def __init__(self, pool: TargetPool, target: str) -> None:
        self.pool = pool
        self.target = target
        self._released = False

    def config(self, config: dict[str, object]) -> dict[str, object]:
        """A request's ``config`` sent to this session's target."""
        return {**config, "resident_target": self.target}

    def failed(self, cause: FlashHeadError) -> None:
        """After a failed try: move on when the target is to blame (the failure names it, or no answer came
        in time: a stalled or unreachable job); other failures (a bad input, the front) leave the pin."""
        if self.target in str(cause) or isinstance(cause, ServiceUnavailable):
            self.target = self.pool._move(self.target, cause)

    def succeeded(self) -> None:
        self.pool._succeeded(self.target)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.pool._release(self.target)


def pinned(pin: Pin | None, config: dict[str, object]) -> dict[str, object]:
    """``config`` sent to the session's target, or unchanged when no targets are configured."""
    return pin.config(config) if pin is not None else config


_pools: dict[tuple[str, ...], TargetPool] = {}
_pools_lock = threading.Lock()


def pool_for(targets: tuple[str, ...]) -> TargetPool | None:
    """The process-wide pool of ``targets`` (every client of the process shares it, so sessions spread
    across all of them); None when no targets are configured."""
    if not targets:
        return None
    with _pools_lock:
        return _pools.setdefault(targets, TargetPool(targets))
