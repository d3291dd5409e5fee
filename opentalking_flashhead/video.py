"""Clip in, BGR frames out, with PyAV.

Only the video stream is demuxed; the audio track (a copy of our own chunk) is ignored.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from opentalking_flashhead.errors import DecodeError


def decode_bgr(path: Path, *, max_frames: int | None = None) -> list[np.ndarray]:
    """Decode every video frame of ``path`` as a C-contiguous H×W×3 uint8 BGR array.

    With ``max_frames``, a clip longer than that is refused before the surplus is decoded: a
    misbehaving service must not make us spend minutes of CPU on one chunk.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(f"clip {path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            declared = stream.frames
            if max_frames is not None and declared and declared > max_frames:
                raise DecodeError(f"clip {path} has {declared} frames, more than the {max_frames} a chunk can need")
            frames: list[np.ndarray] = []
            for frame in container.decode(stream):
                if max_frames is not None and len(frames) >= max_frames:
                    raise DecodeError(f"clip {path} has more than the {max_frames} frames a chunk can need")
                frames.append(np.ascontiguousarray(frame.to_ndarray(format="bgr24")))
    except av.error.FFmpegError as exc:
        raise DecodeError(f"clip {path} is not a decodable video: {exc}") from exc
    if not frames:
        raise DecodeError(f"clip {path} holds no video frames")
    return frames
