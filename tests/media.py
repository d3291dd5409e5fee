"""What the tests feed the services and clients: speech-like audio, WAV files and bytes, faces, data URIs."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from opentalking_flashhead import audio

RATE = 16000
#: One Pro slice: 28 frames.
PRO_SLICE = 17920


def speech(samples: int = PRO_SLICE, seed: int = 0) -> np.ndarray:
    """A voice-like int16 signal: a warbling tone with a syllable envelope."""
    t = np.arange(samples) / RATE
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 3 * t)) * t) + 0.1 * rng.standard_normal(samples)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (tone * envelope * 12000).astype(np.int16)


def wav_bytes(samples: int) -> bytes:
    """``speech(samples)`` as a 16-bit mono WAV file's bytes."""
    return audio.wav_bytes(speech(samples), RATE)


def write_tone(path: Path, samples: int) -> Path:
    """A plain 200 Hz int16 tone as a 16-bit mono WAV file at ``path``."""
    tone = np.sin(2 * np.pi * 200 * np.arange(samples) / RATE) * 9000
    sf.write(path, tone.astype(np.int16), RATE, subtype="PCM_16")
    return path


def write_face(path: Path, size: tuple[int, int] = (400, 300), colour: tuple[int, int, int] = (120, 90, 60)) -> Path:
    """A plain image of ``size`` (width, height) at ``path``: a face as far as a service's checks go."""
    Image.new("RGB", size, colour).save(path)
    return path


def data_uri(path: Path, mime: str) -> str:
    """The file at ``path`` as an inline input (``data:<mime>;base64,…``)."""
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
