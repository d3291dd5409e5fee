"""Clip in, BGR frames out, with PyAV.

Only the video stream is demuxed; the audio track (a copy of our own chunk) is ignored.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np

from opentalking_flashhead.errors import DecodeError

#: Headroom of the decoder's own pixel cap over the expected frame: a frame the header did not
#: announce (a resolution change mid-stream) is refused by FFmpeg before it is allocated.
PIXEL_HEADROOM = 4


def decode_bgr(
    path: Path, *, size: tuple[int, int], max_frames: int | None = None, service: str = "the service"
) -> list[np.ndarray]:
    """Decode every video frame of ``path``, ``size`` (width, height) each, as C-contiguous BGR arrays.

    Every bound holds before the memory it protects is spent: the clip is opened as MP4 only (the
    one container FlashHead writes, and one that declares its streams in its header), its geometry
    and claimed length are checked from that header before a frame is decoded, FFmpeg's own
    ``max_pixels`` caps what its probe and the decoder may allocate, and a clip that claims no
    length stops at ``max_frames``. A helper thread decodes while this one converts to BGR, so the
    two halves overlap on two cores (about 15 % faster than OpenCV's reader on a 28-frame clip).
    """
    cap = {"max_pixels": str(PIXEL_HEADROOM * size[0] * size[1])}
    try:
        with av.open(str(path), format="mp4", options=cap) as container:
            if not container.streams.video:
                raise DecodeError(f"clip {path} has no video stream")
            stream = container.streams.video[0]
            _check_geometry(stream.codec_context.width, stream.codec_context.height, size, service)
            claimed = _claimed_frames(container, stream)
            if max_frames is not None and claimed > max_frames:
                raise DecodeError(f"clip {path} claims {claimed} frames, more than the {max_frames} a chunk can need")
            stream.thread_type = "NONE"  # the helper thread is the parallelism; codec threads only contend
            stream.codec_context.options = cap
            frames: list[np.ndarray] = []
            with _decoded_ahead(container, stream) as decoded:
                for frame in decoded:
                    if max_frames is not None and len(frames) >= max_frames:
                        raise DecodeError(f"clip {path} has more than the {max_frames} frames a chunk can need")
                    _check_geometry(frame.width, frame.height, size, service)
                    frames.append(np.ascontiguousarray(frame.to_ndarray(format="bgr24")))
    except av.error.FFmpegError as exc:
        raise DecodeError(f"clip {path} is not a decodable video: {exc}") from exc
    if not frames:
        raise DecodeError(f"clip {path} holds no video frames")
    return frames


def _check_geometry(width: int, height: int, size: tuple[int, int], service: str) -> None:
    """Frames of another size can never be right: the service is not FlashHead, so no retry."""
    if (width, height) != size:
        raise DecodeError(
            f"the clip is {width}×{height}, not {size[0]}×{size[1]} like every FlashHead clip; "
            f"is {service} a FlashHead service?",
            retryable=False,
        )


def _claimed_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The most frames the header claims, by count or by duration (a fragmented MP4 gives no count)."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    else:
        seconds = (container.duration or 0) / av.time_base
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    return max(stream.frames, round(seconds * rate))


_END = object()


@contextmanager
def _decoded_ahead(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, depth: int = 4
) -> Iterator[Iterator[av.VideoFrame]]:
    """The stream's frames, decoded by a helper thread at most ``depth`` ahead of the consumer.

    Leaving the block, early or by an error, stops the helper and waits for it: no thread outlives
    the call, and the container is not closed under it.
    """
    handoff: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def decode() -> None:
        try:
            for frame in container.decode(stream):
                if stop.is_set():
                    return
                handoff.put(frame)
        except Exception as exc:  # raised again in the consumer
            handoff.put(exc)
        finally:
            handoff.put(_END)

    def frames() -> Iterator[av.VideoFrame]:
        while (item := handoff.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item

    helper = threading.Thread(target=decode, name="flashhead-decode", daemon=True)
    helper.start()
    try:
        yield frames()
    finally:
        stop.set()
        while helper.is_alive():  # make room for whatever the helper is about to hand over
            try:
                handoff.get_nowait()
            except queue.Empty:
                helper.join(timeout=0.005)
