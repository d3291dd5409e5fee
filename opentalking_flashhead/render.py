"""Render a whole speech to one talking-head MP4 through ``FlashHeadClient``, chunk by chunk.

The same pipeline a live OpenTalking session uses (chunk → WAV → HTTP → decode), with up to
``jobs`` chunks in flight for services that can take them; frames are written in order as they
arrive, so memory stays at about ``jobs`` chunks whatever the length of the speech.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from opentalking_flashhead import storage
from opentalking_flashhead.audio import load_speech
from opentalking_flashhead.client import FlashHeadClient
from opentalking_flashhead.reference import read_reference
from opentalking_flashhead.settings import FPS, HEIGHT, SAMPLE_RATE, WIDTH, env_name
from opentalking_flashhead.video import Mp4Writer

#: How long one chunk may take in ``render``, retries included, unless CHUNK_DEADLINE_SEC is set:
#: ample for a busy GPU service, yet a dead one fails the run in a minute rather than ten.
RENDER_CHUNK_DEADLINE_SEC = 60.0


@dataclass(frozen=True)
class RenderSummary:
    output: Path
    chunks: int
    frames: int
    audio_sec: float
    wall_sec: float

    @property
    def real_time_factor(self) -> float:
        """Wall time per second of speech: below 1 is faster than real time."""
        return self.wall_sec / self.audio_sec

    def line(self) -> str:
        return (
            f"{self.output}: {self.chunks} chunks, {self.frames} frames, {self.audio_sec:.2f} s of audio "
            f"in {self.wall_sec:.2f} s (real-time factor {self.real_time_factor:.2f})"
        )


def check_output(path: Path) -> None:
    """Refuse an output we could not write, before any work is done."""
    if path.is_dir():
        raise ValueError(f"output {path} is a directory; give a file name like out.mp4")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: {path.parent} is not a writable directory")
    error = storage.write_error(path.parent)
    if error is not None:
        raise ValueError(f"cannot write {path}: {path.parent} is not a writable directory ({error})")


def read_speech(path: Path) -> np.ndarray:
    """The speech as 16 kHz int16 mono, or one line naming the file and what is wrong with it."""
    if not path.is_file():
        raise ValueError(f"audio file not found: {path}")
    return load_speech(path, SAMPLE_RATE)


@dataclass(frozen=True)
class RenderInputs:
    """What a render needs, read and checked: nothing is started until all of it is known to be good."""

    audio_path: Path
    image: bytes
    output: Path
    pcm: np.ndarray


def load_inputs(audio_path: Path, image_path: Path, output: Path) -> RenderInputs:
    """Read the speech and the face and make sure the output can be written; raises ValueError."""
    image = read_reference(image_path, (WIDTH, HEIGHT)).data
    check_output(output)
    return RenderInputs(audio_path, image, output, read_speech(audio_path))


async def render(
    audio_path: Path, image_path: Path, output: Path, *, jobs: int = 1, progress: bool = True, **client_settings: Any
) -> RenderSummary:
    """Render ``audio_path`` spoken by the face in ``image_path`` to ``output`` (MP4, original audio)."""
    inputs = load_inputs(audio_path, image_path, output)
    return await render_inputs(inputs, jobs=jobs, progress=progress, **client_settings)


async def render_inputs(
    inputs: RenderInputs, *, jobs: int = 1, progress: bool = True, **client_settings: Any
) -> RenderSummary:
    """Render checked inputs. A chunk that keeps failing fails the run: no still frames in a file."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    started = time.monotonic()
    client = FlashHeadClient(**{**_failure_policy(), **client_settings})
    writer: Mp4Writer | None = None
    pending: deque[asyncio.Future[list[Any]]] = deque()
    try:
        await client.init_session(ref_image=inputs.image)
        step = client.audio_chunk_samples
        pieces = [inputs.pcm[i : i + step] for i in range(0, inputs.pcm.size, step)]
        writer = Mp4Writer(inputs.output, FPS, (WIDTH, HEIGHT), inputs.audio_path)
        with tqdm(total=len(pieces), unit="chunk", disable=not progress, desc="rendering") as bar:
            for piece in pieces:
                if len(pending) >= jobs:
                    _write(writer, await pending.popleft(), bar)
                pending.append(asyncio.ensure_future(client.generate(piece)))
            while pending:
                _write(writer, await pending.popleft(), bar)
        writer.commit()
    except BaseException:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if writer is not None:
            writer.abort()
        raise
    finally:
        await client.close()
    audio_sec = inputs.pcm.size / SAMPLE_RATE
    return RenderSummary(inputs.output, len(pieces), writer.frames, audio_sec, time.monotonic() - started)


def _failure_policy() -> dict[str, Any]:
    """Raise on a chunk that keeps failing, within RENDER_CHUNK_DEADLINE_SEC unless CHUNK_DEADLINE_SEC says."""
    policy: dict[str, Any] = {"on_error": "raise"}
    if not os.environ.get(env_name("chunk_deadline_sec"), "").strip():
        policy["chunk_deadline_sec"] = RENDER_CHUNK_DEADLINE_SEC
    return policy


def _write(writer: Mp4Writer, frames: list[Any], bar: tqdm) -> None:
    for frame in frames:
        writer.write(frame.data)
    bar.update(1)
