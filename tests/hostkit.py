"""Run the real OpenTalking 0.1.0 host for tests: a work dir, the server process, a WebRTC "browser".

The host runs from its own environment (``OPENTALKING_HOST_VENV``, built by .ci/host-env.sh with
this package installed from a wheel), so the ``.pth`` autoload is exercised as users get it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

import servers

AVATAR_ID = "fh-test"


def host_venv() -> Path | None:
    """The OpenTalking environment named by ``OPENTALKING_HOST_VENV``, if it is there."""
    raw = os.environ.get("OPENTALKING_HOST_VENV", "")
    venv = Path(raw) if raw else None
    return venv if venv is not None and (venv / "bin" / "opentalking-unified").exists() else None


def make_workdir(root: Path) -> Path:
    """A host work dir: a small config and one flashhead avatar drawn here."""
    avatar = root / "examples" / "avatars" / AVATAR_ID
    avatar.mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "configs" / "default.yaml").write_text("# defaults are enough for a CPU test host\n")
    manifest = {
        "id": AVATAR_ID,
        "name": "FlashHead test face",
        "model_type": "flashhead",
        "fps": 25,
        "sample_rate": 16000,
        "width": 512,
        "height": 512,
        "version": "1",
    }
    (avatar / "manifest.json").write_text(json.dumps(manifest))
    image = Image.new("RGB", (512, 512), (60, 100, 150))
    draw = ImageDraw.Draw(image)
    draw.ellipse((136, 60, 376, 420), fill=(225, 185, 155))
    image.save(avatar / "reference.png")
    image.resize((128, 128)).save(avatar / "preview.png")
    return root


def opentalking(
    venv: Path, workdir: Path, env: dict[str, str], command: str = "opentalking-unified"
) -> servers.ServiceProcess:
    """``opentalking-unified`` (or ``opentalking-api``) from ``venv`` on a free loopback port (not started)."""
    port = servers.free_port()
    host_env = {
        "OPENTALKING_CONFIG_FILE": str(workdir / "configs" / "default.yaml"),
        "OPENTALKING_AVATARS_DIR": str(workdir / "examples" / "avatars"),
        "OPENTALKING_MEMORY_PROVIDER": "none",
        "OPENTALKING_TORCH_DEVICE": "cpu",
        "OPENTALKING_STT_PREWARM_ON_STARTUP": "0",
        "OPENTALKING_UNIFIED_HOST": "127.0.0.1",
        "OPENTALKING_UNIFIED_PORT": str(port),
        "OPENTALKING_API_HOST": "127.0.0.1",
        "OPENTALKING_API_PORT": str(port),
        **env,
    }
    return servers.ServiceProcess(
        command,
        [str(venv / "bin" / command)],
        workdir,
        workdir / f"{command}.log",
        port,
        env=host_env,
        health_path="/health",
    )


@contextlib.contextmanager
def host_beside(service: servers.ServiceProcess, root: Path) -> Iterator[tuple[servers.ServiceProcess, Path]]:
    """opentalking-unified driving ``service`` (already started), sharing a storage dir under ``root``
    with it, as a one-host deployment has it; the host and the dir it shares, the host stopped after."""
    shared = root / "shared"
    shared.mkdir()
    env = {
        "OPENTALKING_FLASHHEAD_BASE_URL": service.base_url,
        "OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR": str(shared),
        "FLASHTALK_TTS_TRAILING_SILENCE_MS": "0",
    }
    venv = host_venv()
    assert venv is not None
    host = opentalking(venv, make_workdir(root / "work"), env).start(timeout=120)
    try:
        yield host, shared
    finally:
        host.stop()


def without_flashhead_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` without any FlashHead setting (ours, or the unprefixed names OpenTalking also reads),
    for a host whose FlashHead configuration must come from its own files only."""
    return {k: v for k, v in env.items() if not k.startswith(("OPENTALKING_FLASHHEAD_", "FLASHHEAD_"))}


_STOCK_STATUSES = """
import asyncio, json, sys
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "opentalking_flashhead_autoload"]
from opentalking.core.config import get_settings
from opentalking.providers.synthesis.availability import resolve_model_statuses
statuses = [s.to_dict() for s in asyncio.run(resolve_model_statuses(get_settings()))]
assert not any(name.startswith("opentalking_flashhead.") for name in sys.modules), "not stock"
print(json.dumps(statuses))
"""


