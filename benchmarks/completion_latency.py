"""Benchmark 2: completion latency in async mode.

Time from the job finishing on the service (its ``finished_at_ms``) to frames in hand (generate()
returning), for FlashHeadClient as shipped (event stream, adaptive polls) and, as the baseline
measured in the same run, the same client held to a fixed 0.5 s poll. Target: median <= 30 ms.
The stand-in adds 0.2 s of latency so that every job is still running when the client starts
waiting, as with a real model.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opentalking_flashhead import FlashHeadClient, service

import common


async def latencies(url: str, chunks: int, fixed_poll: bool) -> list[float]:
    finished: list[float] = []
    original = service.ServiceClient._job_result

    def spy(job: Any) -> dict[str, Any]:
        finished.append(job["finished_at_ms"] / 1000.0)
        return original(job)

    service.ServiceClient._job_result = staticmethod(spy)  # type: ignore[method-assign]
    saved = service.POLL_BACKOFF, service.ServiceClient._listen
    if fixed_poll:
        service.POLL_BACKOFF = (0.5,)

        async def no_events(self: Any, job_id: str, *stream_state: Any) -> None:
            return None

        service.ServiceClient._listen = no_events  # type: ignore[method-assign]
    client = FlashHeadClient(base_url=url, shared_local_dir=str(common.scratch_dir()), async_jobs=True)
    out: list[float] = []
    try:
        await client.init_session(ref_image=common.face_png())
        for i in range(chunks):
            await client.generate(common.speech(common.SLICE, seed=i))
            out.append(time.time() - finished[-1])
    finally:
        await client.close()
        service.ServiceClient._job_result = original  # type: ignore[method-assign]
        service.POLL_BACKOFF, service.ServiceClient._listen = saved
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=30)
    args = parser.parse_args()
    with common.standin(latency=0.2) as url:
        ours = common.median_ms(asyncio.run(latencies(url, args.chunks, fixed_poll=False)))
        baseline = common.median_ms(asyncio.run(latencies(url, max(5, args.chunks // 3), fixed_poll=True)))
    figures = f"median job-finished→frames {ours:.1f} ms"
    figures += f" (fixed 0.5 s poll: {baseline:.1f} ms, ratio {ours / baseline:.2f})"
    return common.verdict(f"completion latency ({common.machine()})", figures, {"median<=30ms": ours <= 30.0})


if __name__ == "__main__":
    sys.exit(main())
