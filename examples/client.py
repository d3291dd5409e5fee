"""Drive a FlashHead service with the client OpenTalking uses: a WAV file in, chunk by chunk, frames out.

Start a service first. Without a GPU, the stand-in (same protocol; its frames are drawn from the
face and labelled STAND-IN) in another terminal:

    opentalking-flashhead serve-standin

then, from the checkout:

    python examples/client.py examples/hello.wav --image examples/avatar.png --last-frame last.png

The client reads its settings from ``OPENTALKING_FLASHHEAD_*`` variables (the README's
Configuration table; the default service is http://127.0.0.1:8766); ``--base-url`` overrides.

What ``generate(pcm)`` takes: one chunk, a 1-D array of at most ``client.audio_chunk_samples``
samples (17,920 = 1.12 s by default), int16 or float in [-1, 1], at 16 kHz. A longer array is
refused, so a whole file is fed in chunks, as OpenTalking feeds a reply.

What it returns: a list of frames, each with ``.data`` (a 512×512×3 uint8 numpy array in BGR
order, as OpenCV uses), ``.width``, ``.height`` and ``.timestamp_ms`` (the frame's place in the
session's video, 40 ms apart). A chunk gets its share of 25 frames per second of audio: over a
session the frame count is ``round(samples × 25 / 16000)``, 28 for a full 1.12 s chunk.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from opentalking_flashhead import FlashHeadClient, FlashHeadError


def read_wav(path: Path) -> np.ndarray:
    """The speech as 16 kHz mono int16, which is what the client takes."""
    pcm, rate = sf.read(path, dtype="int16", always_2d=True)
    if rate != 16000 or pcm.shape[1] != 1:
        raise SystemExit(
            f"{path} is {rate} Hz with {pcm.shape[1]} channel(s); give 16 kHz mono (or use "
            "`opentalking-flashhead render`, which takes any audio)"
        )
    return pcm[:, 0]


async def speak(audio: Path, image: Path, base_url: str | None, last_frame: Path | None) -> int:
    pcm = read_wav(audio)
    client = FlashHeadClient(base_url=base_url)  # None: the variable, else the default
    await client.init_session(ref_image=image)  # a path or the image's bytes
    try:
        step = client.audio_chunk_samples
        total = 0
        frames = []
        for index, start in enumerate(range(0, pcm.size, step)):
            frames = await client.generate(pcm[start : start + step])
            first, last = frames[0], frames[-1]
            print(
                f"chunk {index}: {len(frames)} frames of {first.width}×{first.height} BGR, "
                f"{first.timestamp_ms:.0f}–{last.timestamp_ms:.0f} ms"
            )
            total += len(frames)
    finally:
        await client.close()  # removes the session's files from shared storage
    print(f"{total} frames for {pcm.size / 16000:.2f} s of audio")
    if last_frame is not None and frames:
        Image.fromarray(frames[-1].data[:, :, ::-1]).save(last_frame)  # BGR → RGB for Pillow
        print(f"last frame saved to {last_frame}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", type=Path, help="a 16 kHz mono WAV, e.g. examples/hello.wav")
    parser.add_argument("--image", type=Path, required=True, help="the face, e.g. examples/avatar.png")
    parser.add_argument("--base-url", help="the FlashHead service (default: $OPENTALKING_FLASHHEAD_BASE_URL)")
    parser.add_argument("--last-frame", type=Path, help="save the last frame here as a PNG")
    args = parser.parse_args()
    try:
        asyncio.run(speak(args.audio, args.image, args.base_url, args.last_frame))
    except (FlashHeadError, ValueError) as exc:  # no service, a bad key, a file that is not an image...
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
