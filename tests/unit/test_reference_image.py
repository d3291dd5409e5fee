"""The reference image is checked in full before anything touches shared storage or the network."""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from opentalking_flashhead import FlashHeadClient, reference
from opentalking_flashhead.reference import read_reference, still_of


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


def claiming(size: tuple[int, int]) -> bytes:
    """A small PNG whose header claims ``size``: all a decompression bomb needs to look like."""
    data = bytearray(png((8, 8)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", *size)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(data[ihdr : ihdr + 17]))
    return bytes(data)


def test_a_reference_over_the_size_limit_is_refused_before_it_is_read_in_full(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as file:  # sparse: 1 GB that costs no disk
        file.truncate(2**30)
    limit = f"is over the {reference.MAX_REFERENCE_MB} MB a reference image may be"
    with pytest.raises(ValueError, match=f"^{re.escape(str(big))} {limit}"):
        read_reference(big, (512, 512))
    with pytest.raises(ValueError, match=re.escape(f"(given as bytes) {limit}")):
        read_reference(png() + bytes(reference.MAX_REFERENCE_MB * 2**20), (512, 512))


@pytest.mark.parametrize("pil_limit", ["default", "disabled"])
@pytest.mark.parametrize(
    "size", [(9000, 9000), (10_000, 10_000), (20_000, 20_000)], ids=["ours", "pil-warns", "pil-raises"]
)
def test_a_decompression_bomb_is_a_value_error(monkeypatch, size: tuple[int, int], pil_limit: str) -> None:
    """Above 64 megapixels, whatever Pillow's own limit says (the host may have changed it) and
    without Pillow's warning or error getting out."""
    if pil_limit == "disabled":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="more than the 64 megapixels a reference image may have") as refused:
            read_reference(claiming(size), (512, 512))
    assert type(refused.value) is ValueError


def test_exif_orientation_is_applied_to_the_still() -> None:
    image = Image.new("RGB", (96, 64), (20, 40, 200))
    image.paste((220, 30, 30), (0, 0, 48, 32))  # a red top-left quarter shows which way is up
    tagged, upright = io.BytesIO(), io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    image.save(tagged, format="PNG", exif=exif)
    image.transpose(Image.Transpose.ROTATE_270).save(upright, format="PNG")
    still = read_reference(tagged.getvalue(), (64, 96)).still
    assert np.array_equal(still, still_of(upright.getvalue(), (64, 96)))
    assert tuple(still[5, -5]) == (30, 30, 220)  # red (as BGR) is now top-right


GREY = 128


def grey_in(mode: str) -> bytes:
    """A flat, opaque mid-grey image in ``mode`` (16-bit modes at the same level), in a format that keeps the mode."""
    values = {"I;16": GREY * 257, "I": GREY * 257, "L": GREY, "LA": (GREY, 255), "RGBA": (GREY,) * 3 + (255,)}
    image = Image.new("L", (40, 30), GREY).convert("P") if mode == "P" else Image.new(mode, (40, 30), values[mode])
    out = io.BytesIO()
    image.save(out, format="TIFF" if mode == "I" else "PNG")
    with Image.open(io.BytesIO(out.getvalue())) as check:
        assert check.mode == mode
    return out.getvalue()


@pytest.mark.parametrize("mode", ["I;16", "I", "L", "LA", "P", "RGBA"])
def test_greyscale_and_wide_images_make_a_true_still(mode: str) -> None:
    """16-bit greys are scaled to 8 bits, not clipped to white (Pillow's own RGB conversion clips)."""
    still = read_reference(grey_in(mode), (16, 16)).still
    assert still.dtype == np.uint8 and still.shape == (16, 16, 3)
    assert np.all(still == GREY), np.unique(still)
