"""Render a stand-in clip: the reference face with a mouth that follows the voice, labelled "stand-in".

The file matches what FlashHead returns (H.264 without B-frames, 512×512 at 25 fps, the input
audio as AAC, ``round(samples * 25 / 16000)`` frames), so everything downstream of the service
is exercised for real; the banner makes sure nobody mistakes it for the model's output.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw, ImageFont, ImageOps

FPS = 25
SAMPLE_RATE = 16000
SIZE = 512
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
#: Samples and frames of one model slice, per model type (the audio is padded to whole slices).
SLICES = {"pro": (17920, 28), "lite": (15360, 24)}
BANNER = "STAND-IN - not FlashHead output"


def frame_count(samples: int) -> int:
    """Frames a clip of ``samples`` audio samples holds once muxed to the audio's length."""
    return max(1, round(samples * FPS / SAMPLE_RATE))


def read_mono_16k(audio_path: Path) -> np.ndarray:
    """The input audio as int16 mono at 16 kHz: what the model is fed."""
    pcm, rate = sf.read(str(audio_path), dtype="int16", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{audio_path}: audio must be sampled at {SAMPLE_RATE} Hz, got {rate} Hz")
    return pcm.mean(axis=1).astype(np.int16) if pcm.shape[1] > 1 else pcm[:, 0]


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


def mouth_levels(pcm: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame loudness in [0, 1] from the RMS of each frame's 640 samples."""
    padded = np.zeros(frames * SAMPLES_PER_FRAME, dtype=np.float32)
    used = min(pcm.size, padded.size)
    padded[:used] = pcm[:used]
    rms = np.sqrt(np.mean((padded.reshape(frames, SAMPLES_PER_FRAME) / 32768.0) ** 2, axis=1))
    return np.clip(rms * 6.0, 0.0, 1.0)


class _Mouth:
    """An ellipse below the image centre whose height follows the level."""

    def __init__(self) -> None:
        self.cx, self.cy, self.half_w = SIZE // 2, int(SIZE * 0.70), int(SIZE * 0.09)
        self.max_half_h = int(SIZE * 0.06)
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


def render_clip(image_path: Path, audio_path: Path, save_file: Path, *, model_type: str = "pro") -> int:
    """Write the stand-in clip for this face and voice to ``save_file``; returns the frames written.

    The file appears complete or not at all.
    """
    if model_type not in SLICES:
        raise ValueError(f"model_type must be one of {sorted(SLICES)}, got {model_type!r}")
    pcm = read_mono_16k(audio_path)
    if pcm.size == 0:
        raise ValueError(f"{audio_path}: the audio is empty")
    base = base_image(image_path)
    frames = frame_count(pcm.size)
    partial = save_file.with_name(f".{save_file.name}.partial")
    try:
        _encode(partial, base, pcm, frames)
        os.replace(partial, save_file)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return frames


def _encode(path: Path, base: np.ndarray, pcm: np.ndarray, frames: int) -> None:
    mouth = _Mouth()
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for index, level in enumerate(mouth_levels(pcm, frames)):
            image = base.copy()
            mouth.draw(image, float(level))
            image[36:40, : SIZE * (index + 1) // frames] = (255, 214, 0)  # where in the clip this frame is
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        sound = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        sound.sample_rate = SAMPLE_RATE
        sound.pts = 0
        sound.time_base = Fraction(1, SAMPLE_RATE)
        container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
