"""The face a session animates: read, decoded in full once, and framed like the model frames it.

The service reads the reference by path and crops it itself; decoding it here as well means a
file that is not an image, is cut short, or is too big to decode safely fails before anything is
written or sent, and that there is a still frame to show when a chunk cannot be generated.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

#: No face photo needs more; a bigger file is refused before it is read in full.
MAX_REFERENCE_MB = 32
#: Checked from the image's header, before its pixels are decoded (a small PNG can claim gigapixels).
#: Pillow's own bomb check would warn at 89 megapixels and raise its own error at twice that.
MAX_REFERENCE_PIXELS = 64_000_000
#: Pillow's modes for 16-bit greys (a 16-bit PNG opens as I;16, or as I before Pillow 10; an I
#: image's values are taken as 16-bit too), whose own conversion to RGB clips above 255 to white.
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_FIX = "give a PNG or JPEG of the face"


@dataclass(frozen=True)
class Reference:
    """The image's bytes as given, the file suffix they call for, and the still of last resort."""

    data: bytes
    suffix: str
    still: np.ndarray


class _TooBig(ValueError):
    """The image claims more pixels than :data:`MAX_REFERENCE_PIXELS`."""


def read_reference(image: str | Path | bytes, size: tuple[int, int]) -> Reference:
    """Read and check a reference image given as a path or as bytes; ``ValueError`` says what is wrong."""
    from PIL import UnidentifiedImageError

    if isinstance(image, (bytes, bytearray, memoryview)):
        data, label = bytes(image), "the reference image (given as bytes)"
    elif isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        label = str(path)
        data = _read_capped(path)
    else:
        raise ValueError(f"the reference image must be a path or bytes, got {type(image).__name__}")
    if len(data) > MAX_REFERENCE_MB * 2**20:
        raise ValueError(f"{label} is over the {MAX_REFERENCE_MB} MB a reference image may be; {_FIX}, smaller")
    try:
        with _opened(data) as opened:
            kind = (opened.format or "png").lower()
            still = _framed(opened, size)
    except _TooBig as exc:
        raise ValueError(f"{label} {exc}; {_FIX}, smaller") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        reason = "not an image format Pillow reads" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"{label} is not a readable image ({reason}); {_FIX}") from exc
    return Reference(data, ".jpg" if kind == "jpeg" else f".{kind}", still)


def still_of(image: bytes, size: tuple[int, int]) -> np.ndarray:
    """The image upright and cover-cropped to ``size`` (as the model frames it), as C-contiguous BGR."""
    with _opened(image) as source:
        return _framed(source, size)


def _read_capped(path: Path) -> bytes:
    """The file's bytes, reading no more than one byte past the limit (a file may grow, or be a pipe)."""
    try:
        with path.open("rb") as file:
            return file.read(MAX_REFERENCE_MB * 2**20 + 1)
    except OSError as exc:
        raise ValueError(f"cannot read the reference image {path}: {exc.strerror or exc}") from exc


@contextmanager
def _opened(data: bytes) -> Iterator[Image.Image]:
    """The image opened from its header, refused (:class:`_TooBig`) if it claims too many pixels.

    Pillow's own bomb warning is raised here as an error, and its error turned into ours, so the
    host's warning filters and ``Image.MAX_IMAGE_PIXELS`` change nothing.
    """
    from PIL import Image

    limit = f"more than the {MAX_REFERENCE_PIXELS // 1_000_000} megapixels a reference image may have"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _TooBig(f"has {limit}") from None
    with opened:
        width, height = opened.size
        if width * height > MAX_REFERENCE_PIXELS:
            raise _TooBig(f"is {width}×{height} pixels, {limit}")
        yield opened


def _framed(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """EXIF orientation applied, 8-bit RGB (16-bit scaled, not clipped), cover-cropped to ``size``, as BGR."""
    from PIL import Image, ImageOps

    upright = ImageOps.exif_transpose(image)
    if upright.mode in _WIDE_MODES:
        wide = np.asarray(upright).astype(np.int32)
        upright = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), "L")
    rgb = ImageOps.fit(upright.convert("RGB"), size, Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
