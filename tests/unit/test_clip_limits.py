"""A clip is bounded before the memory it would cost is spent: geometry and length from its header,
pixels by FFmpeg's own cap, frames while decoding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from faultservice import CANNED, write_clip

import opentalking_flashhead
from opentalking_flashhead.errors import DecodeError
from opentalking_flashhead.video import decode_bgr

TESTS = Path(__file__).resolve().parents[1]
CHUNK_LIMIT = 112  # what the client allows a 28-frame chunk (MAX_FRAME_FACTOR 4)

DECODE_AND_MEASURE = """
import json, sys
from pathlib import Path
import rss
from opentalking_flashhead.video import decode_bgr
baseline = rss.reset_peak()
try:
    outcome = {"frames": len(decode_bgr(Path(sys.argv[1]), size=(512, 512), max_frames=int(sys.argv[2])))}
except Exception as exc:
    outcome = {"error": type(exc).__name__, "message": str(exc), "retryable": getattr(exc, "retryable", None)}
print(json.dumps({**outcome, "growth_mb": rss.peak_growth(baseline) / 2**20}))
"""


def decoded_in_a_fresh_process(clip: Path, max_frames: int = CHUNK_LIMIT) -> dict:
    """decode_bgr's outcome on ``clip`` in its own process, with how far its peak RSS rose (MB)."""
    package_root = Path(opentalking_flashhead.__file__).resolve().parents[1]
    path = os.pathsep.join([str(package_root), str(TESTS), os.environ.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", DECODE_AND_MEASURE, str(clip), str(max_frames)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, check=True)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


def canned(clips: Path, fault: str) -> Path:
    path = clips / f"{fault}.mp4"
    if not path.exists():
        write_clip(path, **CANNED[fault])
    return path


def test_an_oversized_clip_is_refused_from_its_header(clips: Path) -> None:
    clip = canned(clips, "huge")
    assert clip.stat().st_size < 300_000  # a small download that would decode to 200 MB a frame
    outcome = decoded_in_a_fresh_process(clip)
    assert outcome["error"] == "DecodeError" and outcome["retryable"] is False
    assert outcome["message"].startswith("the clip is 8192×8192, not 512×512 like every FlashHead clip; is ")
    assert outcome["growth_mb"] < 100, outcome


def test_an_unframed_clip_longer_than_a_chunk_is_refused_before_decoding(clips: Path) -> None:
    clip = canned(clips, "unframed")
    with av.open(str(clip)) as container:
        assert container.streams.video[0].frames == 0  # the header counts no frames
    outcome = decoded_in_a_fresh_process(clip)
    assert outcome["error"] == "DecodeError" and outcome["retryable"] is True
    assert outcome["message"].endswith(f"claims 280 frames, more than the {CHUNK_LIMIT} a chunk can need")
    assert outcome["growth_mb"] < 30, outcome  # decoding to the limit would hold 112 frames of 0.75 MB


def test_an_unframed_clip_of_a_chunks_length_decodes(clips: Path) -> None:
    clip = clips / "unframed-28.mp4"
    write_clip(clip, size=(512, 512), frames=28, fragmented=True)
    frames = decode_bgr(clip, size=(512, 512), max_frames=CHUNK_LIMIT)
    assert len(frames) == 28 and all(f.shape == (512, 512, 3) and f.flags.c_contiguous for f in frames)


def test_a_clip_whose_header_undercounts_its_frames_is_refused_by_its_duration(clips: Path) -> None:
    """A fragmented MP4 whose moov counts only its first fragment: the duration gives the length away."""
    clip = clips / "undercounted.mp4"
    with av.open(str(clip), mode="w", format="mp4", options={"movflags": "frag_keyframe"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 512
        stream.options = {"preset": "ultrafast", "g": "5"}
        for index in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((512, 512, 3), index, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(clip)) as container:
        assert container.streams.video[0].frames == 5
    with pytest.raises(DecodeError, match="claims 40 frames, more than the 20"):
        decode_bgr(clip, size=(512, 512), max_frames=20)


def test_only_mp4_is_opened(clips: Path) -> None:
    """FlashHead writes MP4; any other demuxer (a playlist, a concat script) is never probed for."""
    clip = clips / "clip.mkv"
    with av.open(str(clip), mode="w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 512
        for _ in range(3):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((512, 512, 3), np.uint8))))
        container.mux(stream.encode(None))
    with pytest.raises(DecodeError, match="is not a decodable video") as refused:
        decode_bgr(clip, size=(512, 512), max_frames=CHUNK_LIMIT)
    assert refused.value.retryable


def write_resized_midway(path: Path, second: int) -> None:
    """An MP4 whose header (and first 5 frames) say 512×512 and whose last 5 frames are ``second``²:
    an H.264 stream may bring a new SPS with any keyframe."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 512
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        for _ in range(5):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((512, 512, 3), 60, np.uint8))))
        later = av.CodecContext.create("libx264", "w")
        later.width = later.height = second
        later.pix_fmt, later.time_base = "yuv420p", Fraction(1, 25)
        later.options = {"preset": "ultrafast", "tune": "zerolatency"}
        packets = []
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((second, second, 3), 200, np.uint8))
            frame.pts, frame.time_base = index, Fraction(1, 25)
            packets += later.encode(frame)
        packets += later.encode(None)
        step = round(1 / (25 * stream.time_base))
        for index, packet in enumerate(packets):  # Annex B, as libx264 writes it; the muxer converts
            moved = av.Packet(bytes(packet))
            moved.pts = moved.dts = (5 + index) * step
            moved.time_base, moved.is_keyframe, moved.stream = stream.time_base, packet.is_keyframe, stream
            container.mux(moved)


@pytest.mark.parametrize(
    ("second", "words", "retryable"),
    [
        (256, "the clip is 256×256, not 512×512 like every FlashHead clip", False),
        (2048, "not a decodable video", True),  # over max_pixels: refused by the decoder, never allocated
    ],
)
def test_a_size_change_after_the_header_is_refused(clips: Path, second: int, words: str, retryable: bool) -> None:
    clip = clips / f"resized-{second}.mp4"
    write_resized_midway(clip, second)
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.frames) == (512, 10)
    with pytest.raises(DecodeError, match=words) as refused:
        decode_bgr(clip, size=(512, 512), max_frames=CHUNK_LIMIT)
    assert refused.value.retryable is retryable
