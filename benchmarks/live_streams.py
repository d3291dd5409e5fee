"""Benchmark 4: CPU and memory per live stream.

N concurrent sessions in this process, each fed one 17,920-sample chunk every 1.12 s as a live
host feeds it, against the stand-in (in its own process, capacity N). For N = 1, 2, 4, ...:
CPU seconds this process spends per second of delivered 512x512@25 video, per stream (target
<= 0.08), whether every chunk of every stream arrived before the next was due (real time), and
peak RSS growth over the idle process per session (target <= 60 MB). The single-session run is
the baseline the others are compared with.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opentalking_flashhead import FlashHeadClient

import common

PERIOD = common.SLICE / 16000  # 1.12 s of audio per chunk
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


class PeakRss:
    """Samples this process's RSS every 20 ms while running."""

    def __enter__(self) -> PeakRss:
        self.peak, self.running = rss_mb(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()


async def stream(url: str, chunks: int, face: bytes, lateness: list[float]) -> None:
    client = FlashHeadClient(base_url=url, shared_local_dir=str(common.scratch_dir()))
    await client.init_session(ref_image=face)
    start = time.monotonic()
    for i in range(chunks):
        await asyncio.sleep(max(0.0, start + i * PERIOD - time.monotonic()))
        frames = await client.generate(common.speech(common.SLICE, seed=i))
        assert len(frames) == 28
        lateness.append(time.monotonic() - (start + (i + 1) * PERIOD))  # > 0: the next chunk was due first
    await client.close()


def run(sessions: int, chunks: int, face: bytes, idle_mb: float) -> dict[str, float]:
    lateness: list[float] = []
    with common.standin(capacity=sessions) as url, PeakRss() as rss:

        async def all_streams() -> None:
            await asyncio.gather(*(stream(url, chunks, face, lateness) for _ in range(sessions)))

        cpu = time.process_time()
        asyncio.run(all_streams())
        cpu = time.process_time() - cpu
    video_seconds = sessions * chunks * PERIOD
    return {
        "cpu_per_stream": cpu / video_seconds,
        "worst_lateness": max(lateness),
        "rss_per_session": (rss.peak - idle_mb) / sessions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=8, help="chunks per stream")
    parser.add_argument("--max-sessions", type=int, default=32)
    args = parser.parse_args()
    face = common.face_png()
    asyncio.run(stream_warmup(face))
    idle = rss_mb()
    results: dict[int, dict[str, float]] = {}
    sessions = 1
    while sessions <= args.max_sessions:
        results[sessions] = run(sessions, args.chunks, face, idle)
        r = results[sessions]
        late_ms = r["worst_lateness"] * 1000
        print(
            f"  N={sessions}: cpu/stream {r['cpu_per_stream']:.3f} s/s, worst lateness {late_ms:.0f} ms,"
            f" peak RSS +{r['rss_per_session']:.1f} MB/session",
            flush=True,
        )
        if r["worst_lateness"] > 0:
            break
        sessions *= 2
    real_time = [n for n, r in results.items() if r["worst_lateness"] <= 0]
    largest = max(real_time, default=0)
    cpu = max(r["cpu_per_stream"] for r in results.values())
    rss = max(r["rss_per_session"] for r in results.values())
    base = results[1]["cpu_per_stream"]
    figures = (
        f"largest real-time N={largest}; cpu/stream worst {cpu:.3f} s/s"
        f" (N=1 baseline {base:.3f}, ratio {cpu / base:.2f}); peak RSS growth worst {rss:.1f} MB/session"
    )
    return common.verdict(
        f"live streams ({common.machine()})",
        figures,
        {"cpu<=0.08": cpu <= 0.08, "rss<=60MB": rss <= 60.0, "N>=1": largest >= 1},
    )


async def stream_warmup(face: bytes) -> None:
    """Load the libraries and warm the allocator so the idle RSS is not flattered."""
    with common.standin() as url:
        await stream(url, 2, face, [])


if __name__ == "__main__":
    sys.exit(main())
