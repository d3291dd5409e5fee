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

from tqdm import tqdm

from opentalking_flashhead.audio import load_speech
from opentalking_flashhead.client import FlashHeadClient
from opentalking_flashhead.settings import FPS, HEIGHT, SAMPLE_RATE, WIDTH
from opentalking_flashhead.video import Mp4Writer


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
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write {path}: {parent} is not a writable directory")


async def render(
    audio_path: Path, image_path: Path, output: Path, *, jobs: int = 1, progress: bool = True, **client_settings: Any
) -> RenderSummary:
    """Render ``audio_path`` spoken by the face in ``image_path`` to ``output`` (MP4, original audio)."""
    if not audio_path.is_file():
        raise ValueError(f"audio file not found: {audio_path}")
    check_output(output)
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    started = time.monotonic()
    pcm = load_speech(audio_path, SAMPLE_RATE)
    client = FlashHeadClient(**client_settings)
    writer: Mp4Writer | None = None
    pending: deque[asyncio.Future[list[Any]]] = deque()
    try:
        await client.init_session(ref_image=image_path)
        step = client.audio_chunk_samples
        pieces = [pcm[i : i + step] for i in range(0, pcm.size, step)]
        writer = Mp4Writer(output, FPS, (WIDTH, HEIGHT), audio_path)
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
    return RenderSummary(output, len(pieces), writer.frames, pcm.size / SAMPLE_RATE, time.monotonic() - started)


def _write(writer: Mp4Writer, frames: list[Any], bar: tqdm) -> None:
    for frame in frames:
        writer.write(frame.data)
    bar.update(1)
