"""The real OpenTalking 0.1.0 host talking through ``serve`` (the resident runtime on the test double):
a WebRTC session and a video-creation job, with nothing but HTTP between host and service (inline I/O)."""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
import pytest
from test_host import SESSION, render_job, speak_and_watch, wait_until

import hostkit
import servers

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(
        hostkit.host_venv() is None, reason="set OPENTALKING_HOST_VENV to an env built by .ci/host-env.sh"
    ),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """``serve`` (Pro) + opentalking-unified; the host's shared dir exists but the service never needs it."""
    root = tmp_path_factory.mktemp("serve-host")
    service = servers.serve(root).start()
    try:
        with hostkit.host_beside(service, root) as (host, shared):
            models = httpx.Client(base_url=service.base_url, timeout=30)
            assert wait_until(lambda: models.get("/readyz").status_code == 200, timeout=180)
            yield service, host, shared, models
    finally:
        service.stop()


def open_sessions(models: httpx.Client) -> int:
    return models.get("/v1/models").json()["data"][0]["sessions"]


def test_session_speaks_through_serve_to_a_webrtc_peer(stack) -> None:
    _, host, shared, models = stack
    created = httpx.post(f"{host.base_url}/sessions", json=SESSION, timeout=60)
    assert created.status_code == 200, created.text
    session_id = created.json()["session_id"]
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:  # the host may close its client once the speech has played: look while it plays
        while not done.wait(0.1):
            seen.append(open_sessions(models))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        frames = asyncio.run(speak_and_watch(host, session_id, 3))
    finally:
        done.set()
        watcher.join()
    assert frames and {(w, h) for w, h, _ in frames} == {(512, 512)}
    assert max(seen) == 1  # the host's chunks continued one resident session
    assert httpx.delete(f"{host.base_url}/sessions/{session_id}", timeout=30).status_code == 200
    assert wait_until(lambda: open_sessions(models) == 0), "the client did not close its session on serve"
    assert wait_until(lambda: not any(shared.iterdir())), sorted(shared.rglob("*"))


def test_video_creation_job_renders_through_serve(stack) -> None:
    _, host, shared, models = stack
    frames = render_job(host, chunks=2)
    assert len(frames) == 2 * 28
    assert len({np.asarray(frame).tobytes() for frame in frames}) > 1  # generated, not the idle still
    assert wait_until(lambda: open_sessions(models) == 0)
    assert wait_until(lambda: not any(shared.iterdir())), sorted(shared.rglob("*"))
