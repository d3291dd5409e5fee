"""The open sessions: bounded in number, ended when idle past their TTL or closed by our client.

Used from the event loop only. A session's stream state itself lives in its ``StreamSlot``, which only
the worker thread touches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from opentalking_flashhead.server.resident.identity import session_name

if TYPE_CHECKING:
    from opentalking_flashhead.server.resident.state import StreamState


class SessionLimitReached(Exception):
    """More sessions than --max-sessions; str() is the 503 detail."""


class ChunkGone(Exception):
    """A retry of a chunk older than the one kept (409/410 detail)."""


@dataclass
class StreamSlot:
    """Where a stream's state is kept between its jobs (None until its face is prepared)."""

    state: StreamState | None = None


@dataclass
class Session:
    key: str
    used: float
    slot: StreamSlot = field(default_factory=StreamSlot)
    chunks: dict[int, asyncio.Future[np.ndarray]] = field(default_factory=dict)  # pending, and the newest done
    newest: int = -1  # the highest chunk rendered

    @property
    def name(self) -> str:
        return session_name(self.key)

    @property
    def busy(self) -> bool:
        return any(not future.done() for future in self.chunks.values())

    def settled(self, chunk: int, future: asyncio.Future[np.ndarray]) -> None:
        """A chunk's job ended: keep its frames as the newest (for a retry), or forget a failure so a retry
        renders it again from the state before it."""
        if future.cancelled() or future.exception() is not None:
            if self.chunks.get(chunk) is future:
                del self.chunks[chunk]
            return
        self.newest = max(self.newest, chunk)
        for older in [index for index, kept in self.chunks.items() if index < self.newest and kept.done()]:
            del self.chunks[older]


class SessionTable:
    def __init__(self, max_sessions: int, ttl_sec: float, clock: Callable[[], float]) -> None:
        self.max_sessions = max_sessions
        self.ttl_sec = ttl_sec
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, key: str) -> Session:
        """The session ``key`` names, opened if new (within --max-sessions), marked as used now."""
        session = self._sessions.get(key)
        if session is None:
            if len(self._sessions) >= self.max_sessions:
                raise SessionLimitReached(
                    f"{len(self._sessions)} sessions open (--max-sessions {self.max_sessions}); a session ends "
                    f"when its client closes it or after {self.ttl_sec:g} s idle (--session-ttl)"
                )
            session = self._sessions[key] = Session(key, self._clock())
        session.used = self._clock()
        return session

    def touch(self, session: Session) -> None:
        session.used = self._clock()

    def expire(self) -> list[Session]:
        """End the sessions idle for longer than the TTL (one with a chunk pending is not idle)."""
        cutoff = self._clock() - self.ttl_sec
        return self._remove(lambda session: session.used < cutoff and not session.busy)

    def close(self, name: str) -> list[Session]:
        """End every session our client opened under ``name`` (one per face)."""
        return self._remove(lambda session: session.name == name)

    def clear(self) -> list[Session]:
        return self._remove(lambda session: True)

    def _remove(self, condition: Callable[[Session], bool]) -> list[Session]:
        gone = [session for session in self._sessions.values() if condition(session)]
        for session in gone:
            del self._sessions[session.key]
        return gone
