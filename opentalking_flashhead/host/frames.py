"""The frame type handed to the host: OpenTalking's own when it is installed, an equal twin otherwise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class _VideoFrameData:
    """Field-for-field the same as ``opentalking.core.types.frames.VideoFrameData``."""

    data: Any
    width: int
    height: int
    timestamp_ms: float


def _host_type() -> type:
    try:
        from opentalking.core.types.frames import VideoFrameData
    except ImportError:
        return _VideoFrameData
    return VideoFrameData


VideoFrameData = _host_type()
