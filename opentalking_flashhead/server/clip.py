"""The clip writer every renderer shares: frames + the input audio → the MP4 FlashHead returns.

H.264 without B-frames, 512×512 at 25 fps, the input audio as AAC, ``round(samples * 25 / 16000)``
frames, as OmniRT's FlashHead writes it, so everything downstream of the service is exercised
for real whichever renderer drew the frames.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf

FPS = 25
SAMPLE_RATE = 16000
SIZE = 512


def frame_count(samples: int) -> int:
    """Frames a clip of ``samples`` audio samples holds once muxed to the audio's length."""
    return max(1, round(samples * FPS / SAMPLE_RATE))


def read_mono_16k(audio: Path | sf.SoundFile) -> np.ndarray:
    """The input audio as int16 mono at 16 kHz: what the model is fed."""
    pcm, rate = sf.read(audio if isinstance(audio, sf.SoundFile) else str(audio), dtype="int16", always_2d=True)
    if rate != SAMPLE_RATE:
        raise ValueError(f"{audio}: audio must be sampled at {SAMPLE_RATE} Hz, got {rate} Hz")
    if pcm.shape[0] == 0:
        raise ValueError(f"{audio}: the audio is empty")
    return pcm.mean(axis=1).astype(np.int16) if pcm.shape[1] > 1 else pcm[:, 0]


def write_clip(save_file: Path, frames: np.ndarray, pcm: np.ndarray) -> int:
    """Write uint8 RGB ``frames`` (n, 512, 512, 3) with ``pcm`` (int16 mono 16 kHz) as AAC; returns n.

    The file appears complete or not at all.
    """
    if frames.ndim != 4 or frames.shape[1:] != (SIZE, SIZE, 3) or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames must be uint8 of shape (n, {SIZE}, {SIZE}, 3), got {frames.dtype} {frames.shape}")
    partial = save_file.with_name(f".{save_file.name}.partial")
    try:
        _encode(partial, frames, pcm)
        os.replace(partial, save_file)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return len(frames)


def _encode(path: Path, frames: np.ndarray, pcm: np.ndarray) -> None:
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for index, image in enumerate(frames):
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
