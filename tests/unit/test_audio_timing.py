"""PCM validation, atomic WAV writing, and the cumulative frame rule."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from opentalking_flashhead.audio import to_int16, wav_bytes
from opentalking_flashhead.timing import FrameClock, fit


def test_int16_passes_through() -> None:
    pcm = np.arange(10, dtype=np.int16)
    assert to_int16(pcm) is pcm


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_is_scaled(dtype: type) -> None:
    out = to_int16(np.array([0.0, 1.0, -1.0, 0.5], dtype=dtype))
    assert out.dtype == np.int16
    assert out.tolist() == [0, 32767, -32767, 16384]


@pytest.mark.parametrize(
    ("pcm", "words"),
    [
        (np.zeros((2, 5), dtype=np.int16), "1-D"),
        (np.zeros(0, dtype=np.int16), "empty"),
        (np.array([0.1, np.nan], dtype=np.float32), "NaN"),
        (np.array([2.0], dtype=np.float32), "[-1, 1]"),
        (np.zeros(4, dtype=np.int32), "int32"),
        ([0, 1, 2], "numpy array"),
    ],
)
def test_bad_pcm_says_what_it_got(pcm: object, words: str) -> None:
    with pytest.raises(ValueError, match=words if words != "[-1, 1]" else r"\[-1, 1\]"):
        to_int16(pcm)


def test_wav_is_16_bit_mono_and_complete() -> None:
    pcm = (np.sin(np.arange(16000) / 10) * 10000).astype(np.int16)
    encoded = io.BytesIO(wav_bytes(pcm, 16000))
    info = sf.info(encoded)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 16000)
    encoded.seek(0)
    assert np.array_equal(sf.read(encoded, dtype="int16")[0], pcm)


def test_a_bad_rate_is_refused_while_encoding() -> None:
    with pytest.raises(RuntimeError):
        wav_bytes(np.zeros(4, dtype=np.int16), 0)


@pytest.mark.parametrize("chunk", [16000, 17920, 15360, 4000, 1234])
def test_clock_holds_the_cumulative_rule(chunk: int) -> None:
    clock = FrameClock(25, 16000)
    total = 0
    for n in range(1, 40):
        due, first = clock.reserve(chunk)
        assert first == total
        total += due
        assert total == round(n * chunk * 25 / 16000)


def test_fit_trims_and_pads() -> None:
    assert fit([1, 2, 3], 2) == [1, 2]
    assert fit([1, 2], 4) == [1, 2, 2, 2]
    assert fit([1], 1) == [1]


def test_a_chunk_that_returned_no_frames_is_taken_back() -> None:
    clock = FrameClock(25, 16000)
    clock.reserve(16000)
    due, first = clock.reserve(10000)
    assert clock.release(first) and (clock.samples, clock.frames) == (16000, 25)
    assert clock.reserve(10000) == (due, first)  # the next chunk gets the share the failed one had
    _, later_first = clock.reserve(5000)
    assert not clock.release(first)  # a later chunk reserved since: the shares stay as they are
    assert clock.release(later_first) and clock.frames == later_first


def test_the_clock_stamps_each_frame_with_its_place_in_the_session() -> None:
    clock = FrameClock(25, 16000)
    clock.reserve(17920)
    due, first = clock.reserve(17920)
    assert (due, first) == (28, 28)
    assert clock.timestamps(first, due) == [(28 + i) * 40.0 for i in range(28)]
    assert clock.timestamps(0, 0) == []
