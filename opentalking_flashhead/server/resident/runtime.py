"""The resident runtime: SoulX-FlashHead loaded once, every session's stream continued on one pipeline.

``render`` is what the server room calls per request. Sessions (named by our client, see
``identity.session_of``) keep their stream from chunk to chunk; a request naming none is rendered from a
fresh stream. torch and the model are imported by ``load`` only.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from opentalking_flashhead.server.resident import slicing
from opentalking_flashhead.server.resident.options import SLICES, ModelOptions, SliceSpec
from opentalking_flashhead.server.resident.sessions import (
    ChunkGone,
    Session,
    SessionLimitReached,
    SessionTable,
    StreamSlot,
)

if TYPE_CHECKING:
    from opentalking_flashhead.server.resident.model import ResidentModel
    from opentalking_flashhead.server.resident.worker import Job, SliceWorker

__all__ = ["ChunkGone", "ResidentRuntime", "SessionLimitReached"]


class ResidentRuntime:
    def __init__(self, options: ModelOptions, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Cheap: nothing is loaded until ``load``. ``clock`` (monotonic seconds) times the session TTL."""
        self.options = options
        self._sessions = SessionTable(options.max_sessions, options.session_ttl_sec, clock)
        self._model: ResidentModel | None = None
        self._worker: SliceWorker | None = None
        self._load_lock = threading.Lock()
        self._stateless = itertools.count()

    @property
    def spec(self) -> SliceSpec:
        return SLICES[self.options.model_type]

    @property
    def ready(self) -> bool:
        """True once ``load`` has built the pipeline and run its warm-up slice."""
        return self._worker is not None

    def load(self) -> None:
        """BLOCKING (call it in a thread): import the checkout, build the pipeline once, adapt it to the
        device, warm it up with one silent slice, then start the worker thread. A second call does nothing."""
        with self._load_lock:
            if self._worker is not None:
                return
            from opentalking_flashhead.server.resident.model import ResidentModel
            from opentalking_flashhead.server.resident.worker import SliceWorker

            model = ResidentModel.build(self.options)
            model.warm_up()
            self._model, self._worker = model, SliceWorker()

    async def render(self, *, image: Path, audio: np.ndarray, session: str | None, chunk: int | None) -> np.ndarray:
        """uint8 RGB frames (n, 512, 512, 3), n = max(1, round(len(audio) * 25 / 16000)), for float32 mono
        16 kHz ``audio``: padded to whole slices, the frames cut to the audio. The same (session, chunk)
        again gives the same frames without advancing the stream twice; a skipped chunk index is fine."""
        if self._worker is None or self._model is None:
            raise RuntimeError("the FlashHead model is still loading (ResidentRuntime.ready is False)")
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"audio must be mono (one dimension), not of shape {samples.shape}")
        if (session is None) != (chunk is None):
            raise ValueError("a request continues a session with both its session key and its chunk index, or neither")
        frames = slicing.frames_for(samples.size)
        if session is None or chunk is None:
            job = _chunk_job(self._model, StreamSlot(), image, samples, frames)
            return await asyncio.wrap_future(self._worker.submit(f"stateless-{next(self._stateless)}", 0, job))
        self._expire()
        return await asyncio.shield(self._chunk(self._sessions.open(session), chunk, image, samples, frames))

    def close_session(self, session: str) -> bool:
        """End the session our client names ``session`` (session-...), for every face it used; False if none."""
        return self._end(self._sessions.close(session), ChunkGone(f"session {session} was closed"))

    def describe(self) -> dict[str, Any]:
        self._expire()
        return {
            "resident": True,
            "model_type": self.options.model_type,
            "slice_samples": self.spec.samples,
            "frames_per_slice": self.spec.frames,
            "sessions": len(self._sessions),
            "max_sessions": self.options.max_sessions,
            "session_ttl_sec": self.options.session_ttl_sec,
            "device": self.options.device,
            "dtype": self.options.dtype,
        }

    async def aclose(self) -> None:
        """Stop the worker thread (after the step it is running) and drop every session."""
        self._end(self._sessions.clear(), ChunkGone("the server is shutting down"))
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.to_thread(worker.close)

    def _chunk(
        self, session: Session, chunk: int, image: Path, samples: np.ndarray, frames: int
    ) -> asyncio.Future[np.ndarray]:
        """The future of ``chunk``'s frames: the one already kept or pending for a retry, else a new job
        (which prepares the face from this request's ``image`` if the stream has none yet: an inline
        reference is a file only while its request lasts)."""
        assert self._worker is not None and self._model is not None
        kept = session.chunks.get(chunk)
        if kept is not None:
            return kept
        if chunk < session.newest:
            raise ChunkGone(_gone(session, chunk, session.newest))
        from opentalking_flashhead.server.resident.worker import OutOfOrder

        job = _chunk_job(self._model, session.slot, image, samples, frames)
        try:
            future = asyncio.wrap_future(self._worker.submit(session.key, chunk, job))
        except OutOfOrder as exc:
            raise ChunkGone(_gone(session, chunk, None, str(exc))) from None
        session.chunks[chunk] = future

        def settled(done: asyncio.Future[np.ndarray]) -> None:
            session.settled(chunk, done)
            self._sessions.touch(session)

        future.add_done_callback(settled)
        return future

    def _expire(self) -> None:
        self._end(self._sessions.expire(), ChunkGone("the session expired"))

    def _end(self, sessions: list[Session], error: Exception) -> bool:
        if self._worker is not None:
            for session in sessions:
                self._worker.drop(session.key, error)
        return bool(sessions)


def _gone(session: Session, chunk: int, newest: int | None, why: str | None = None) -> str:
    reason = why or f"chunk {newest} has been rendered since and only the newest chunk is kept for a retry"
    return f"chunk {chunk} of session {session.name} cannot be rendered any more: {reason}"


def _chunk_job(model: ResidentModel, slot: StreamSlot, image: Path, samples: np.ndarray, frames: int) -> Job:
    """A chunk as worker steps: the face once per stream, then one step per slice. A chunk that fails (or is
    abandoned) leaves its stream as it was before it, so a retry renders it afresh."""
    if slot.state is None:
        slot.state = model.open_stream(image)
        yield
    stream = slot.state
    before = stream.snapshot()
    rendered: list[np.ndarray] = []
    try:
        for index, piece in enumerate(slicing.split(samples, model.spec)):
            if index:
                yield
            rendered.append(model.run_slice(stream, piece))
    except BaseException:
        stream.restore(before)
        raise
    return (rendered[0] if len(rendered) == 1 else np.concatenate(rendered))[:frames]
