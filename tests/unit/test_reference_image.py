"""The reference image is checked in full before anything touches shared storage or the network."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from opentalking_flashhead import FlashHeadClient


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 150, 120)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (png()[:-40], "not a readable image (image file is truncated"),
        (b"GIF89a but not really", "not a readable image"),
        (b"plain text", "not a readable image (not an image format Pillow reads)"),
    ],
    ids=["truncated", "bogus-header", "text"],
)
async def test_a_bad_reference_fails_before_anything_is_written(tmp_path: Path, data: bytes, words: str) -> None:
    # Nothing listens on port 9: had the image passed, init_session would fail on the health check instead.
    client = FlashHeadClient(base_url="http://127.0.0.1:9", shared_local_dir=str(tmp_path))
    with pytest.raises(ValueError, match="^" + re.escape(f"the reference image (given as bytes) is {words}")):
        await client.init_session(ref_image=data)
    await client.close()
    assert list(tmp_path.iterdir()) == []
