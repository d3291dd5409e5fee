"""Hold the running frame total to the audio so lips never drift from the voice.

The service returns about ``samples*fps/rate`` frames per chunk, give or take one; over a long
reply those ±1s add up. After every chunk the total handed out must equal
``round(total_samples * fps / sample_rate)``.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class FrameClock:
    """Counts samples and frames of one session and says how many frames each chunk owes.

    A chunk's share is fixed when it is submitted, in call order, so chunks generated
    concurrently (``render --jobs``) still add up exactly, whichever finishes first.
    """

    def __init__(self, fps: int, sample_rate: int) -> None:
        self.fps = fps
        self.sample_rate = sample_rate
        self.samples = 0
        self.frames = 0
        self._latest: tuple[int, int, int] | None = None  # samples after it, its first frame, its samples

    def reserve(self, chunk_samples: int) -> tuple[int, int]:
        """Account for the next chunk: ``(frames it must yield, index of its first frame)``."""
        first = self.frames
        self.samples += chunk_samples
        self.frames = round(self.samples * self.fps / self.sample_rate)
        self._latest = (self.samples, first, chunk_samples)
        return self.frames - first, first

    def release(self, first: int) -> bool:
        """Undo the reservation whose first frame is ``first``, for a chunk that returned no frames,
        if it is still the latest one; a chunk reserved after it (``render --jobs``) keeps its share."""
        if self._latest is None or self._latest[:2] != (self.samples, first):
            return False
        self.samples -= self._latest[2]
        self.frames, self._latest = first, None
        return True

    def timestamps(self, first: int, count: int) -> list[float]:
        """Where ``count`` frames from frame ``first`` on fall in the session (milliseconds): the
        host pairs each with its slice of the audio by this."""
        step = 1000.0 / self.fps
        return [(first + i) * step for i in range(count)]


def fit(frames: list[T], count: int) -> list[T]:
    """Trim surplus frames from the end, or repeat the last one to fill a shortfall."""
    if count <= len(frames):
        return frames[:count]
    return frames + [frames[-1]] * (count - len(frames))
