"""The real OpenTalking 0.1.0 host, unmodified, with this package installed from its wheel.

The host runs from ``OPENTALKING_HOST_VENV`` (built by ``.ci/host-env.sh``; ``.ci/run`` sets it):
OmniRT serves FlashHead, ``opentalking-unified`` serves the WebUI API, aiortc plays the browser.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from media import wav_bytes

import hostkit
import servers

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(
        hostkit.host_venv() is None, reason="set OPENTALKING_HOST_VENV to an env built by .ci/host-env.sh"
    ),
]

LOADED = "opentalking plugins: flashhead=loaded"
SESSION = {"avatar_id": hostkit.AVATAR_ID, "model": "flashhead", "stt_provider": "sensevoice", "tts_provider": "edge"}


def model_statuses(host: servers.ServiceProcess) -> list[dict]:
    return httpx.get(f"{host.base_url}/models", timeout=10).json()["statuses"]


def flashhead_status(host: servers.ServiceProcess) -> dict:
    return next(s for s in model_statuses(host) if s["id"] == "flashhead")


def render_job(host: servers.ServiceProcess, chunks: int) -> list[np.ndarray]:
    """Run one video-creation job for flashhead and decode the MP4 it exported."""
    response = httpx.post(
        f"{host.base_url}/video-creation/jobs",
        data={"model": "flashhead", "avatar_id": hostkit.AVATAR_ID, "audio_source": "upload"},
        files={"audio_file": ("speech.wav", wav_bytes(chunks * 17920), "audio/wav")},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    with av.open(response.json()["export_video"]["path"]) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


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
    omnirt = servers.omnirt(root).start()
    try:
        with hostkit.host_beside(omnirt, root) as (host, shared):
            yield omnirt, host, shared
    finally:
        omnirt.stop()


def test_models_lists_flashhead_connected_by_the_plugin(stack) -> None:
    _, host, _ = stack
    venv = hostkit.host_venv()
    assert venv is not None
    statuses = model_statuses(host)
    assert next(s for s in statuses if s["id"] == "flashhead") == {
        "id": "flashhead",
        "backend": "direct_ws",
        "connected": True,
        "reason": "flashhead_ready",
    }
    stock = hostkit.stock_model_statuses(venv, host)
    assert [s for s in statuses if s["id"] != "flashhead"] == [s for s in stock if s["id"] != "flashhead"]
    assert LOADED in host.log_path.read_text()  # opentalking-unified shows the plugin summary


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
    frames = render_job(host, chunks=2)
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
        statuses = model_statuses(host)
        # Stock 0.1.0: flashhead's direct_ws backend has no ws URL, so it is not configured...
        assert next(s for s in statuses if s["id"] == "flashhead") == {
            "id": "flashhead",
            "backend": "direct_ws",
            "connected": False,
            "reason": "not_configured",
        }
        # ...and every model reads exactly as the host's own resolve_model_statuses has it.
        assert statuses == hostkit.stock_model_statuses(venv, host)
        assert httpx.post(f"{host.base_url}/sessions", json=SESSION, timeout=30).status_code == 400
        assert "opentalking plugins: flashhead=disabled" in host.log_path.read_text()
    finally:
        host.stop()


def test_flashhead_configured_only_in_the_hosts_dotenv(stack, tmp_path: Path) -> None:
    """As flashhead.env.example suggests: the settings live in OpenTalking's .env, not the environment."""
    omnirt, _, _ = stack
    venv = hostkit.host_venv()
    assert venv is not None
    shared, clips = tmp_path / "shared", tmp_path / "clips"
    shared.mkdir()
    workdir = hostkit.make_workdir(tmp_path / "work")
    (workdir / ".env").write_text(
        f"OPENTALKING_FLASHHEAD_BASE_URL={omnirt.base_url}\n"
        f"OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR={shared}\n"
        f"OPENTALKING_FLASHHEAD_SAVE_DIR={clips}\n"  # a name OpenTalking's settings do not know
    )
    host = hostkit.opentalking(venv, workdir, {})
    host.env = hostkit.without_flashhead_env(host.env)
    host.start(timeout=120)
    try:
        assert flashhead_status(host)["reason"] == "flashhead_ready"
        assert len(render_job(host, chunks=1)) == 28
        assert len(list(clips.glob("*.mp4"))) == 1
        assert wait_until(lambda: not any(shared.iterdir())), sorted(shared.rglob("*"))
    finally:
        host.stop()


_SETTINGS_SEEN = """
import asyncio, json, os
import opentalking.providers.synthesis.availability as availability  # the plugin adjusts the host here
import opentalking.providers.synthesis.flashhead as flashhead
from opentalking.core.config import get_settings
from opentalking_flashhead.host.hostconfig import current_host_config

host = get_settings()
client = flashhead.FlashHeadWSClient(ws_url=host.flashhead_ws_url, model=host.flashhead_model, config={})
s = client.settings
print(json.dumps({
    "environ": {k: v for k, v in os.environ.items() if k.startswith("OPENTALKING_FLASHHEAD_")},
    "settings": [s.base_url, s.model, s.api_key, s.timeout_sec, s.chunk_samples],
    "host_config": current_host_config(),
}))
"""


