"""``opentalking-flashhead worker`` behind the real OmniRT server (PyPI) as the coordinator, on loopback.

Two worker processes run the test double (the fake SoulX-FlashHead checkout) on the CPU; requests
reach them through OmniRT's ``config.resident_target`` and gRPC, as async jobs with their events.
The double's frames encode its stream state, so a session continued across chunks gives exactly the
frames of the same session rendered alone, and a lost or leaked state shows in the pixels.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from opentalking_flashhead import FlashHeadClient

import servers

pytestmark = pytest.mark.service
MODEL = "soulx-flashhead-1.3b"
#: Chunk lengths in samples (Lite's slice is 15,360): whole, over and under a slice, so the frame
#: counts (24, 25, 12, 24, 19) show the clip cut to the audio.
CHUNKS = (15360, 16000, 8000, 15360, 12000)
SESSIONS = 4
CLIENT_CHUNKS = (16000, 12000, 16000)


class Cluster:
    def __init__(self, coordinator: servers.ServiceProcess, workers: list[servers.ServiceProcess], root: Path):
        self.coordinator = coordinator
        self.workers = workers
        self.root = root

    def target(self, index: int) -> str:
        return f"127.0.0.1:{self.workers[index].port}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    coordinator = servers.omnirt(root, extra_args=("--max-concurrency", "8"))
    workers = [servers.worker(root), servers.worker(root)]
    started: list[servers.ServiceProcess] = []
    try:
        for service in (coordinator, *workers):
            started.append(service.start(timeout=180))
        yield Cluster(coordinator, workers, root)
    finally:
        for service in started:
            service.stop()
    for service in workers:  # SIGTERM ends a worker cleanly (stop() would have had to SIGKILL it)
        assert service.process is not None and service.process.returncode != -signal.SIGKILL, service.log_tail()


@pytest.fixture(scope="module")
def media(cluster: Cluster) -> Path:
    """A face and a distinct voice per session, on storage the coordinator and the workers share."""
    shared = cluster.root / "shared"
    shared.mkdir()
    for session in range(SESSIONS):
        Image.new("RGB", (400, 300), (60 + 40 * session, 90, 160 - 30 * session)).save(shared / f"face-{session}.png")
        for chunk, samples in enumerate(CHUNKS, start=1):
            t = np.arange(samples) / 16000
            tone = np.sin(2 * np.pi * (150 + 37 * session + 11 * chunk) * t) * 9000
            sf.write(shared / f"voice-{session}-{chunk}.wav", tone.astype(np.int16), 16000, subtype="PCM_16")
    return shared


def request(media: Path, session: int, chunk: int, output_dir: Path, **config: Any) -> dict[str, Any]:
    inputs = {"image": str(media / f"face-{session}.png"), "audio": str(media / f"voice-{session}-{chunk}.wav")}
    config = {"output_dir": str(output_dir), **config}
    return {"task": "audio2video", "model": MODEL, "inputs": inputs, "config": config}


async def run_job(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """Submit ``body`` as an async job and poll it to its end; the finished job record."""
    job = (await http.post("/v1/generate", json={**body, "async_run": True})).raise_for_status().json()
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        await asyncio.sleep(0.1)
        job = (await http.get(f"/v1/jobs/{job['id']}")).raise_for_status().json()
    return job


def frames_of(job: dict[str, Any]) -> np.ndarray:
    """The decoded frames of a finished job's clip (then removed: nothing is left on shared storage)."""
    assert job["state"] == "succeeded", job.get("error")
    (clip,) = job["result"]["outputs"]
    path = Path(clip["path"])
    with av.open(str(path)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    path.unlink()
    assert clip["num_frames"] == len(frames)
    return frames


async def stream(
    http: httpx.AsyncClient, media: Path, session: int, name: str, target: str
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """One session's chunks in order, each pinned to ``target``: (frames per chunk, the jobs)."""
    frames, jobs = [], []
    for chunk in range(1, len(CHUNKS) + 1):
        output_dir = media / "out" / name / f"{chunk:06d}"
        job = await run_job(http, request(media, session, chunk, output_dir, resident_target=target))
        frames.append(frames_of(job))
        jobs.append(job)
    return frames, jobs


def expected_frames(samples: int) -> int:
    return max(1, round(samples * 25 / 16000))


async def test_four_sessions_spread_over_two_workers_continue_each_alone(cluster: Cluster, media: Path) -> None:
    targets = [cluster.target(session % 2) for session in range(SESSIONS)]
    async with httpx.AsyncClient(base_url=cluster.coordinator.base_url, timeout=120) as http:
        together = await asyncio.gather(
            *(stream(http, media, s, f"session-spread{s:07d}", targets[s]) for s in range(SESSIONS))
        )
        # The same sessions again, one at a time, each on the other worker: the reference.
        alone = [
            (await stream(http, media, s, f"session-alone{s:08d}", targets[1 - s % 2]))[0] for s in range(SESSIONS)
        ]
        stateless = request(media, 0, 2, media / "out" / "stateless", resident_target=targets[0])
        fresh = frames_of(await run_job(http, stateless))

    for session, (frames, jobs) in enumerate(together):
        assert [len(f) for f in frames] == [expected_frames(n) for n in CHUNKS]
        resolved = [job["result"]["metadata"]["config_resolved"] for job in jobs]
        # Every chunk of a session reached its own worker, continuing its stream there.
        assert {r["worker_id"] for r in resolved} == {f"flashhead-lite-{targets[session]}"}
        assert [(r["session"], r["chunk"]) for r in resolved] == [(True, c) for c in range(1, len(CHUNKS) + 1)]
        for job in jobs:
            events = [event["event"] for event in job["events"]]
            assert events[:2] == ["job_enqueued", "job_started"] and "stage_end" in events, events
            assert job["execution_mode"] == "persistent_worker"
        for chunk, (mine, reference) in enumerate(zip(frames, alone[session], strict=True), start=1):
            assert np.array_equal(mine, reference), f"session {session} chunk {chunk} differs from the session alone"
    # Not vacuous: the streams differ from each other, and a chunk continued differs from a fresh start.
    assert not np.array_equal(together[0][0][0], together[1][0][0])
    assert not np.array_equal(together[0][0][1], fresh)
    assert [p for p in (media / "out").rglob("*") if p.is_file()] == []


async def test_our_client_with_one_target_in_config_json(cluster: Cluster, tmp_path: Path, avatar_png: Path) -> None:
    """CONFIG_JSON's single ``resident_target`` keeps working: exact frame counts and timestamps,
    continuity on the worker (the client's ``out`` layout is read as its session), nothing left behind."""
    shared = tmp_path / "shared"
    shared.mkdir()
    client = FlashHeadClient(
        base_url=cluster.coordinator.base_url,
        shared_local_dir=str(shared),
        chunk_samples=16000,
        config_json={"resident_target": cluster.target(0)},
    )
    await client.init_session(ref_image=avatar_png)
    stamps, clips = [], []
    for samples in CLIENT_CHUNKS:
        tone = np.sin(2 * np.pi * 220 * np.arange(samples) / 16000) * 9000
        frames = await client.generate(tone.astype(np.int16))
        assert len(frames) == expected_frames(samples)
        stamps += [frame.timestamp_ms for frame in frames]
        clips.append(np.stack([frame.data for frame in frames]))
    await client.close()
    # The same audio as chunk 1 gives other frames as chunk 3: the stream went on (stateless would repeat).
    assert not np.array_equal(clips[0], clips[2])
    assert stamps == [i * 40.0 for i in range(sum(expected_frames(n) for n in CLIENT_CHUNKS))]
    assert list(shared.iterdir()) == []


async def test_another_model_type_fails_the_job_saying_why(cluster: Cluster, media: Path) -> None:
    async with httpx.AsyncClient(base_url=cluster.coordinator.base_url, timeout=60) as http:
        body = request(media, 0, 1, media / "out" / "pro", resident_target=cluster.target(0), model_type="pro")
        job = await run_job(http, body)
    assert job["state"] == "failed" and "this worker runs model_type 'lite', not 'pro'" in job["error"], job["error"]


def test_clips_come_back_inline_over_omnirts_own_grpc_client(cluster: Cluster, media: Path) -> None:
    """OmniRT's GrpcWorkerClient straight to a worker: the clip inline, and a path transport refused."""
    from omnirt.core.types import GenerateRequest
    from omnirt.engine.grpc_transport import GrpcWorkerClient

    client = GrpcWorkerClient(cluster.target(1), timeout_s=60)
    try:
        body = request(media, 1, 3, media / "out" / "direct")
        result = client.run_sync(GenerateRequest.from_dict({**body, "config": {**body["config"], "seed": 7}}))
        (clip,) = result.outputs
        assert (clip.transport, clip.num_frames, clip.path) == ("inline_bytes", 12, Path(clip.path).name)
        assert clip.path.startswith(f"{MODEL}-7-") and len(clip.data_b64 or "") > 100
        refused = {**body, "config": {**body["config"], "artifact_transport": "path"}}
        with pytest.raises(Exception, match="this worker returns clips inline only"):
            client.run_sync(GenerateRequest.from_dict(refused))
    finally:
        client.close()
    assert not (media / "out" / "direct").exists()  # the worker wrote nothing there


def test_missing_checkpoints_fail_before_listening(tmp_path: Path) -> None:
    port = servers.free_port()
    fake = servers.FAKE_CHECKOUT
    command = [sys.executable, "-m", "opentalking_flashhead.cli", "worker", "--listen", f"127.0.0.1:{port}"]
    command += ["--flashhead-repo", str(fake), "--ckpt-dir", str(tmp_path / "nope"), "--wav2vec-dir", str(tmp_path)]
    done = subprocess.run([*command, "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --ckpt-dir {tmp_path / 'nope'}: no such directory (it should hold SoulX-FlashHead's weights)"
    ]
    assert done.stdout == ""  # nothing was announced as listening


async def test_doctor_probes_each_resident_target_through_the_service(cluster: Cluster, tmp_path: Path) -> None:
    from opentalking_flashhead.doctor import diagnose

    dead = f"127.0.0.1:{servers.free_port()}"
    targets = [cluster.target(0), cluster.target(1), dead]
    checks = await diagnose(
        timeout=5,
        base_url=cluster.coordinator.base_url,
        shared_local_dir=str(tmp_path),
        resident_targets=",".join(targets),
    )
    by_name = {check.name: check for check in checks}
    assert all(by_name[f"resident target {t}"].ok for t in targets[:2]), [c.lines() for c in checks]
    failed = by_name[f"resident target {dead}"]
    assert not failed.ok and dead in failed.detail
    assert f"worker --listen {dead}" in failed.fix and "OPENTALKING_FLASHHEAD_RESIDENT_TARGETS" in failed.fix
    assert "remote workers" not in by_name  # this OmniRT delegates to none
    assert list(tmp_path.iterdir()) == []


async def test_doctor_warns_of_remote_workers_with_async_jobs(cluster: Cluster, tmp_path: Path) -> None:
    from opentalking_flashhead.doctor import diagnose

    spec = f"flashhead={cluster.target(0)}@{MODEL}"
    front = servers.omnirt(tmp_path, extra_args=("--remote-worker", spec), name="delegating")
    shared = tmp_path / "shared"
    shared.mkdir()
    front.start(timeout=120)
    try:
        checks = await diagnose(timeout=30, base_url=front.base_url, shared_local_dir=str(shared))
        sync = await diagnose(timeout=30, base_url=front.base_url, shared_local_dir=str(shared), async_jobs=False)
    finally:
        front.stop()
    warnings = [check for check in checks if check.name == "remote workers"]
    assert len(warnings) == 1, [check.lines() for check in checks]
    warning = warnings[0]
    assert (
        warning.warning and warning.ok and "async jobs run on the coordinator, not the remote workers" in warning.detail
    )
    assert "OPENTALKING_FLASHHEAD_ASYNC=0" in warning.fix and warning.lines()[0].startswith("! remote workers")
    assert "remote workers" not in {check.name for check in sync}
