"""Benchmark 7: resident workers behind one OmniRT coordinator, 1 → 2 → 3 workers, and a worker killed.

The real OmniRT server (PyPI) is the coordinator; each ``opentalking-flashhead worker`` runs the test
double (tests/fake_flashhead) with a fixed compute time c per slice (FAKE_FLASHHEAD_SLICE_SEC). Our
client pins sessions across the workers (OPENTALKING_FLASHHEAD_RESIDENT_TARGETS), two per worker, each
sending one-slice chunks back to back so every worker is always busy.

1. capacity: slices rendered per second with N workers; real-time sessions = that × the slice's
   duration (0.96 s of Lite audio). Target: capacity(N) ≥ 0.9 × N × capacity(1) for N = 2, 3.
2. recovery: two sessions on two workers, one worker SIGKILLed while a chunk of its session is in
   flight; the time from the kill to that chunk's frames in hand (the client moved the session to the
   other worker). Target: ≤ the chunk deadline + one slice (c plus the double's own drawing).

On a CPU the double also spends time drawing its frames, which the workers share the machine's cores
for; keep c well above that (the default 1.5 s) so the figures measure the cluster, not the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from opentalking_flashhead import FlashHeadClient  # noqa: E402

import common  # noqa: E402
import servers  # noqa: E402  (the tests' service launchers: the same processes the tests start)

LITE_SLICE = 15360
SLICE_AUDIO_SEC = LITE_SLICE / 16000
#: One torch thread a worker, and glibc told to keep the double's big frames in one arena (else
#: every slice page-faults them afresh, a CPU-only cost).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "4294967296"}


def client(base_url: str, shared: Path, targets: list[str], deadline: float) -> FlashHeadClient:
    return FlashHeadClient(
        base_url=base_url,
        shared_local_dir=str(shared),
        chunk_samples=LITE_SLICE,
        chunk_deadline_sec=deadline,
        on_error="raise",
        resident_targets=",".join(targets),
    )


async def capacity(base_url: str, shared: Path, targets: list[str], face: Path, seconds: float) -> float:
    """Slices per second with two sessions per target, chunks back to back, over ``seconds`` (after a warm chunk)."""
    clients = [client(base_url, shared, targets, 120.0) for _ in range(2 * len(targets))]
    for one in clients:
        await one.init_session(ref_image=face)
    audio = common.speech(LITE_SLICE)
    await asyncio.gather(*(one.generate(audio) for one in clients))  # faces prepared, sessions open
    stop = time.monotonic() + seconds
    done = [0] * len(clients)

    async def feed(index: int) -> None:
        while time.monotonic() < stop:
            await clients[index].generate(audio)
            done[index] += 1

    began = time.monotonic()
    await asyncio.gather(*(feed(i) for i in range(len(clients))))
    elapsed = time.monotonic() - began
    await asyncio.gather(*(one.close() for one in clients))
    return sum(done) / elapsed


async def recovery(
    base_url: str, shared: Path, workers: list[servers.ServiceProcess], face: Path, deadline: float
) -> float:
    """Seconds from killing a session's worker mid-chunk to that chunk's frames in hand."""
    from omnirt.engine.grpc_transport import probe_worker_health

    targets = [f"127.0.0.1:{worker.port}" for worker in workers]
    first, second = client(base_url, shared, targets, deadline), client(base_url, shared, targets, deadline)
    await first.init_session(ref_image=face)
    await second.init_session(ref_image=face)
    audio = common.speech(LITE_SLICE)
    await asyncio.gather(first.generate(audio), second.generate(audio))
    doomed = workers[targets.index(first._session.pin.target)]  # type: ignore[union-attr]
    pending = asyncio.ensure_future(first.generate(audio))
    while probe_worker_health(f"127.0.0.1:{doomed.port}", timeout_s=2.0)["inflight"] == 0:
        await asyncio.sleep(0.02)
    killed = time.monotonic()
    doomed.kill()
    frames = await pending
    took = time.monotonic() - killed
    assert len(frames) == 24
    await asyncio.gather(first.close(), second.close())
    return took


async def baseline(base_url: str, shared: Path, target: str, face: Path, chunks: int = 5) -> float:
    """One session alone on one worker: the median seconds per one-slice chunk (c, the double's drawing, the trip)."""
    one = client(base_url, shared, [target], 120.0)
    await one.init_session(ref_image=face)
    audio = common.speech(LITE_SLICE)
    await one.generate(audio)
    times = []
    for _ in range(chunks):
        began = time.monotonic()
        await one.generate(audio)
        times.append(time.monotonic() - began)
    await one.close()
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice-sec", type=float, default=1.5, help="the double's fixed compute per slice, c")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each capacity run lasts")
    parser.add_argument("--deadline", type=float, default=10.0, help="the client's chunk deadline in the recovery run")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    shared = root / "shared"
    shared.mkdir()
    face = root / "face.png"
    face.write_bytes(common.face_png())
    env = {**WORKER_ENV, "FAKE_FLASHHEAD_SLICE_SEC": str(args.slice_sec)}
    coordinator = servers.omnirt(root, extra_args=("--max-concurrency", "16"))
    workers = [servers.worker(root, env=env) for _ in range(3)]
    started: list[servers.ServiceProcess] = []
    try:
        for service in (coordinator, *workers):
            started.append(service.start(timeout=300))
        targets = [f"127.0.0.1:{worker.port}" for worker in workers]
        url = coordinator.base_url
        alone = asyncio.run(baseline(url, shared, targets[0], face))
        rates = {n: asyncio.run(capacity(url, shared, targets[:n], face, args.seconds)) for n in (1, 2, 3)}
        took = asyncio.run(recovery(url, shared, workers[:2], face, args.deadline))
    finally:
        for service in started:
            service.stop()
    scaling = {n: rates[n] / (n * rates[1]) for n in (2, 3)}
    sessions = {n: rates[n] * SLICE_AUDIO_SEC for n in rates}
    limit = args.deadline + alone
    figures = (
        f"c={args.slice_sec:g} s, one chunk alone {alone:.2f} s; "
        + ", ".join(f"{n} worker(s) {rates[n]:.2f} slices/s = {sessions[n]:.2f} real-time sessions" for n in rates)
        + f"; scaling ×{scaling[2]:.2f} (2), ×{scaling[3]:.2f} (3) of linear; recovery {took:.2f} s "
        f"(limit {limit:.2f} s = deadline {args.deadline:g} + one chunk); {common.machine()}"
    )
    checks = {"2 workers ≥ 0.9× linear": scaling[2] >= 0.9, "3 workers ≥ 0.9× linear": scaling[3] >= 0.9}
    checks["recovery ≤ deadline + one slice"] = took <= limit
    return common.verdict("cluster", figures, checks)


if __name__ == "__main__":
    sys.exit(main())