def stock_model_statuses(venv: Path, host: servers.ServiceProcess) -> list[dict]:
    """What stock OpenTalking's own ``resolve_model_statuses`` answers with ``host``'s environment and
    work dir: a fresh interpreter of the host's venv that drops the plugin's import hook first."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", _STOCK_STATUSES],
        cwd=host.log_path.parent,
        env=host.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(venv: Path, workdir: Path, env: dict[str, str], port: int) -> servers.ServiceProcess:
    """``opentalking-worker`` (the realtime half of a split deployment) on ``port`` (not started)."""
    worker_env = {**env, "OPENTALKING_WORKER_HOST": "127.0.0.1", "OPENTALKING_WORKER_PORT": str(port)}
    return servers.ServiceProcess(
        "opentalking-worker",
        [str(venv / "bin" / "opentalking-worker")],
        workdir,
        workdir / "worker.log",
        port,
        env=worker_env,
    )


def redis_server(workdir: Path) -> servers.ServiceProcess:
    """A throwaway Redis on a free loopback port, for the split API/worker deployment (not started)."""
    port = servers.free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return servers.ServiceProcess("redis", command, workdir, workdir / "redis.log", port, health_path=None)


def clip_progress(rgb) -> int | None:  # type: ignore[no-untyped-def]
    """Where in its clip a stand-in frame is (progress bar length in pixels); None for other frames.

    Generated frames carry the stand-in's black banner with a progress bar under it; the host's
    idle frames are the bare reference image.
    """
    if float(rgb[4:30, :, :].mean()) > 60.0:
        return None
    return int((rgb[37, :, 0] > 128).sum())


def count_generated(progress: list[int | None]) -> int:
    """Distinct generated frames in playback order: the bar moves on every new frame of a clip and
    starts over with the next clip; a frame the host repeats while idle leaves it where it was."""
    count, last = 0, None
    for value in progress:
        if value is not None and (last is None or abs(value - last) > 6):
            count += 1
        last = value if value is not None else last
    return count


async def receive_video(base_url: str, session_id: str, *, until_frames: int, timeout: float) -> list[tuple]:
    """Play the browser: negotiate WebRTC and collect ``(width, height, clip progress)`` per received frame."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    peer = RTCPeerConnection()
    peer.addTransceiver("video", direction="recvonly")
    peer.addTransceiver("audio", direction="recvonly")
    sizes: list[tuple] = []
    done = asyncio.Event()
    pulls: list[asyncio.Future] = []

    @peer.on("track")
    def on_track(track) -> None:  # type: ignore[no-untyped-def]
        if track.kind != "video":
            return

        async def pull() -> None:
            while not done.is_set():
                frame = await track.recv()
                sizes.append((frame.width, frame.height, clip_progress(frame.to_ndarray(format="rgb24"))))
                if len(sizes) >= until_frames:
                    done.set()

        pulls.append(asyncio.ensure_future(pull()))

    await peer.setLocalDescription(await peer.createOffer())
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        answer = (
            (
                await http.post(
                    f"/sessions/{session_id}/webrtc/offer",
                    json={"sdp": peer.localDescription.sdp, "type": peer.localDescription.type},
                )
            )
            .raise_for_status()
            .json()
        )
    await peer.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    deadline = time.monotonic() + timeout
    try:
        await asyncio.wait_for(done.wait(), timeout=max(0.1, deadline - time.monotonic()))
    except asyncio.TimeoutError:
        pass
    finally:
        done.set()
        await peer.close()
        for task in pulls:
            task.cancel()
        await asyncio.gather(*pulls, return_exceptions=True)
    return sizes


def read_environ(path: Path) -> dict[str, str]:
    """An environment as Linux shows it in ``/proc/<pid>/environ`` (what the process started with)."""
    raw = path.read_bytes()
    return dict(entry.decode(errors="replace").partition("=")[::2] for entry in raw.split(b"\0") if entry)


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid``."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split()):
            found += [child, *descendants(child)]
    return found


def recording_ffmpeg(root: Path) -> tuple[Path, Path]:
    """An ``OPENTALKING_FFMPEG_BIN`` that saves the environment it was started with, then runs ffmpeg.

    The host's ffmpeg calls are its short-lived children: what they inherit is what the host's
    ``os.environ`` held at that moment. Returns the script and the folder of saved environments.
    """
    saved = root / "child-environments"
    saved.mkdir(parents=True)
    script = root / "ffmpeg"
    script.write_text(f'#!/bin/sh\ncat /proc/$$/environ > "{saved}/$$"\nexec ffmpeg "$@"\n')
    script.chmod(0o755)
    return script, saved
