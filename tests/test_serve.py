"""``opentalking-flashhead serve`` over HTTP, on the CPU with the test double (the fake SoulX-FlashHead
checkout): start-up, readiness, sessions, the close route, max-sessions, frame counts, inline I/O.

The protocol tests shared with OmniRT and the stand-in (tests/test_client_service.py) run against
``serve`` too (conftest's ``flashhead_service``).
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from media import data_uri, speech, write_face, write_tone

import servers

pytestmark = pytest.mark.service
MODEL = "soulx-flashhead-1.3b"
SLICE_SEC = 2.0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve-media")
    write_face(root / "face.png")
    write_face(root / "other.png", (300, 400), (30, 90, 160))
    for samples in (15360, 16000, 17920, 30720):
        write_tone(root / f"{samples}.wav", samples)
    return {"root": root}


def body(media: dict[str, Path], samples: int = 17920, face: str = "face.png", **extra: object) -> dict:
    inputs = {"image": str(media["root"] / face), "audio": str(media["root"] / f"{samples}.wav")}
    return {"task": "audio2video", "model": MODEL, "inputs": inputs, **extra}


def chunk_of(session: str, chunk: int) -> dict[str, str]:
    return {"X-FlashHead-Session": session, "X-FlashHead-Chunk": str(chunk)}


def wait_ready(client: httpx.Client, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slow_pro(tmp_path_factory: pytest.TempPathFactory):
    """Pro, every slice taking SLICE_SEC (the warm-up too), one session at most."""
    service = servers.serve(
        tmp_path_factory.mktemp("serve-slow"),
        env={"FAKE_FLASHHEAD_SLICE_SEC": str(SLICE_SEC)},
        extra_args=("--max-sessions", "1"),
    ).start()
    yield httpx.Client(base_url=service.base_url, timeout=120)
    service.stop()


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory):
    service = servers.serve(tmp_path_factory.mktemp("serve-lite"), model_type="lite").start()
    client = httpx.Client(base_url=service.base_url, timeout=120)
    wait_ready(client)
    yield client, service
    service.stop()


def test_health_answers_while_loading_and_ready_only_after_warm_up(slow_pro: httpx.Client, media) -> None:
    # The warm-up slice alone takes SLICE_SEC, so right after the first /healthz the model is still loading.
    assert slow_pro.get("/healthz").json() == {"ok": True}
    loading = slow_pro.get("/readyz")
    assert loading.status_code == 503 and "loading" in loading.json()["detail"]
    (card,) = slow_pro.get("/v1/models").json()["data"]
    assert card["ready"] is False and card["resident"] is True
    early = slow_pro.post("/v1/generate", json=body(media))
    assert early.status_code == 503 and "still loading" in early.json()["detail"]
    wait_ready(slow_pro)
    (card,) = slow_pro.get("/v1/models").json()["data"]
    assert card["ready"] is True
    assert (card["model_type"], card["slice_samples"], card["frames_per_slice"]) == ("pro", 17920, 28)
    assert {"session-headers", "close-session", "inline-io"} <= set(card["extensions"])


def test_event_loop_answers_while_a_slice_runs(slow_pro: httpx.Client, media) -> None:
    wait_ready(slow_pro)
    job = slow_pro.post("/v1/generate", json=body(media, async_run=True)).json()["id"]
    while slow_pro.get(f"/v1/jobs/{job}").json()["state"] == "queued":
        time.sleep(0.05)
    started = time.monotonic()
    assert slow_pro.get("/healthz").status_code == 200
    answered = time.monotonic() - started
    # Structural: the health answer came while the slice (SLICE_SEC of compute) was still running.
    assert slow_pro.get(f"/v1/jobs/{job}").json()["state"] == "running"
    assert answered < SLICE_SEC / 2
    slow_pro.get(f"/v1/jobs/{job}/events")  # returns once the job has ended
    record = slow_pro.get(f"/v1/jobs/{job}").json()
    assert record["state"] == "succeeded" and record["result"]["outputs"][0]["num_frames"] == 28


def test_max_sessions_is_a_503_with_its_detail_and_close_frees_the_slot(slow_pro: httpx.Client, media) -> None:
    wait_ready(slow_pro)
    first = slow_pro.post("/v1/generate", json=body(media), headers=chunk_of("session-aaaaaaaaaaaa", 1))
    assert first.status_code == 200 and first.json()["outputs"][0]["num_frames"] == 28
    refused = slow_pro.post("/v1/generate", json=body(media), headers=chunk_of("session-bbbbbbbbbbbb", 1))
    assert refused.status_code == 503 and "--max-sessions 1" in refused.json()["detail"]
    job = slow_pro.post("/v1/generate", json=body(media, async_run=True), headers=chunk_of("session-bbbbbbbbbbbb", 1))
    slow_pro.get(f"/v1/jobs/{job.json()['id']}/events")
    failed = slow_pro.get(f"/v1/jobs/{job.json()['id']}").json()
    assert failed["state"] == "failed" and "--max-sessions 1" in failed["error"]
    (card,) = slow_pro.get("/v1/models").json()["data"]
    assert card["sessions"] == 1
    assert slow_pro.delete("/v1/sessions/session-aaaaaaaaaaaa").json() == {
        "session": "session-aaaaaaaaaaaa",
        "closed": True,
    }
    assert slow_pro.delete("/v1/sessions/session-aaaaaaaaaaaa").json()["closed"] is False
    assert slow_pro.get("/v1/models").json()["data"][0]["sessions"] == 0
    second = slow_pro.post("/v1/generate", json=body(media), headers=chunk_of("session-bbbbbbbbbbbb", 1))
    assert second.status_code == 200


@pytest.mark.parametrize(("samples", "frames"), [(15360, 24), (16000, 25), (17920, 28), (30720, 48)])
def test_lite_frame_counts(lite, media, samples: int, frames: int) -> None:
    client, _ = lite
    clip = client.post("/v1/generate", json=body(media, samples)).json()["outputs"][0]
    assert clip["num_frames"] == frames
    with av.open(clip["path"]) as container:
        assert sum(1 for _ in container.decode(video=0)) == frames


def test_another_model_type_is_refused(lite, media) -> None:
    client, _ = lite
    refused = client.post("/v1/generate", json=body(media, config={"model_type": "pro"}))
    assert refused.status_code == 400 and "runs model_type 'lite'" in refused.json()["detail"]


def decoded(clip: dict, where: Path) -> np.ndarray:
    where.write_bytes(base64.b64decode(clip["data_b64"]))
    with av.open(str(where)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_inline_round_trip_continues_a_session(lite, media, tmp_path: Path) -> None:
    client, service = lite
    root = media["root"]
    inline = {"image": data_uri(root / "face.png", "image/png"), "audio": data_uri(root / "15360.wav", "audio/wav")}
    request = {"task": "audio2video", "model": MODEL, "inputs": inline}
    clips = []
    for chunk in (1, 2, 2):  # the retry of chunk 2 gives chunk 2's frames again
        headers = {**chunk_of("session-inline000001", chunk), "X-FlashHead-Output": "inline"}
        answer = client.post("/v1/generate", json=request, headers=headers).json()
        (clip,) = answer["outputs"]
        assert (clip["transport"], clip["path"], clip["num_frames"]) == ("inline", None, 24)
        clips.append(decoded(clip, tmp_path / f"clip-{len(clips)}.mp4"))
    assert np.array_equal(clips[1], clips[2]) and not np.array_equal(clips[0], clips[1])
    assert client.delete("/v1/sessions/session-inline000001").json()["closed"] is True
    assert [p for p in service.output_dir.rglob("*") if p.is_file() and "inline" in str(p)] == []


def test_missing_checkpoints_fail_before_listening(tmp_path: Path) -> None:
    port = servers.free_port()
    fake = servers.FAKE_CHECKOUT
    command = [sys.executable, "-m", "opentalking_flashhead.cli", "serve", "--flashhead-repo", str(fake)]
    command += ["--ckpt-dir", str(tmp_path / "nope"), "--wav2vec-dir", str(tmp_path), "--device", "cpu"]
    done = subprocess.run([*command, "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: --ckpt-dir {tmp_path / 'nope'}: no such directory (it should hold SoulX-FlashHead's weights)"
    ]
    assert done.stdout == ""  # nothing was announced as listening


# Our client end to end against serve: the slice it advertises, session headers, inline I/O, the close route.


async def run_chunks(client, face: Path, seeds: list[int]) -> list[np.ndarray]:
    await client.init_session(ref_image=face)
    return [np.stack([f.data for f in await client.generate(speech(client.audio_chunk_samples, s))]) for s in seeds]


async def test_client_follows_the_lite_slice_and_keeps_sessions_apart(lite, media, tmp_path: Path) -> None:
    from opentalking_flashhead import FlashHeadClient

    client, service = lite
    face = media["root"] / "face.png"
    make = lambda: FlashHeadClient(base_url=service.base_url, shared_local_dir=str(tmp_path / "shared"))  # noqa: E731
    alone = make()
    frames_alone = await run_chunks(alone, face, [1, 2, 3])
    assert (alone.audio_chunk_samples, alone.slice_len, alone.inline) == (15360, 24, True)
    assert [len(f) for f in frames_alone] == [24, 24, 24]
    assert client.get("/v1/models").json()["data"][0]["sessions"] == 1
    await alone.close()  # the close route frees the session at once
    assert client.get("/v1/models").json()["data"][0]["sessions"] == 0
    first, second = make(), make()
    await first.init_session(ref_image=face)
    await second.init_session(ref_image=face)
    interleaved: dict[int, list[np.ndarray]] = {0: [], 1: []}
    for seed in (1, 2, 3):  # the same voice in two sessions, chunk by chunk in turn
        for index, other in enumerate((first, second)):
            interleaved[index].append(np.stack([f.data for f in await other.generate(speech(15360, seed))]))
    for index in (0, 1):
        assert all(np.array_equal(a, b) for a, b in zip(interleaved[index], frames_alone, strict=True))
    await first.close()
    await second.close()
    assert list((tmp_path / "shared").iterdir()) == []


async def test_chunk_samples_set_by_the_user_wins(lite, media, tmp_path: Path) -> None:
    from opentalking_flashhead import FlashHeadClient

    _, service = lite
    client = FlashHeadClient(base_url=service.base_url, shared_local_dir=str(tmp_path), chunk_samples=16000)
    await client.init_session(ref_image=media["root"] / "face.png")
    assert client.audio_chunk_samples == 16000 and len(await client.generate(speech(16000, 0))) == 25
    await client.close()


async def test_doctor_probes_with_the_lite_slice_and_reports_it(lite, tmp_path: Path) -> None:
    from opentalking_flashhead.doctor import diagnose

    _, service = lite
    checks = await diagnose(30.0, base_url=service.base_url, shared_local_dir=str(tmp_path))
    assert all(check.ok for check in checks), [check.lines() for check in checks]
    listed = next(check for check in checks if check.name == "model listed")
    assert "resident lite model, slices of 15360 samples" in listed.detail
    assert checks[-1].detail.startswith("24 frames of 24") and "sent back inline" in checks[-1].detail


@pytest.mark.parametrize(
    ("config", "env", "chunk", "fixed"),
    [
        ({}, {}, 17920, False),
        ({"model_type": "lite"}, {}, 15360, False),
        ({"model_type": "lite"}, {"CHUNK_SAMPLES": "16000"}, 16000, True),
    ],
)
def test_the_chunk_follows_the_configured_model_type(config: dict, env: dict, chunk: int, fixed: bool) -> None:
    import json

    from opentalking_flashhead.settings import Settings

    environ = {f"OPENTALKING_FLASHHEAD_{k}": v for k, v in {**env, "CONFIG_JSON": json.dumps(config)}.items()}
    settings = Settings.load(environ=environ)
    assert (settings.chunk_samples, settings.chunk_samples_fixed) == (chunk, fixed)
