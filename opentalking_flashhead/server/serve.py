"""Run a FlashHead service: the stand-in in the foreground (``serve-standin``) or on a background
thread (``render``, tests), and the uvicorn plumbing ``serve`` shares."""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from opentalking_flashhead.server.api import create_app
from opentalking_flashhead.server.standin import StandinRenderer
from opentalking_flashhead.server.validation import MODEL_ID, TASK

log = logging.getLogger(__name__)

BANNER = "STAND-IN FlashHead service: no model runs here; frames are drawn from the reference image"
STANDIN_CARD = {
    "id": MODEL_ID,
    "object": "model",
    "created": 0,
    "owned_by": "opentalking-flashhead-standin",
    "task": TASK,
    "status": "public/beta",
    "tier": "core",
    "maturity": "beta",
    "default_backend": "standin",
    "summary": "STAND-IN for SoulX-FlashHead: no model, frames are drawn from the reference image.",
}


def load_api_keys(path: Path | None) -> set[str]:
    """One key per line, as OmniRT's ``--api-key-file``."""
    if path is None:
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def standin_app(output_dir: Path, **options: Any) -> FastAPI:
    """The stand-in: the protocol layer with drawn frames behind it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    return create_app(StandinRenderer(), output_dir=output_dir, card=STANDIN_CARD, **options)


def serve(
    host: str,
    port: int,
    output_dir: Path,
    *,
    shared_roots: Iterable[Path],
    api_key_file: Path | None = None,
    **options: Any,
) -> None:
    """Serve the stand-in until interrupted; ``options``: ``create_app``'s (latency, capacity, fail_rate …)."""
    roots = list(shared_roots)
    app = standin_app(output_dir, shared_roots=roots, api_keys=load_api_keys(api_key_file), **options)
    where = ", ".join(str(root) for root in [output_dir, *roots])
    print(f"{BANNER}\n  listening on http://{host}:{port}, clips in {output_dir}, reads only under {where}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@contextmanager
def running_standin(
    output_dir: Path, *, shared_roots: Iterable[Path] = (Path(tempfile.gettempdir()),), **options: Any
) -> Iterator[str]:
    """A stand-in on a free loopback port for the duration of the block; yields its base URL.

    It reads and writes under ``output_dir`` and ``shared_roots`` (by default the system's temp
    dir, where ``render`` and tests keep their files); ``options``: ``create_app``'s.
    """
    with running_app(standin_app(output_dir, shared_roots=shared_roots, **options)) as url:
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
