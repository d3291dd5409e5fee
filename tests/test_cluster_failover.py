"""Sessions pinned across resident workers (``OPENTALKING_FLASHHEAD_RESIDENT_TARGETS``) and a worker
killed mid-session: the real OmniRT coordinator, two ``worker`` processes with the test double, our client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from opentalking_flashhead import FlashHeadClient

import servers

pytestmark = pytest.mark.service
CHUNK = 16000  # 25 frames a chunk; one Lite slice (15,360) and a bit, so two slices each
#: Each slice of the double takes this long, so a chunk is still in flight when its worker is killed.
SLICE_SEC = 0.75


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[servers.ServiceProcess, list[servers.ServiceProcess]]]:
    coordinator = servers.omnirt(tmp_path, extra_args=("--max-concurrency", "8"))
    workers = [servers.worker(tmp_path, env={"FAKE_FLASHHEAD_SLICE_SEC": str(SLICE_SEC)}) for _ in range(2)]
    started: list[servers.ServiceProcess] = []
    try:
        for service in (coordinator, *workers):
            started.append(service.start(timeout=180))
        yield coordinator, workers
    finally:
        for service in started:
            service.stop()


def voice(chunk: int) -> np.ndarray:
    t = np.arange(CHUNK) / 16000
    return (np.sin(2 * np.pi * (180 + 13 * chunk) * t) * 9000).astype(np.int16)


def client_for(coordinator: servers.ServiceProcess, shared: Path, targets: list[str]) -> FlashHeadClient:
    """Our client pinned across ``targets``; a chunk not rendered by its deadline raises (no still frames)."""
    return FlashHeadClient(
        base_url=coordinator.base_url,
        shared_local_dir=str(shared),
        chunk_samples=CHUNK,
        chunk_deadline_sec=30,
        on_error="raise",
        resident_targets=",".join(targets),
    )


def inflight(worker: servers.ServiceProcess) -> int:
    from omnirt.engine.grpc_transport import probe_worker_health

    return int(probe_worker_health(f"127.0.0.1:{worker.port}", timeout_s=2.0)["inflight"])


async def test_a_killed_worker_moves_its_session_to_the_other(
    cluster, tmp_path: Path, avatar_png: Path, caplog: pytest.LogCaptureFixture
) -> None:
    coordinator, workers = cluster
    targets = [f"127.0.0.1:{worker.port}" for worker in workers]
    shared = tmp_path / "shared"
    shared.mkdir()
    first, second = client_for(coordinator, shared, targets), client_for(coordinator, shared, targets)
    await first.init_session(ref_image=avatar_png)
    await second.init_session(ref_image=avatar_png)
    pins = [client._session.pin.target for client in (first, second)]  # type: ignore[union-attr]
    assert sorted(pins) == sorted(targets)  # spread evenly: one session on each worker
    doomed = workers[targets.index(pins[0])]

    frames = [await first.generate(voice(chunk)) for chunk in (1, 2)]
    await second.generate(voice(1))
    caplog.set_level(logging.WARNING, logger="opentalking_flashhead")
    pending = asyncio.ensure_future(first.generate(voice(3)))
    while await asyncio.to_thread(inflight, doomed) == 0:  # chunk 3 is being rendered there now
        assert not pending.done()
        await asyncio.sleep(0.05)
    doomed.kill()
    frames.append(await pending)
    frames.append(await first.generate(voice(4)))

    assert [len(chunk) for chunk in frames] == [25, 25, 25, 25]
    assert [f.timestamp_ms for chunk in frames for f in chunk] == [i * 40.0 for i in range(100)]
    assert first._session.pin.target == pins[1]  # type: ignore[union-attr]
    assert first.stats.still_chunks == 0 and first.stats.retries >= 1
    moved = [r.getMessage() for r in caplog.records if f"{pins[0]} failed" in r.getMessage()]
    assert any(f"moves to {pins[1]}" in message for message in moved), moved

    # Continuity restarted from the face on the other worker: chunk 3 is what a fresh session gives
    # for that audio, and chunk 4 continues from there.
    fresh = client_for(coordinator, shared, [pins[1]])
    await fresh.init_session(ref_image=avatar_png)
    again = [await fresh.generate(voice(chunk)) for chunk in (3, 4)]
    for mine, theirs in zip(frames[2:], again, strict=True):
        assert all(np.array_equal(a.data, b.data) for a, b in zip(mine, theirs, strict=True))
    assert not all(np.array_equal(a.data, b.data) for a, b in zip(frames[1], frames[2], strict=True))
    await asyncio.gather(first.close(), second.close(), fresh.close())
    assert list(shared.iterdir()) == []


def test_the_pool_spreads_moves_and_skips_a_failing_target() -> None:
    from opentalking_flashhead.errors import GenerationFailed, ServiceUnavailable
    from opentalking_flashhead.targets import SKIP_SEC, TargetPool

    now = [0.0]
    pool = TargetPool(("a:1", "b:1", "c:1"), clock=lambda: now[0])
    pins = [pool.pin() for _ in range(4)]
    assert [pin.target for pin in pins] == ["a:1", "b:1", "c:1", "a:1"]
    pins[1].failed(GenerationFailed("bad audio file"))  # not the target's fault: the pin stays
    assert pins[1].target == "b:1"
    pins[0].failed(GenerationFailed("failed to connect to all addresses; ipv4:a:1: Connection refused"))
    assert pins[0].target in ("b:1", "c:1") and pool.sessions()["a:1"] == 1
    pins[3].failed(ServiceUnavailable("job still running at its deadline"))  # a stall moves it too
    assert pins[3].target != "a:1" and pool.sessions()["a:1"] == 0
    # a:1 failed twice in a row: new sessions skip it for a while, although it has none.
    assert pool.pin().target != "a:1"
    now[0] += SKIP_SEC + 1
    assert pool.pin().target == "a:1"
    for pin in pins:
        pin.release()
    single = TargetPool(("only:1",))
    lone = single.pin()
    lone.failed(ServiceUnavailable("no answer"))
    assert lone.target == "only:1"  # nowhere else to go: it stays and retries


def test_resident_targets_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentalking_flashhead.errors import ConfigError
    from opentalking_flashhead.settings import Settings

    monkeypatch.setenv("OPENTALKING_FLASHHEAD_RESIDENT_TARGETS", "gpu1:50061, gpu2:50061,gpu1:50061")
    assert Settings.load().resident_targets == ("gpu1:50061", "gpu2:50061")
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_RESIDENT_TARGETS", "gpu1")
    with pytest.raises(ConfigError, match=r"OPENTALKING_FLASHHEAD_RESIDENT_TARGETS: 'gpu1' is not host:port"):
        Settings.load()
