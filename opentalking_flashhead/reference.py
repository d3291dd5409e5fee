"""The face a session animates: read, decoded in full once, and framed like the model frames it.

The service reads the reference by path and crops it itself; decoding it here as well means a
file that is not an image, or is cut short, fails before anything is written or sent, and that
there is a still frame to show when a chunk cannot be generated.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Reference:
    """The image's bytes as given, the file suffix they call for, and the still of last resort."""

    data: bytes
    suffix: str
    still: np.ndarray


def read_reference(image: str | Path | bytes, size: tuple[int, int]) -> Reference:
    """Read and check a reference image given as a path or as bytes; ``ValueError`` says what is wrong."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (bytes, bytearray, memoryview)):
        data, label = bytes(image), "the reference image (given as bytes)"
    elif isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        label = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the reference image {label}: {exc.strerror or exc}") from exc
    else:
        raise ValueError(f"the reference image must be a path or bytes, got {type(image).__name__}")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            kind = (opened.format or "png").lower()
        still = still_of(data, size)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "not an image format Pillow reads" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"{label} is not a readable image ({reason}); give a PNG or JPEG of the face") from exc
    return Reference(data, ".jpg" if kind == "jpeg" else f".{kind}", still)


def still_of(image: bytes, size: tuple[int, int]) -> np.ndarray:
    """The image cover-cropped to ``size`` (as the model frames it), as C-contiguous BGR."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(image)) as source:
        rgb = ImageOps.fit(source.convert("RGB"), size, Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
