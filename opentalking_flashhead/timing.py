"""Hold the running frame total to the audio so lips never drift from the voice.

The service returns about ``samples*fps/rate`` frames per chunk, give or take one; over a long
reply those ±1s add up. After every chunk the total handed out must equal
``round(total_samples * fps / sample_rate)``.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class FrameClock:
    """Counts samples and frames of one session and says how many frames each chunk owes."""

    def __init__(self, fps: int, sample_rate: int) -> None:
        self.fps = fps
        self.sample_rate = sample_rate
        self.samples = 0
        self.frames = 0

    def due(self, chunk_samples: int) -> int:
        """Frames the next chunk of ``chunk_samples`` must yield (without advancing the clock)."""
        total = self.samples + chunk_samples
        return round(total * self.fps / self.sample_rate) - self.frames

    def advance(self, chunk_samples: int, frames: int) -> None:
        self.samples += chunk_samples
        self.frames += frames

    def reset(self) -> None:
        self.samples = self.frames = 0

    @property
    def next_timestamp_ms(self) -> float:
        return self.frames * 1000.0 / self.fps


def fit(frames: list[T], count: int) -> list[T]:
    """Trim surplus frames from the end, or repeat the last one to fill a shortfall."""
    if count <= len(frames):
        return frames[:count]
    return frames + [frames[-1]] * (count - len(frames))
