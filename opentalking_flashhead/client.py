"""The synthesis client OpenTalking's runner drives: chunk → WAV → HTTP → clip → BGR frames.

What the host calls, in what order, and which attributes it reads is written down once, in
``opentalking_flashhead.host.hookspecs``; in short: construct → [connect] →
init_session(ref_image, **anything) → generate(pcm)* → close(), and again after every close.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opentalking_flashhead import audio, http_bounds, targets, video
from opentalking_flashhead.artifacts import ClipLocator, find_clip
from opentalking_flashhead.errors import FlashHeadError, ServiceStalled, ServiceUnavailable
from opentalking_flashhead.host.frames import VideoFrameData
from opentalking_flashhead.reference import Reference, read_reference
from opentalking_flashhead.retry import Backoff
from opentalking_flashhead.service import ServiceClient, Stats
from opentalking_flashhead.session_files import LINGER_MIN_SEC, SessionFiles, private_dir
from opentalking_flashhead.settings import FPS, HEIGHT, SAMPLE_RATE, WIDTH, Settings, env_name
from opentalking_flashhead.timing import FrameClock, fit

log = logging.getLogger(__name__)

#: A clip with more than this many times the frames a chunk needs is refused before decoding.
MAX_FRAME_FACTOR = 4


@dataclass
class _Session:
    """What one init_session … close span owns: its files in shared storage and its clock."""

    files: SessionFiles
    reference_remote: str
    still: np.ndarray
    #: The reference as a data URI when the service takes inputs inline (no shared storage needed).
    reference_inline: str | None = None
    clock: FrameClock = field(default_factory=lambda: FrameClock(FPS, SAMPLE_RATE))
    chunks: int = 0
    stills_in_a_row: int = 0
    #: A request was given up on: the service may still write its clip, even after close().
    abandoned: bool = False
    #: The resident worker its chunks go to, when RESIDENT_TARGETS names several.
    pin: targets.Pin | None = None

    @property
    def name(self) -> str:
        return self.files.name


class FlashHeadClient:
    """FlashHead synthesis client for OpenTalking (and anyone else with PCM and a face).

    ``ws_url``, ``model`` and ``config`` are what OpenTalking passes; any other keyword overrides
    the matching ``OPENTALKING_FLASHHEAD_*`` variable (see :class:`~.settings.Settings`).
    """

    def __init__(
        self,
        ws_url: str | None = None,
        *,
        model: str | None = None,
        config: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = Settings.load(ws_url, model, config, overrides)
        self.sample_rate = SAMPLE_RATE
        self.fps = FPS
        self.width = WIDTH
        self.height = HEIGHT
        self.audio_chunk_samples = self.settings.chunk_samples
        self.slice_len = round(self.audio_chunk_samples * FPS / SAMPLE_RATE)
        self.frame_num = self.slice_len
        self.motion_frames_num = 0
        #: What the service advertises beyond OmniRT's protocol (examples/protocol-extensions.md).
        self.extensions: frozenset[str] = frozenset()
        self._service: ServiceClient | None = None
        self._locator: ClipLocator | None = None
        self._session: _Session | None = None
        self._inflight: set[asyncio.Task[list[Any]]] = set()
        self._aborted: set[asyncio.Task[list[Any]]] = set()
        self._lifecycle = asyncio.Lock()
        self.stats = Stats()
        self._targets = targets.pool_for(self.settings.resident_targets)

    def describe(self) -> dict[str, Any]:
        """The session parameters the host reads, as ``init_session`` returns them."""
        return {
            "type": "init",
            "model": self.settings.model,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "sample_rate": self.sample_rate,
            "audio_chunk_samples": self.audio_chunk_samples,
            "frame_num": self.frame_num,
            "motion_frames_num": self.motion_frames_num,
            "slice_len": self.slice_len,
        }

    async def connect(self) -> None:
        """Open the HTTP client (idempotent); nothing is sent until ``init_session``."""
        if self._service is None:
            self._service = ServiceClient(self.settings, stats=self.stats)
            self._locator = ClipLocator(self.settings, self._service.http)

    async def init_session(
        self, ref_image: str | Path | bytes, prompt: str | None = None, seed: int | None = None, **ignored: Any
    ) -> dict[str, Any]:
        """Start a session with this face. ``prompt``, ``seed`` and host-specific keywords are ignored."""
        face = read_reference(ref_image, (WIDTH, HEIGHT))
        async with self._lifecycle:  # the host may close() from another task meanwhile
            await self.connect()
            assert self._service is not None
            try:
                await self._service.check_health()
            except FlashHeadError:
                await self._disconnect()
                raise
            if self._session is not None:
                await self._end_session()
            self._adopt(await self._service.model_card())
            session = self._session = await self._open_session(face)
        log.info(
            "FlashHead session %s: %s model=%s chunk=%d samples (%d frames)",
            session.name,
            self.settings.base_url,
            self.settings.model,
            self.audio_chunk_samples,
            self.slice_len,
        )
        return self.describe()

    def _adopt(self, card: Mapping[str, Any]) -> None:
        """Use what the service advertises: its extensions, and its slice as the chunk length unless
        CHUNK_SAMPLES fixes it (a whole slice per chunk wastes no compute on padding)."""
        extensions = card.get("extensions")
        self.extensions = (
            frozenset(e for e in extensions if isinstance(e, str)) if isinstance(extensions, list) else frozenset()
        )
        slice_samples = card.get("slice_samples")
        if not self.settings.chunk_samples_fixed and isinstance(slice_samples, int) and slice_samples > 0:
            self.audio_chunk_samples = slice_samples
            self.slice_len = self.frame_num = round(slice_samples * FPS / SAMPLE_RATE)

    @property
    def inline(self) -> bool:
        """Inputs and clips travel in HTTP, not through shared storage: the service offers it and no
        storage mapping was configured."""
        return "inline-io" in self.extensions and not self.settings.storage_mapped

    async def generate(self, pcm: np.ndarray) -> list[Any]:
        """Frames for one chunk of 16 kHz audio: exactly as many as keep the session in sync."""
        samples = audio.to_int16(pcm)
        if samples.size > self.audio_chunk_samples:
            raise ValueError(
                f"audio chunk of {samples.size} samples is longer than audio_chunk_samples={self.audio_chunk_samples}; "
                f"split it, or raise {env_name('chunk_samples')}"
            )
        if self._session is None:  # "not connected": OpenTalking's runner then re-initialises and retries
            raise ServiceUnavailable("no session; init_session() must be called before generate(), and after close()")
        session = self._session
        session.chunks += 1
        due, first = session.clock.reserve(samples.size)
        task = asyncio.ensure_future(self._generate(session, session.chunks, samples, due, first))
        self._inflight.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            session.abandoned = True  # the host cancelled us: the job may still write its clip
            if task in self._aborted:
                raise FlashHeadError("the session was closed while this chunk was generating") from None
            task.cancel()
            raise
        except FlashHeadError:
            session.clock.release(first)  # its audio got no frames: keep the count to the audio that did
            raise
        finally:
            self._inflight.discard(task)
            self._aborted.discard(task)

    async def close(self, send_close_msg: bool = True) -> None:
        """End the session: cancel work in flight, remove its files, close connections. Reusable after."""
        async with self._lifecycle:
            await self._end_session()
            await self._disconnect()

    async def _disconnect(self) -> None:
        if self._service is not None:
            await self._service.aclose()
            self._service = self._locator = None

    async def _generate(self, session: _Session, index: int, samples: np.ndarray, due: int, first: int) -> list[Any]:
        """One chunk under the failure policy: misconfigurations raise at once; hiccups are retried
        until the chunk's deadline, a service showing no progress for STALL_SEC at once, then
        covered by still frames (up to MAX_STILL_CHUNKS in a row). Every exchange made for the chunk,
        the clip's download too, ends by its deadline."""
        assert self._locator is not None
        self.stats.chunks += 1
        deadline = time.monotonic() + self.settings.chunk_deadline_sec
        chunk = f"{index:06d}"
        encoded = audio.wav_bytes(samples, SAMPLE_RATE)
        # Inline, the audio travels in the request: nothing of the chunk goes to shared storage.
        files = session.files
        wav = None if session.reference_inline is not None else await files.write_audio(chunk, encoded)
        files.inflight.add(chunk)
        first_failure: FlashHeadError | None = None  # what started the trouble; later ones may be mere timeouts
        backoff = Backoff()
        try:
            while True:
                try:
                    with http_bounds.chunk_deadline(deadline):
                        images = await self._attempt(session, chunk, wav, encoded, samples.size, deadline)
                    session.stills_in_a_row = 0
                    if session.pin is not None:
                        session.pin.succeeded()
                    break
                except FlashHeadError as exc:
                    session.abandoned = True
                    if not exc.retryable:
                        raise
                    if session.pin is not None:  # the next try may go to another worker
                        session.pin.failed(exc)
                    first_failure = first_failure or exc
                    pause = backoff.next_pause(deadline)
                    if isinstance(exc, ServiceStalled) or pause is None:
                        images = [self._still_for(session, first_failure)]
                        break
                    self.stats.retries += 1
                    log.warning("FlashHead chunk %d failed (%s); retrying in %.2f s", index, exc, pause)
                    await asyncio.sleep(pause)
        finally:
            await files.chunk_done(chunk, wav)
        shown = fit(images, due) if due > 0 else []
        if shown and session.stills_in_a_row == 0:
            session.still = shown[-1]
        return [
            VideoFrameData(data=img, width=img.shape[1], height=img.shape[0], timestamp_ms=stamp)
            for img, stamp in zip(shown, session.clock.timestamps(first, len(shown)), strict=True)
        ]

    async def _attempt(
        self, session: _Session, chunk: str, wav: Path | None, encoded: bytes, samples: int, deadline: float
    ) -> list[Any]:
        """Request, fetch and decode one chunk's clip once; ``wav`` is ``encoded`` in shared storage,
        ``None`` when inputs travel inline."""
        assert self._service is not None and self._locator is not None
        output_dir = session.files.output_dir(chunk)
        config = targets.pinned(session.pin, self.settings.service_config(output_dir))
        headers = {"X-FlashHead-Session": session.name, "X-FlashHead-Chunk": str(int(chunk))}
        if wav is None:  # nothing on shared storage: inputs and clip travel in HTTP
            assert session.reference_inline is not None
            inputs = {"image": session.reference_inline, "audio": _data_uri(encoded, "audio/wav")}
            config.pop("output_dir")
            headers["X-FlashHead-Output"] = "inline"
        else:
            inputs = {"image": session.reference_remote, "audio": self._locator.paths.to_remote(wav)}
        body = await self._service.generate(
            {"task": "audio2video", "model": self.settings.model, "inputs": inputs, "config": config},
            deadline,
            headers,
        )
        ref = find_clip(body)
        with private_dir() as private:
            clip = await self._locator.fetch(ref, private / f"clip-{chunk}.mp4", within=output_dir)
            limit = MAX_FRAME_FACTOR * max(1, round(samples * FPS / SAMPLE_RATE))
            size, service = (self.width, self.height), self.settings.base_url
            images = await asyncio.to_thread(video.decode_bgr, clip, size=size, max_frames=limit, service=service)
            if self.settings.save_dir is not None:
                await session.files.save_clip(clip, self.settings.save_dir, chunk)
            return images

    def _still_for(self, session: _Session, cause: FlashHeadError) -> np.ndarray:
        """The frame that covers a chunk which could not be generated in time, or the error itself."""
        if self.settings.on_error == "raise" or session.stills_in_a_row >= self.settings.max_still_chunks:
            raise cause
        session.stills_in_a_row += 1
        self.stats.still_chunks += 1
        log.warning(
            "FlashHead chunk could not be generated (%s); showing a still frame so the audio stays in sync "
            "(%d of %d in a row before giving up; %s=raise turns this off)",
            cause,
            session.stills_in_a_row,
            self.settings.max_still_chunks,
            env_name("on_error"),
        )
        return session.still

    async def _open_session(self, face: Reference) -> _Session:
        """The session's files in shared storage (or only its reference inline, when inputs travel in HTTP)."""
        assert self._locator is not None
        paths = self._locator.paths
        files = await SessionFiles.create(self.settings, paths, face)
        inline = _data_uri(face.data, f"image/{face.suffix.lstrip('.')}") if self.inline else None
        pin = self._targets.pin() if self._targets is not None else None
        return _Session(files, paths.to_remote(files.reference), face.still, inline, pin=pin)

    async def _end_session(self) -> None:
        """Cancel chunks in flight (their jobs too) and remove everything the session put on disk."""
        session, self._session = self._session, None
        for task in list(self._inflight):
            self._aborted.add(task)
            task.cancel()
        abandoned = bool(self._inflight)
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if session is not None and self._service is not None and "close-session" in self.extensions:
            await self._service.close_session(session.name)
        if session is not None:
            if session.pin is not None:
                session.pin.release()
            linger = max(self.settings.timeout_sec, LINGER_MIN_SEC) if abandoned or session.abandoned else 0.0
            await session.files.remove(linger)


def _data_uri(data: bytes, mime: str) -> str:
    """An input sent inline (the ``inline-io`` extension): ``data:<mime>;base64,<payload>``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
