"""Two OmniRT fronts behind nginx (Debian's package) sharing one Redis job store, one resident worker
behind both: the front serving a session is killed while a chunk is in flight there; the session goes
on through the other front, its stream unbroken (the worker keeps it, and the retried chunk is not
rendered twice), with no resubmission storm (POSTs per chunk ≤ 2).

Requests are synchronous (``ASYNC=0``): a sync request dies with its front and is retried at once,
whereas OmniRT 0.1.0 leaves an async job of a dead front (and, with its Redis store, now and then a
job polled while it finishes) "running" for good, which only a stall detector gets past.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from opentalking_flashhead import FlashHeadClient

import hostkit
import servers

pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="needs Debian's nginx (.ci/run installs it)"),
]
CHUNK = 16000  # 25 frames a chunk, two Lite slices
#: Each slice of the double takes this long, so a chunk is still in flight when its front is killed.
SLICE_SEC = 0.75


class Fronts:
    def __init__(
        self, nginx: servers.ServiceProcess, fronts: list[servers.ServiceProcess], worker: servers.ServiceProcess
    ) -> None:
        self.nginx = nginx
        self.fronts = fronts
        self.worker = worker
        self.target = f"127.0.0.1:{worker.port}"

    def log(self) -> list[list[str]]:
        """nginx's access log: method, path, status, the front(s) it went to."""
        lines = (self.nginx.output_dir / "nginx-access.log").read_text().splitlines()
        return [line.split(" ", 3) for line in lines]

    def inflight(self) -> int:
        from omnirt.engine.grpc_transport import probe_worker_health

        return int(probe_worker_health(self.target, timeout_s=2.0)["inflight"])


@pytest.fixture
def fronts(tmp_path: Path) -> Iterator[Fronts]:
    redis = hostkit.redis_server(tmp_path)
    worker = servers.worker(tmp_path, env={"FAKE_FLASHHEAD_SLICE_SEC": str(SLICE_SEC)})
    flags = ("--redis-url", f"redis://127.0.0.1:{redis.port}/0", "--max-concurrency", "8")
    coordinators = [servers.omnirt(tmp_path, extra_args=flags, name=f"front-{n}") for n in "ab"]
    proxy = servers.nginx(tmp_path, coordinators, standby=True)  # front-a serves, front-b stands by
    started: list[servers.ServiceProcess] = []
    try:
        for service in (redis, worker, *coordinators, proxy):
            started.append(service.start(timeout=180))
        yield Fronts(proxy, coordinators, worker)
    finally:
        for service in reversed(started):
            service.stop()


def voice(chunk: int) -> np.ndarray:
    t = np.arange(CHUNK) / 16000
    return (np.sin(2 * np.pi * (170 + 17 * chunk) * t) * 9000).astype(np.int16)


def client_for(fronts: Fronts, shared: Path) -> FlashHeadClient:
    return FlashHeadClient(
        base_url=fronts.nginx.base_url,
        shared_local_dir=str(shared),
        chunk_samples=CHUNK,
        chunk_deadline_sec=60,
        on_error="raise",
        async_jobs=False,
        resident_targets=fronts.target,
    )


async def test_a_front_killed_mid_chunk_the_session_continues_through_the_other(
    fronts: Fronts, tmp_path: Path, avatar_png: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    client = client_for(fronts, shared)
    await client.init_session(ref_image=avatar_png)
    frames = [await client.generate(voice(chunk)) for chunk in (1, 2)]
    pending = asyncio.ensure_future(client.generate(voice(3)))
    while await asyncio.to_thread(fronts.inflight) == 0:  # chunk 3 is on its way through front-a
        assert not pending.done()
        await asyncio.sleep(0.05)
    fronts.fronts[0].kill()
    frames.append(await pending)
    frames.append(await client.generate(voice(4)))
    await client.close()

    assert [len(chunk) for chunk in frames] == [25] * 4
    assert [f.timestamp_ms for chunk in frames for f in chunk] == [i * 40.0 for i in range(100)]
    assert client.stats.still_chunks == 0 and client.stats.retries >= 1
    doomed, survivor = (f"127.0.0.1:{front.port}" for front in fronts.fronts)
    posts = [entry for entry in fronts.log() if entry[:2] == ["POST", "/v1/generate"]]
    # One POST a chunk, and one more for chunk 3: its front died under it (502), the retry went to the other.
    assert [entry[2] for entry in posts] == ["200", "200", "502", "200", "200"], posts
    assert [entry[3] for entry in posts[:3]] == [doomed] * 3 and all(e[3].endswith(survivor) for e in posts[3:])

    # The stream went on unbroken across the fronts: the worker kept it, and chunk 3, asked again
    # through front-b, came out as it was rendered for front-a: the frames of the session alone.
    again = client_for(fronts, shared)
    await again.init_session(ref_image=avatar_png)
    reference = [await again.generate(voice(chunk)) for chunk in (1, 2, 3, 4)]
    await again.close()
    for mine, theirs in zip(frames, reference, strict=True):
        assert all(np.array_equal(a.data, b.data) for a, b in zip(mine, theirs, strict=True))
    assert list(shared.iterdir()) == []
