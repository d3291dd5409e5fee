"""The stand-in renderer: the reference face with a mouth that follows the voice, labelled "stand-in".

No model runs: frames are drawn, ``round(samples * 25 / 16000)`` of them, so everything around
the renderer (protocol, jobs, clip writer, client) is exercised for real; the banner makes sure
nobody mistakes the output for the model's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from opentalking_flashhead.server.clip import FPS, SAMPLE_RATE, SIZE, frame_count, read_mono_16k, write_clip

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
#: Samples and frames of one model slice, per model type (the audio is padded to whole slices).
SLICES = {"pro": (17920, 28), "lite": (15360, 24)}
BANNER = "STAND-IN - not FlashHead output"


def base_image(image_path: Path) -> np.ndarray:
    """The reference cover-cropped to 512×512 RGB, with the stand-in banner drawn on it."""
    with Image.open(image_path) as source:
        image = ImageOps.fit(source.convert("RGB"), (SIZE, SIZE), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, SIZE, 40), fill=(0, 0, 0))  # rows 36-39 carry the progress bar
    try:
        font = ImageFont.load_default(size=24)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        font = ImageFont.load_default()
    draw.text((SIZE // 2, 20), BANNER, fill=(255, 214, 0), font=font, anchor="mm")
    return np.asarray(image).copy()


def mouth_levels(audio: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame loudness in [0, 1] from the RMS of each frame's 640 samples (float audio in [-1, 1])."""
    padded = np.zeros(frames * SAMPLES_PER_FRAME, dtype=np.float32)
    used = min(audio.size, padded.size)
    padded[:used] = audio[:used]
    rms = np.sqrt(np.mean(padded.reshape(frames, SAMPLES_PER_FRAME) ** 2, axis=1))
    return np.clip(rms * 6.0, 0.0, 1.0)


#: Where the drawn mouth sits in the 512×512 crop: on the vertical centre line, 56 % of the way
#: down, which is where a front-facing head-and-shoulders picture cropped to a square has its mouth
#: (OpenTalking's own FlashHead avatar has it at 55 %). No face detector: the stand-in needs none.
MOUTH_CENTRE = (0.5, 0.56)


class _Mouth:
    """An ellipse at :data:`MOUTH_CENTRE` whose height follows the level."""

    def __init__(self) -> None:
        self.cx, self.cy = int(SIZE * MOUTH_CENTRE[0]), int(SIZE * MOUTH_CENTRE[1])
        self.half_w, self.max_half_h = int(SIZE * 0.07), int(SIZE * 0.045)
        ys, xs = np.mgrid[-self.max_half_h : self.max_half_h + 1, -self.half_w : self.half_w + 1]
        self.ys, self.xs = ys.astype(np.float32), xs.astype(np.float32)

    def draw(self, frame: np.ndarray, level: float) -> None:
        half_h = 2.0 + level * (self.max_half_h - 2.0)
        inside = (self.xs / self.half_w) ** 2 + (self.ys / half_h) ** 2 <= 1.0
        region = frame[
            self.cy - self.max_half_h : self.cy + self.max_half_h + 1,
            self.cx - self.half_w : self.cx + self.half_w + 1,
        ]
        region[inside] = (90, 20, 30)


def draw_frames(image_path: Path, audio: np.ndarray) -> np.ndarray:
    """The stand-in's frames for this face and voice (float32 mono 16 kHz): uint8 RGB (n, 512, 512, 3)."""
    if audio.size == 0:
        raise ValueError("the audio is empty")
    base = base_image(image_path)
    count = frame_count(audio.size)
    frames = np.repeat(base[np.newaxis], count, axis=0)
    mouth = _Mouth()
    for index, level in enumerate(mouth_levels(audio, count)):
        mouth.draw(frames[index], float(level))
        frames[index, 36:40, : SIZE * (index + 1) // count] = (255, 214, 0)  # where in the clip this frame is
    return frames


def render_clip(image_path: Path, audio_path: Path, save_file: Path, *, model_type: str = "pro") -> int:
    """Write the stand-in clip for this face and voice to ``save_file`` (for fake model checkouts);
    returns the frames written. The file appears complete or not at all."""
    if model_type not in SLICES:
        raise ValueError(f"model_type must be one of {sorted(SLICES)}, got {model_type!r}")
    pcm = read_mono_16k(audio_path)
    return write_clip(save_file, draw_frames(image_path, pcm.astype(np.float32) / 32768.0), pcm)


class StandinRenderer:
    """The renderer behind ``serve-standin``: stateless, always ready, drawing in a worker thread."""

    ready = True

    async def render(self, *, image: Path, audio: np.ndarray, session: str | None, chunk: int | None) -> np.ndarray:
        return await asyncio.to_thread(draw_frames, image, audio)

    def close_session(self, session: str) -> bool:
        """Nothing is kept per session, so there is nothing to close."""
        return False

    def describe(self) -> dict[str, Any]:
        return {"resident": False, "standin": True}

    async def aclose(self) -> None:
        """No threads or state of its own to stop."""
