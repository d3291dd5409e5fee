"""Benchmark 3: offline throughput of ``render --jobs 4`` against a slow service.

60 s of speech against the stand-in with --latency 1.5 --capacity 4 (a GPU that takes 1.5 s per
slice and four at once). Target: wall time <= 1.15 x (ceil(chunks / 4) x 1.5 s + the per-chunk
client overhead of benchmark 1, measured here at zero latency). The sequential run (--jobs 1) is
measured in the same run and printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opentalking_flashhead import FlashHeadClient
from opentalking_flashhead.render import render

import common

LATENCY = 1.5
CAPACITY = 4


async def client_overhead(url: str, chunks: int = 10) -> float:
    """Median seconds one chunk costs beyond the service's own time (stand-in at zero latency)."""
    client = FlashHeadClient(base_url=url, shared_local_dir=str(common.scratch_dir()))
    await client.init_session(ref_image=common.face_png())
    times = []
    for i in range(chunks):
        started = time.perf_counter()
        await client.generate(common.speech(common.SLICE, seed=i))
        times.append(time.perf_counter() - started)
    await client.close()
    return common.median_ms(times) / 1000.0


def timed_render(url: str, speech: Path, face: Path, jobs: int) -> float:
    out = common.scratch_dir() / "out.mp4"
    started = time.perf_counter()
    asyncio.run(
        render(speech, face, out, jobs=jobs, progress=False, base_url=url, shared_local_dir=str(common.scratch_dir()))
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the speech")
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    work = common.scratch_dir()
    speech, face = work / "speech.wav", work / "face.png"
    samples = int(args.seconds * 16000)
    sf.write(speech, common.speech(samples), 16000, subtype="PCM_16")
    face.write_bytes(common.face_png())
    chunks = math.ceil(samples / common.SLICE)
    with common.standin() as url:
        overhead = asyncio.run(client_overhead(url))
    with common.standin(latency=LATENCY, capacity=CAPACITY) as url:
        parallel = timed_render(url, speech, face, CAPACITY)
        sequential = None if args.skip_sequential else timed_render(url, speech, face, 1)
    ideal = math.ceil(chunks / CAPACITY) * (LATENCY + overhead)
    sequential_text = "-" if sequential is None else f"{sequential:.1f} s"
    figures = (
        f"{chunks} chunks: --jobs {CAPACITY} {parallel:.1f} s, ideal {ideal:.1f} s (ratio {parallel / ideal:.2f}), "
        f"sequential {sequential_text}, client overhead {overhead * 1000:.0f} ms/chunk"
    )
    verdicts = {"ratio<=1.15": parallel <= 1.15 * ideal}
    return common.verdict(f"offline throughput ({common.machine()})", figures, verdicts)


if __name__ == "__main__":
    sys.exit(main())
