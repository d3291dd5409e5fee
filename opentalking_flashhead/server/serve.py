"""Run the stand-in: in the foreground (``serve-standin``) or on a background thread (``render``, tests)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from opentalking_flashhead.standin.api import create_app

log = logging.getLogger(__name__)

BANNER = "STAND-IN FlashHead service: no model runs here; frames are drawn from the reference image"


def load_api_keys(path: Path | None) -> set[str]:
    """One key per line, as OmniRT's ``--api-key-file``."""
    if path is None:
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def serve(
    host: str,
    port: int,
    output_dir: Path,
    *,
    api_key_file: Path | None = None,
    latency: float = 0.0,
    capacity: int = 1,
    fail_rate: float = 0.0,
) -> None:
    """Serve until interrupted."""
    output_dir.mkdir(parents=True, exist_ok=True)
    keys = load_api_keys(api_key_file)
    app = create_app(output_dir=output_dir, api_keys=keys, latency=latency, capacity=capacity, fail_rate=fail_rate)
    print(f"{BANNER}\n  listening on http://{host}:{port}, clips in {output_dir}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextmanager
def running_standin(
    output_dir: Path,
    *,
    api_keys: set[str] | None = None,
    latency: float = 0.0,
    capacity: int = 1,
    fail_rate: float = 0.0,
) -> Iterator[str]:
    """A stand-in on a free loopback port for the duration of the block; yields its base URL."""
    output_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(output_dir=output_dir, api_keys=api_keys, latency=latency, capacity=capacity, fail_rate=fail_rate)
    with running_app(app) as url:
        log.info("%s, at %s", BANNER, url)
        yield url


@contextmanager
def running_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, on a background thread; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="flashhead-standin", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the local service failed to start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
