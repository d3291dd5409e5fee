"""The face image as the model will see it: its 512×512 crop, and what about it will look bad.

FlashHead centre-crops the reference to a square and scales it to 512×512; a picture smaller
than that is blown up (blurred), and transparent pixels lose their alpha and show whatever
colour they hold (usually black). Users find out from a warning here, not from the video.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from opentalking_flashhead.reference import still_of
from opentalking_flashhead.settings import HEIGHT, WIDTH


def face_warnings(image: bytes) -> list[str]:
    """What about this face image will make the video worse, one sentence each (empty: nothing)."""
    warnings = []
    with Image.open(io.BytesIO(image)) as opened:
        width, height = opened.size
        if min(width, height) < min(WIDTH, HEIGHT):
            warnings.append(
                f"the face image is {width}×{height}: smaller than {WIDTH}×{HEIGHT} on its short side, so the model "
                f"scales it up and the video looks blurred; give a picture at least {WIDTH} pixels on each side"
            )
        if _has_transparency(opened):
            warnings.append(
                "the face image has transparent pixels: the model drops the alpha channel, so they show as the "
                "colour they hold (often black); flatten it onto a background first"
            )
    return warnings


def _has_transparency(image: Image.Image) -> bool:
    """Any pixel not fully opaque: an alpha channel, or a palette or colour key marked transparent."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return False
    return bool(np.asarray(image.convert("RGBA").getchannel("A")).min() < 255)


def save_crop(image: bytes, target: Path) -> None:
    """Write the 512×512 square the model animates (centre crop, as FlashHead frames it) to ``target`` as PNG."""
    Image.fromarray(still_of(image, (WIDTH, HEIGHT))[:, :, ::-1]).save(target, format="PNG")
