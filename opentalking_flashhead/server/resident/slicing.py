"""The stream mode's arithmetic (generate_video.py's default): how a chunk's audio becomes slices and frames.

Each slice appends its samples to an 8 s window, embeds the whole window and keeps embedding frames
[167, 200) (the window's last 33 video frames); the pipeline renders 33 frames of which the first
``motion_frames`` repeat the previous slice and are dropped.
"""

from __future__ import annotations

import numpy as np

from opentalking_flashhead.server.resident.options import SliceSpec

SAMPLE_RATE = 16000
FPS = 25
WINDOW_SEC = 8
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SEC  # 128,000
EMBED_END = WINDOW_SEC * FPS  # 200: the window's last video frame (exclusive)


def embed_range(spec: SliceSpec) -> tuple[int, int]:
    """The embedding frames one slice is rendered from: the window's last 33, [167, 200)."""
    return EMBED_END - spec.frames_per_call, EMBED_END


def frames_for(samples: int) -> int:
    """Frames a clip of ``samples`` audio samples has (at least one), as our client counts them."""
    return max(1, round(samples * FPS / SAMPLE_RATE))


def split(audio: np.ndarray, spec: SliceSpec) -> list[np.ndarray]:
    """The chunk's audio as whole slices, the last one padded with silence (an empty chunk is one slice)."""
    count = max(1, -(-audio.size // spec.samples))
    padded = np.zeros(count * spec.samples, dtype=np.float32)
    padded[: audio.size] = audio
    return list(padded.reshape(count, spec.samples))


def silent_window() -> np.ndarray:
    """A new stream's audio window: 8 s of silence, float64 as the stream loop's deque of floats gives it."""
    return np.zeros(WINDOW_SAMPLES, dtype=np.float64)


def advance(window: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """The window after a slice: the oldest samples out, the slice's in (a new array: the old one is kept
    untouched so a failed chunk can go back to it)."""
    return np.concatenate([window[samples.size :], samples.astype(np.float64)])
