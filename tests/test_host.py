"""The real OpenTalking 0.1.0 host, unmodified, with this package installed from its wheel.

The host runs from ``OPENTALKING_HOST_VENV`` (built by ``.ci/host-env.sh``; ``.ci/run`` sets it):
OmniRT serves FlashHead, ``opentalking-unified`` serves the WebUI API, aiortc plays the browser.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import soundfile as sf

import hostkit
import servers

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(
        hostkit.host_venv() is None, reason="set OPENTALKING_HOST_VENV to an env built by .ci/host-env.sh"
    ),
]

SESSION = {"avatar_id": hostkit.AVATAR_ID, "model": "flashhead", "stt_provider": "sensevoice", "tts_provider": "edge"}


def flashhead_status(host: servers.ServiceProcess) -> dict:
    body = httpx.get(f"{host.base_url}/models", timeout=10).json()
    return next(s for s in body["statuses"] if s["id"] == "flashhead")


def wav_bytes(samples: int) -> bytes:
    t = np.arange(samples) / 16000
    voice = np.sin(2 * np.pi * 200 * t) * (0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 3 * t)))
    out = io.BytesIO()
    sf.write(out, (voice * 12000).astype(np.int16), 16000, format="WAV", subtype="PCM_16")
    return out.getvalue()


async def speak_and_watch(host: servers.ServiceProcess, session_id: str, chunks: int) -> list[tuple]:
    """Be the browser while ``chunks`` slices of speech are uploaded; return what it received."""
    watching = asyncio.ensure_future(hostkit.receive_video(host.base_url, session_id, until_frames=10_000, timeout=10))
    await asyncio.sleep(1.5)
    async with httpx.AsyncClient(timeout=30) as http:
        spoken = await http.post(
            f"{host.base_url}/sessions/{session_id}/speak_flashtalk_audio",
            files={"file": ("speech.wav", wav_bytes(chunks * 17920), "audio/wav")},
        )
    assert spoken.status_code == 200, spoken.text
    return await watching


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """OmniRT + opentalking-unified sharing one storage dir, as a one-host deployment has it."""
    root = tmp_path_factory.mktemp("host")
    shared = root / "shared"
    shared.mkdir()
    omnirt = servers.omnirt(root).start()
    env = {
        "OPENTALKING_FLASHHEAD_BASE_URL": omnirt.base_url,
        "OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR": str(shared),
        "FLASHTALK_TTS_TRAILING_SILENCE_MS": "0",
    }
    venv = hostkit.host_venv()
    assert venv is not None
    host = hostkit.opentalking(venv, hostkit.make_workdir(root / "work"), env).start(timeout=120)
    try:
        yield omnirt, host, shared
    finally:
        host.stop()
        omnirt.stop()


def test_models_lists_flashhead_connected_by_the_plugin(stack) -> None:
    _, host, _ = stack
    assert flashhead_status(host) == {
        "id": "flashhead",
        "backend": "direct_ws",
        "connected": True,
        "reason": "flashhead_ready",
    }


def test_session_speaks_through_flashhead_to_a_webrtc_peer(stack) -> None:
    _, host, shared = stack
    created = httpx.post(f"{host.base_url}/sessions", json=SESSION, timeout=60)
    assert created.status_code == 200, created.text
    session_id = created.json()["session_id"]
    chunks = 3
    frames = asyncio.run(speak_and_watch(host, session_id, chunks))
    assert {(w, h) for w, h, _ in frames} == {(512, 512)}
    assert hostkit.count_generated([progress for _, _, progress in frames]) == chunks * 28
    assert httpx.delete(f"{host.base_url}/sessions/{session_id}", timeout=30).status_code == 200
    assert wait_until(lambda: not any(shared.iterdir())), sorted(shared.rglob("*"))


def test_video_creation_job_renders_through_flashhead(stack) -> None:
    _, host, shared = stack
    response = httpx.post(
        f"{host.base_url}/video-creation/jobs",
        data={"model": "flashhead", "avatar_id": hostkit.AVATAR_ID, "audio_source": "upload"},
        files={"audio_file": ("speech.wav", wav_bytes(2 * 17920), "audio/wav")},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    export = response.json()["export_video"]
    with av.open(export["path"]) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 2 * 28
    assert all(hostkit.clip_progress(frame) is not None for frame in frames)  # drawn by the fake model
    assert wait_until(lambda: not any(shared.iterdir())), sorted(shared.rglob("*"))


def test_models_reports_unreachable_once_the_service_stops(tmp_path: Path) -> None:
    omnirt = servers.omnirt(tmp_path).start()
    venv = hostkit.host_venv()
    assert venv is not None
    env = {"OPENTALKING_FLASHHEAD_BASE_URL": omnirt.base_url, "OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR": str(tmp_path)}
    host = hostkit.opentalking(venv, hostkit.make_workdir(tmp_path / "work"), env).start(timeout=120)
    try:
        assert flashhead_status(host)["connected"] is True
        omnirt.stop()
        assert wait_until(lambda: flashhead_status(host)["reason"] == "unreachable", timeout=15)
        assert flashhead_status(host)["connected"] is False
        refused = httpx.post(f"{host.base_url}/sessions", json=SESSION, timeout=30)
        assert refused.status_code == 400 and "flashhead" in refused.text
    finally:
        host.stop()
        omnirt.stop()


def test_disabled_plugin_leaves_the_host_stock(stack, tmp_path: Path) -> None:
    omnirt, _, _ = stack
    venv = hostkit.host_venv()
    assert venv is not None
    env = {"OPENTALKING_FLASHHEAD_BASE_URL": omnirt.base_url, "OPENTALKING_DISABLED_PLUGINS": "flashhead"}
    host = hostkit.opentalking(venv, hostkit.make_workdir(tmp_path / "work"), env).start(timeout=120)
    try:
        # Stock 0.1.0: flashhead's direct_ws backend has no ws URL, so it is not configured.
        assert flashhead_status(host) == {
            "id": "flashhead",
            "backend": "direct_ws",
            "connected": False,
            "reason": "not_configured",
        }
        assert httpx.post(f"{host.base_url}/sessions", json=SESSION, timeout=30).status_code == 400
    finally:
        host.stop()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="the split deployment needs redis-server")
def test_split_api_and_worker_processes(tmp_path: Path) -> None:
    """opentalking-api + opentalking-worker over Redis: the plugin loads in both processes."""
    venv = hostkit.host_venv()
    assert venv is not None
    shared = tmp_path / "shared"
    shared.mkdir()
    omnirt = servers.omnirt(tmp_path).start()
    redis = hostkit.redis_server(tmp_path).start()
    worker_port = servers.free_port()
    env = {
        "OPENTALKING_FLASHHEAD_BASE_URL": omnirt.base_url,
        "OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR": str(shared),
        "OPENTALKING_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
        "OPENTALKING_WORKER_URL": f"http://127.0.0.1:{worker_port}",
        "FLASHTALK_TTS_TRAILING_SILENCE_MS": "0",
    }
    workdir = hostkit.make_workdir(tmp_path / "work")
    api = hostkit.opentalking(venv, workdir, env, command="opentalking-api")
    worker = hostkit.worker(venv, workdir, api.env, worker_port)
    try:
        worker.start(timeout=120)
        api.start(timeout=120)
        assert flashhead_status(api)["reason"] == "flashhead_ready"
        created = httpx.post(f"{api.base_url}/sessions", json=SESSION, timeout=60)
        assert created.status_code == 200, created.text
        frames = asyncio.run(speak_and_watch(api, created.json()["session_id"], chunks=2))
        assert hostkit.count_generated([progress for _, _, progress in frames]) == 2 * 28  # drawn via our client
        httpx.delete(f"{api.base_url}/sessions/{created.json()['session_id']}", timeout=30)
        assert wait_until(lambda: not any(shared.iterdir())), sorted(shared.rglob("*"))
    finally:
        api.stop()
        worker.stop()
        redis.stop()
        omnirt.stop()


def test_seams_are_adjusted_once_and_only_for_flashhead() -> None:
    """Inside the host's interpreter: the .pth has wrapped the seams; applying again changes nothing."""
    venv = hostkit.host_venv()
    assert venv is not None
    code = """
import json
import opentalking.providers.synthesis.availability as availability
import opentalking.providers.synthesis.flashhead as flashhead
import apps.api.routes.models as route
from opentalking_flashhead.host.opentalking import apply
from opentalking_flashhead.plugin import create_client

before = (availability.resolve_model_statuses, flashhead.FlashHeadWSClient)
apply()
apply()
print(json.dumps({
    "stable": (availability.resolve_model_statuses, flashhead.FlashHeadWSClient) == before,
    "client_is_ours": flashhead.FlashHeadWSClient is create_client,
    "route_shares": route.resolve_model_statuses is availability.resolve_model_statuses,
    "wrapped": getattr(availability.resolve_model_statuses, "__opentalking_plugins__", False),
    "http_client_untouched": flashhead.FlashHeadHTTPClient.__module__.startswith("opentalking."),
}))
"""
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "stable": True,
        "client_is_ours": True,
        "route_shares": True,
        "wrapped": True,
        "http_client_untouched": True,
    }
