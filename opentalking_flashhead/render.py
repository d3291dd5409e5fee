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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from opentalking_flashhead import storage
from opentalking_flashhead.audio import load_speech
from opentalking_flashhead.client import FlashHeadClient
from opentalking_flashhead.reference import read_reference
from opentalking_flashhead.settings import FPS, HEIGHT, SAMPLE_RATE, WIDTH, _http_url_or_none, env_name

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


def check_output(path: Path, *, force: bool = False) -> None:
    """Refuse an output we could not write, or should not, before any work is done."""
    if path.is_dir():
        raise ValueError(f"output {path} is a directory; give a file name like out.mp4")
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"output {path} does not end in .mp4, but render writes an MP4; name it {path.stem}.mp4")
    if path.exists() and not force:
        raise ValueError(f"output {path} already exists; give --force to overwrite it, or another name")
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


def read_face(image_path: Path) -> bytes:
    """The face image's bytes, checked to be an image; raises ValueError."""
    return read_reference(image_path, (WIDTH, HEIGHT)).data


def load_inputs(audio_path: Path, image_path: Path, output: Path, *, force: bool = False) -> RenderInputs:
    """Read the speech and the face and make sure the output can be written; raises ValueError."""
    image = read_face(image_path)
    check_output(output, force=force)
    return RenderInputs(audio_path, image, output, read_speech(audio_path))


def configured_base_url(environ: Mapping[str, str] = os.environ) -> str | None:
    """The service the environment names, read as the client reads it (``BASE_URL``, else an http(s)
    ``WS_URL``), or None when it names none and render should start the stand-in."""
    return environ.get(env_name("base_url"), "").strip() or _http_url_or_none(environ.get(env_name("ws_url")))


async def render(
    audio_path: Path,
    image_path: Path,
    output: Path,
    *,
    jobs: int = 1,
    progress: bool = True,
    force: bool = False,
    **client_settings: Any,
) -> RenderSummary:
    """Render ``audio_path`` spoken by the face in ``image_path`` to ``output`` (MP4, original audio);
    an existing ``output`` is replaced only with ``force``."""
    inputs = load_inputs(audio_path, image_path, output, force=force)
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


class Mp4Writer:
    """An H.264 MP4 written frame by frame, with the source file's own audio (as AAC) added at the end.

    It writes to a hidden sibling and renames on :meth:`commit`, so a failed run leaves no
    partial output behind.
    """

    def __init__(self, path: Path, fps: int, size: tuple[int, int], audio_source: Path) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial")
        self.audio_source = audio_source
        self.frames = 0
        with av.open(str(audio_source)) as source:
            track = source.streams.audio[0]
            # A WAV without a channel mask says "1 channels", which the AAC encoder refuses.
            rate, layout = track.rate, {1: "mono", 2: "stereo"}.get(track.channels, track.layout.name)
        self.container = av.open(str(self.partial), mode="w", format="mp4")
        self.video = self.container.add_stream("libx264", rate=fps)
        self.video.width, self.video.height = size
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"preset": "veryfast", "bf": "0"}
        self.audio = self.container.add_stream("aac", rate=rate)
        self.audio.layout = layout

    def write(self, bgr: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
        frame.pts = self.frames
        self.frames += 1
        self.container.mux(self.video.encode(frame))

    def commit(self) -> Path:
        """Flush the video, add the audio track, and move the file into place."""
        self.container.mux(self.video.encode(None))
        with av.open(str(self.audio_source)) as source:
            for frame in source.decode(source.streams.audio[0]):
                frame.pts = None
                self.container.mux(self.audio.encode(frame))
        self.container.mux(self.audio.encode(None))
        self.container.close()
        self.partial.replace(self.path)
        return self.path

    def abort(self) -> None:
        self.container.close()
        self.partial.unlink(missing_ok=True)
