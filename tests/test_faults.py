"""The fault matrix: every way a FlashHead service can misbehave, each against a real local server.

Policy (README, "Failure policy"): misconfigurations raise at once with the service's message;
transient failures are retried until the chunk's deadline, then covered by still frames of exactly
the chunk's frame count (at most MAX_STILL_CHUNKS in a row); nothing is ever left in shared storage.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
import traceback
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
from faultservice import FaultService

from opentalking_flashhead import FlashHeadClient, storage
from opentalking_flashhead.errors import (
    ClipUnreadable,
    DecodeError,
    FlashHeadError,
    GenerationFailed,
    RequestRejected,
    ServiceUnavailable,
)
from opentalking_flashhead.reference import still_of
from opentalking_flashhead.server.serve import running_app

import servers

pytestmark = pytest.mark.service
SLICE = 17920


def speech(samples: int = SLICE, seed: int = 0) -> np.ndarray:
    t = np.arange(samples) / 16000
    rng = np.random.default_rng(seed)
    return ((np.sin(2 * np.pi * 190 * t) + 0.1 * rng.standard_normal(samples)) * 9000).astype(np.int16)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory):
    service = FaultService(tmp_path_factory.mktemp("faulty"), hang_sec=2.5)
    with running_app(service.app) as url:
        service.base_url = url
        yield service


@pytest.fixture
def client_for(faulty: FaultService, shared_dir: Path):
    made: list[FlashHeadClient] = []

    def make(**overrides: object) -> FlashHeadClient:
        settings = {"base_url": faulty.base_url, "shared_local_dir": str(shared_dir), "chunk_deadline_sec": 0.8}
        client = FlashHeadClient(**{**settings, **overrides})
        made.append(client)
        return client

    faulty.reset()
    yield make
    faulty.reset()


def assert_clean(shared_dir: Path, service: FaultService | None = None) -> None:
    """Nothing left in shared storage, once ``service`` has finished answering (a hung request too)."""
    if service is not None:
        service.settle()
    assert list(shared_dir.iterdir()) == [], sorted(shared_dir.rglob("*"))


async def assert_clean_after_late_writes(shared_dir: Path, service: FaultService) -> None:
    """Nothing left once a request the client gave up on has written its late clip: the closed
    session watches its directories for that (storage.remove_lingering)."""
    await asyncio.to_thread(service.settle)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3 * storage.LINGER_POLL_SEC
    while list(shared_dir.iterdir()) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert_clean(shared_dir)


@pytest.mark.parametrize(
    ("fault", "async_jobs"),
    [
        ("503", True),
        ("500", False),
        ("job_failed", True),
        ("truncated", True),
        ("empty", True),
        ("not_video", True),
        ("too_long", True),
        ("hang", False),
    ],
)
async def test_transient_fault_then_success_is_retried(client_for, faulty, shared_dir, avatar_png, fault, async_jobs):
    # A request may take timeout_sec; a chunk, retries included, its deadline.
    client = client_for(async_jobs=async_jobs, timeout_sec=1.0, chunk_deadline_sec=3.0)
    await client.init_session(ref_image=avatar_png)
    faulty.script.extend([fault])
    frames = await client.generate(speech())
    assert len(frames) == 28
    assert client.stats.retries == 1 and client.stats.still_chunks == 0
    await client.close()
    await assert_clean_after_late_writes(shared_dir, faulty)


@pytest.mark.parametrize("fault", ["503", "job_failed", "truncated", "not_video", "too_long", "hang"])
async def test_persistent_transient_fault_becomes_still_frames(
    client_for, faulty, shared_dir, avatar_png, fault, caplog
) -> None:
    client = client_for()
    await client.init_session(ref_image=avatar_png)
    good = await client.generate(speech())
    faulty.script.extend([fault] * 20)
    with caplog.at_level(logging.WARNING, logger="opentalking_flashhead.client"):
        frames = await client.generate(speech(16000))
    assert len(frames) == round((SLICE + 16000) * 25 / 16000) - 28  # 25: the chunk's exact share
    assert all(f.data is good[-1].data for f in frames)  # the last good frame, held
    assert [f.timestamp_ms for f in frames] == [(28 + i) * 40.0 for i in range(len(frames))]
    assert "showing a still frame" in caplog.text
    assert client.stats.still_chunks == 1
    await client.close()
    await assert_clean_after_late_writes(shared_dir, faulty)


async def test_stills_before_any_good_frame_show_the_reference(client_for, faulty, shared_dir, avatar_png) -> None:
    client = client_for()
    await client.init_session(ref_image=avatar_png)
    faulty.script.extend(["503"] * 20)
    frames = await client.generate(speech())
    assert len(frames) == 28
    assert np.array_equal(frames[0].data, still_of(avatar_png.read_bytes(), (512, 512)))
    await client.close()
    assert_clean(shared_dir, faulty)


async def test_too_many_stills_in_a_row_raise(client_for, faulty, shared_dir, avatar_png) -> None:
    client = client_for(max_still_chunks=2, chunk_deadline_sec=0.4)
    await client.init_session(ref_image=avatar_png)
    faulty.script.extend(["503"] * 100)
    assert len(await client.generate(speech())) == 28
    assert len(await client.generate(speech())) == 28
    with pytest.raises(ServiceUnavailable, match=r"not connected.*HTTP 503"):
        await client.generate(speech())
    faulty.script.clear()
    assert len(await client.generate(speech())) == 28  # recovers, and the count starts again
    await client.close()
    assert_clean(shared_dir, faulty)


async def test_on_error_raise_turns_stills_off(client_for, faulty, shared_dir, avatar_png) -> None:
    client = client_for(on_error="raise", chunk_deadline_sec=0.4)
    await client.init_session(ref_image=avatar_png)
    faulty.script.extend(["truncated"] * 100)
    with pytest.raises(DecodeError, match="not a decodable video"):
        await client.generate(speech())
    await client.close()
    assert_clean(shared_dir, faulty)


@pytest.mark.parametrize("on_error", ["still", "raise"])
async def test_job_running_at_its_deadline_is_cancelled(
    client_for, faulty, shared_dir, avatar_png, caplog, on_error
) -> None:
    """Row "hang past the deadline" (async job): the job gets DELETE /v1/jobs/{id}, then stills or the error."""
    client = client_for(on_error=on_error, chunk_deadline_sec=0.8)
    await client.init_session(ref_image=avatar_png)
    faulty.script.extend(["stuck_job"] * 20)
    caplog.set_level(logging.WARNING, logger="opentalking_flashhead.client")
    if on_error == "raise":
        with pytest.raises(ServiceUnavailable, match=r"not connected: job \S+ still running at its deadline"):
            await client.generate(speech())
    else:
        frames = await client.generate(speech())
        assert len(frames) == 28
        assert np.array_equal(frames[-1].data, still_of(avatar_png.read_bytes(), (512, 512)))
        assert "still running at its deadline" in caplog.text and "showing a still frame" in caplog.text
    assert faulty.stuck and faulty.cancelled == faulty.stuck
    await client.close()
    assert_clean(shared_dir, faulty)


async def test_close_cancels_the_job_in_flight_on_the_service(client_for, faulty, shared_dir, avatar_png) -> None:
    """Row "closed mid-chunk": close() sends DELETE /v1/jobs/{id} for the job in flight; the chunk raises."""
    client = client_for(chunk_deadline_sec=30.0)
    await client.init_session(ref_image=avatar_png)
    faulty.script.append("stuck_job")
    pending = asyncio.ensure_future(client.generate(speech()))
    for _ in range(250):  # until the client waits on the job
        if faulty.stuck and faulty.stuck[0] in faulty.polled:
            break
        await asyncio.sleep(0.02)
    await client.close()
    with pytest.raises(FlashHeadError, match="closed while this chunk was generating"):
        await pending
    assert len(faulty.stuck) == 1 and faulty.cancelled == faulty.stuck
    assert_clean(shared_dir, faulty)


async def test_shared_dir_does_not_grow_during_a_session(client_for, faulty, shared_dir, avatar_png) -> None:
    """Row "storage hygiene": after every chunk, hiccups included, shared storage holds just the reference image."""
    hiccups = ["503", "job_failed_leaving_clip", "truncated", "hang", "too_long", "empty", "job_failed", "ok", "ok"]
    client = client_for(timeout_sec=1.0, chunk_deadline_sec=3.0)
    await client.init_session(ref_image=avatar_png)
    (session,) = shared_dir.iterdir()
    (reference,) = session.glob("reference.*")
    for i, fault in enumerate(hiccups):
        faulty.settle()  # a hung request has written its late clip by now: the next chunk must remove it
        faulty.script.append(fault)
        assert len(await client.generate(speech(seed=i))) == 28
        files = [p for p in shared_dir.rglob("*") if not p.is_dir()]
        dirs = {p.relative_to(session).as_posix() for p in session.rglob("*") if p.is_dir()}
        assert files == [reference] and dirs <= {"out"}, (fault, sorted(shared_dir.rglob("*")))
    assert client.stats.retries == 7 and client.stats.still_chunks == 0
    await client.close()
    assert_clean(shared_dir, faulty)


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ("job_failed_permanent", GenerationFailed, "repo_path not found"),
        ("outside", ClipUnreadable, "outside the output_dir"),
        ("dotdot", ClipUnreadable, "outside the output_dir"),
        ("symlink", ClipUnreadable, "outside"),
        ("own_reference", ClipUnreadable, "outside the output_dir"),
        ("wrong_size", DecodeError, "320×240, not 512×512"),
        ("foreign_url", ClipUnreadable, "origin"),
        ("oversized", ClipUnreadable, "exceeds 1 MB"),
        ("redirect", ClipUnreadable, "HTTP 302"),
    ],
)
async def test_misconfiguration_and_untrusted_clips_raise_at_once(
    client_for, faulty, shared_dir, avatar_png, fault, error, words
) -> None:
    client = client_for(max_clip_mb=1)
    await client.init_session(ref_image=avatar_png)
    faulty.script.extend([fault])
    before = faulty.requests
    with pytest.raises(error, match=words):
        await client.generate(speech())
    assert faulty.requests == before + 1  # never retried
    assert len(list(shared_dir.glob("session-*/reference.*"))) == 1  # nothing of ours was taken for a clip
    after = await client.generate(speech())  # the failed chunk's audio got no frames, so it holds no share
    assert [f.timestamp_ms for f in after] == [i * 40.0 for i in range(28)]
    await client.close()
    assert_clean(shared_dir, faulty)


async def test_bad_pcm_is_refused_before_any_request(client_for, faulty, shared_dir, avatar_png) -> None:
    client = client_for()
    await client.init_session(ref_image=avatar_png)
    before = faulty.requests
    for bad in (
        speech().astype(np.int32),
        speech().reshape(2, -1),
        np.array([np.nan], np.float32),
        np.zeros(0, np.int16),
        speech(SLICE + 1),
    ):
        with pytest.raises(ValueError):
            await client.generate(bad)
    assert faulty.requests == before
    await client.close()
    assert_clean(shared_dir, faulty)


async def test_service_killed_and_restarted_mid_session(tmp_path, shared_dir, avatar_png) -> None:
    service = servers.standin(tmp_path).start()
    client = FlashHeadClient(base_url=service.base_url, shared_local_dir=str(shared_dir), chunk_deadline_sec=1.0)
    try:
        await client.init_session(ref_image=avatar_png)
        good = await client.generate(speech())
        service.stop()
        down = await client.generate(speech())
        assert len(down) == 28 and all(f.data is good[-1].data for f in down)
        service.start()
        again = await client.generate(speech(seed=3))
        assert len(again) == 28 and again[0].data is not good[-1].data
        assert client.stats.still_chunks == 1
    finally:
        await client.close()
        service.stop()
    assert_clean(shared_dir)


@asynccontextmanager
async def killed_mid_job(kind: str, tmp_path: Path, shared_dir: Path, avatar_png: Path, deadline: float):
    """A slow service (a second per job) and a session with one good chunk; the next chunk's job is
    running when the service gets SIGKILL. Yields the service, the client, the good frames and the
    pending chunk; closes and stops both afterwards and checks nothing is left."""
    service = servers.slow(kind, tmp_path, seconds=1.0).start()
    client = FlashHeadClient(base_url=service.base_url, shared_local_dir=str(shared_dir), chunk_deadline_sec=deadline)
    try:
        await client.init_session(ref_image=avatar_png)
        good = await client.generate(speech())
        pending = asyncio.ensure_future(client.generate(speech(seed=1)))
        await asyncio.sleep(0.4)  # the job is running
        service.kill()
        yield service, client, good, pending
    finally:
        await client.close()
        service.stop()
    assert_clean(shared_dir)


@pytest.mark.parametrize("kind", ["omnirt", "standin"])
async def test_service_killed_with_a_job_in_flight(kind, tmp_path, shared_dir, avatar_png, caplog) -> None:
    """Row "killed mid-session": SIGKILL mid-job gives that chunk still frames; after a restart the session goes on."""
    caplog.set_level(logging.WARNING, logger="opentalking_flashhead.client")
    async with killed_mid_job(kind, tmp_path, shared_dir, avatar_png, deadline=4.0) as (service, client, good, pending):
        down = await pending
        assert len(down) == 28 and all(f.data is good[-1].data for f in down)
        assert re.search(r"deadline \(FlashHead service not connected: .*showing a still frame", caplog.text)
        service.start()  # same port
        again = await client.generate(speech(seed=2))
        assert len(again) == 28 and again[0].data is not good[-1].data
        assert [f.timestamp_ms for f in again] == [(56 + i) * 40.0 for i in range(28)]
        assert client.stats.still_chunks == 1


@pytest.mark.parametrize("kind", ["omnirt", "standin"])
async def test_service_restarted_with_a_job_in_flight(kind, tmp_path, shared_dir, avatar_png, caplog) -> None:
    """Row "restarted mid-session": the new service answers 404 for the old job; the chunk is sent again."""
    caplog.set_level(logging.WARNING, logger="opentalking_flashhead.client")
    async with killed_mid_job(kind, tmp_path, shared_dir, avatar_png, deadline=15.0) as (service, client, _, pending):
        await asyncio.to_thread(service.start)  # meanwhile the client finds nobody on the port
        assert len(await pending) == 28
        assert "the service no longer knows this job (restarted?)" in caplog.text
        assert client.stats.still_chunks == 0 and client.stats.retries >= 1
        assert len(await client.generate(speech(seed=2))) == 28  # the same session


async def test_service_down_before_the_session(shared_dir, avatar_png, free_port) -> None:
    client = FlashHeadClient(base_url=f"http://127.0.0.1:{free_port}", shared_local_dir=str(shared_dir))
    with pytest.raises(ServiceUnavailable, match="not connected"):
        await client.init_session(ref_image=avatar_png)
    await client.close()
    assert_clean(shared_dir)


async def test_stale_session_dirs_are_swept_on_start(tmp_path, faulty, avatar_png) -> None:
    import os

    from opentalking_flashhead import storage

    shared = tmp_path / "shared-stale"
    old, fresh = shared / "session-0ld", shared / "session-fresh"
    for directory in (old, fresh):
        directory.mkdir(parents=True)
        (directory / "chunk-000001.wav").write_bytes(b"x")
    day_and_a_bit = time.time() - 25 * 3600
    os.utime(old, (day_and_a_bit, day_and_a_bit))
    client = FlashHeadClient(base_url=faulty.base_url, shared_local_dir=str(shared))
    await client.init_session(ref_image=avatar_png)
    await client.close()
    assert sorted(p.name for p in shared.iterdir()) == ["session-fresh"]
    storage._swept.discard(shared)


async def test_api_key_never_appears_in_errors_or_logs(
    flashhead_service_with_key, shared_dir, avatar_png, caplog
) -> None:
    """Row "wrong/missing API key": no key, wrong or right, in any log record (DEBUG, httpx too), error or repr."""
    service, wrong = flashhead_service_with_key, "sekrit-wrong-key-42"
    for logger in (None, "httpx", "httpcore", "opentalking_flashhead"):
        caplog.set_level(logging.DEBUG, logger=logger)
    rejected = FlashHeadClient(base_url=service.base_url, shared_local_dir=str(shared_dir), api_key=wrong)
    await rejected.init_session(ref_image=avatar_png)
    with pytest.raises(RequestRejected, match="HTTP 401") as err:
        await rejected.generate(speech())
    keyed = FlashHeadClient(base_url=service.base_url, shared_local_dir=str(shared_dir), api_key=service.api_key)
    await keyed.init_session(ref_image=avatar_png)
    assert len(await keyed.generate(speech())) == 28
    texts = ["".join(traceback.format_exception(err.value)), caplog.text]
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(c) for c in (rejected, rejected.settings, keyed, keyed.settings)]
    await rejected.close()
    await keyed.close()
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # DEBUG records really were captured
    for key in (wrong, service.api_key):
        assert not [text for text in texts if key in text], key
    assert_clean(shared_dir)


async def test_load_eight_sessions_with_flaky_service(tmp_path, avatar_png, capsys) -> None:
    """Load row: 8 concurrent sessions x 100 chunks, 10 % of requests failing transiently at random."""
    sessions, chunks = 8, 100
    service = servers.standin(tmp_path, extra_args=("--fail-rate", "0.1", "--capacity", "8")).start()
    shared = tmp_path / "shared-load"
    latencies: list[float] = []
    clients = [
        FlashHeadClient(base_url=service.base_url, shared_local_dir=str(shared), chunk_deadline_sec=20)
        for _ in range(sessions)
    ]

    async def session(client: FlashHeadClient) -> None:
        await client.init_session(ref_image=avatar_png)
        total = 0
        for i in range(chunks):
            pcm = speech(16000, seed=i)  # 25 frames a chunk: the rule, not the slice, decides
            started = time.perf_counter()
            frames = await client.generate(pcm)
            latencies.append(time.perf_counter() - started)
            total += len(frames)
            assert len(frames) == 25 and total == round((i + 1) * 16000 * 25 / 16000)
        await client.close()

    try:
        await asyncio.gather(*(session(client) for client in clients))
    finally:
        service.stop()
    requests = sum(c.stats.requests for c in clients)
    retries = sum(c.stats.retries for c in clients)
    stills = sum(c.stats.still_chunks for c in clients)
    q = statistics.quantiles(latencies, n=20)
    report = (
        f"load: {sessions} sessions x {chunks} chunks, requests {requests}, retries {retries}, "
        f"still chunks {stills}, chunk latency p50 {statistics.median(latencies) * 1000:.0f} ms "
        f"p95 {q[18] * 1000:.0f} ms"
    )
    with capsys.disabled():  # shown in pytest's normal output, passing or not
        print(f"\n{report}")
    assert re.fullmatch(
        r"load: 8 sessions x 100 chunks, requests \d+, retries \d+, still chunks \d+, "
        r"chunk latency p50 \d+ ms p95 \d+ ms",
        report,
    )
    assert retries > 0 and requests == sessions * chunks + retries
    assert list(shared.iterdir()) == []