def test_host_dotenv_and_yaml_reach_the_client_without_the_environment(tmp_path: Path) -> None:
    """.env and the YAML config reach our client as the host's configuration; a real environment
    variable still wins; nothing is exported; the settings the model fixes (fps, size, frame count)
    are left out."""
    venv = hostkit.host_venv()
    assert venv is not None
    (tmp_path / ".env").write_text(
        "OPENTALKING_FLASHHEAD_BASE_URL=http://dotenv.invalid:8766\n"
        "OPENTALKING_FLASHHEAD_API_KEY=key-from-dotenv\n"
        "OPENTALKING_FLASHHEAD_TIMEOUT_SEC=7\n"
        "OPENTALKING_FLASHHEAD_FPS=30\n"
        "OPENTALKING_FLASHHEAD_UNKNOWN=x\n"
    )
    config = tmp_path / "opentalking.yaml"
    config.write_text("flashhead:\n  model: model-from-yaml\n  ws_url: http://yaml.invalid:9\n  width: 256\n")
    env = {
        **hostkit.without_flashhead_env(dict(os.environ)),
        "OPENTALKING_CONFIG_FILE": str(config),
        "FLASHHEAD_CHUNK_SAMPLES": "16000",  # OpenTalking's legacy unprefixed name
        "OPENTALKING_FLASHHEAD_TIMEOUT_SEC": "42",
    }
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _SETTINGS_SEEN], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["environ"] == {"OPENTALKING_FLASHHEAD_TIMEOUT_SEC": "42"}  # only what was really set
    assert seen["host_config"] == {
        "base_url": "http://dotenv.invalid:8766",
        "api_key": "key-from-dotenv",
        "timeout_sec": "42.0",
        "model": "model-from-yaml",
        "ws_url": "http://yaml.invalid:9",
        "chunk_samples": "16000",
    }
    assert seen["settings"] == ["http://dotenv.invalid:8766", "model-from-yaml", "key-from-dotenv", 42.0, 16000]


def test_the_dotenv_api_key_stays_out_of_the_host_and_its_children(tmp_path: Path) -> None:
    """The key in OpenTalking's .env reaches the service (the model reads ready, a job renders) but no
    process environment: not the host's, nor those of the ffmpeg calls it makes afterwards."""
    venv = hostkit.host_venv()
    assert venv is not None
    key = "key-from-dotenv-6b1f0c"
    omnirt = servers.omnirt(tmp_path, api_key=key).start()
    shared = tmp_path / "shared"
    shared.mkdir()
    workdir = hostkit.make_workdir(tmp_path / "work")
    (workdir / ".env").write_text(
        f"OPENTALKING_FLASHHEAD_BASE_URL={omnirt.base_url}\n"
        f"OPENTALKING_FLASHHEAD_API_KEY={key}\n"
        f"OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR={shared}\n"
    )
    ffmpeg, children = hostkit.recording_ffmpeg(tmp_path / "spy")
    host = hostkit.opentalking(venv, workdir, {"OPENTALKING_FFMPEG_BIN": str(ffmpeg)})
    host.env = hostkit.without_flashhead_env(host.env)
    host.start(timeout=120)
    try:
        assert flashhead_status(host)["reason"] == "flashhead_ready"  # the key reached the check
        assert len(render_job(host, chunks=1)) == 28  # ...and the client; the job muxes with ffmpeg
        assert host.process is not None
        pids = [host.process.pid, *hostkit.descendants(host.process.pid)]
        live = [hostkit.read_environ(Path(f"/proc/{pid}/environ")) for pid in pids]
        spawned = [hostkit.read_environ(path) for path in children.iterdir()]
        assert spawned, "the host ran no ffmpeg"
        assert not [env for env in live + spawned if any(key in value for value in env.values())]
    finally:
        host.stop()
        omnirt.stop()


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
        assert LOADED in api.log_path.read_text() and LOADED in worker.log_path.read_text()
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
from opentalking.providers.synthesis.flashhead.ws_client import FlashHeadWSClient as stock_client
from opentalking_flashhead.host.opentalking import apply

before = (availability.resolve_model_statuses, flashhead.FlashHeadWSClient)
apply()
apply()
print(json.dumps({
    "stable": (availability.resolve_model_statuses, flashhead.FlashHeadWSClient) == before,
    "client_is_ours": getattr(flashhead.FlashHeadWSClient, "__opentalking_plugins__", False)
    and flashhead.FlashHeadWSClient.__wrapped__ is stock_client,
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
