"""PCM chunks in, WAV files in shared storage out.

The service reads the WAV by path, possibly over a network mount, the moment it gets the
request; so the file appears under its final name only when complete, written through
:mod:`.confined` so that no symlink the service put in shared storage redirects it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf


def to_int16(pcm: object) -> np.ndarray:
    """Return ``pcm`` as 1-D int16, converting float audio in [-1, 1]; reject anything else loudly."""
    if not isinstance(pcm, np.ndarray):
        raise ValueError(f"audio chunk must be a numpy array, got {type(pcm).__name__}")
    if pcm.ndim != 1:
        raise ValueError(f"audio chunk must be 1-D mono samples, got shape {pcm.shape}")
    if pcm.size == 0:
        raise ValueError("audio chunk is empty; send at least one sample")
    if pcm.dtype == np.int16:
        return pcm
    if pcm.dtype in (np.float32, np.float64):
        if not np.isfinite(pcm).all():
            raise ValueError("audio chunk contains NaN or infinite samples")
        peak = float(np.abs(pcm).max())
        if peak > 1.0:
            raise ValueError(f"float audio must lie in [-1, 1], got a peak of {peak:.3g}")
        return np.round(pcm * 32767.0).astype(np.int16)
    raise ValueError(f"audio chunk must be int16 or float32/float64 in [-1, 1], got dtype {pcm.dtype}")


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono WAV, encoded in memory: half the cost of letting libsndfile write the file itself,
    on the path of every chunk, and what an inline request carries as it is."""
    encoded = io.BytesIO()
    sf.write(encoded, pcm, sample_rate, subtype="PCM_16", format="WAV")
    return encoded.getvalue()


def load_speech(path: Path, sample_rate: int) -> np.ndarray:
    """Any audio PyAV reads (WAV, MP3, FLAC, OGG; any rate, any channels) as int16 mono at ``sample_rate``."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
    blocks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path} has no audio stream")
            for frame in container.decode(container.streams.audio[0]):
                blocks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
            blocks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot read audio from {path}: {exc.strerror}; give a WAV, MP3, FLAC or OGG file") from exc
    pcm = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)
    if pcm.size == 0:
        raise ValueError(f"{path} holds no audio samples")
    return pcm.astype(np.int16, copy=False)
