"""``serve``: the resident SoulX-FlashHead model behind the protocol layer, one process per GPU.

Start-up order: ``preflight`` (a missing checkout, checkpoint, torch or GPU is one line, before
anything listens), listen, then load and warm up in a background thread: ``/healthz`` answers
meanwhile, ``/readyz`` and ``/v1/models`` say ready only after the warm-up slice, and a
generation asked for earlier gets 503. A load that fails stops the server with its error.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from opentalking_flashhead.server.api import MAX_BODY_BYTES, create_app
from opentalking_flashhead.server.resident.options import ModelOptions, StartupError, preflight
from opentalking_flashhead.server.serve import load_api_keys
from opentalking_flashhead.server.validation import MODEL_ID, TASK

#: Generations the protocol layer lets into the runtime at once; its worker runs their slices one
#: at a time, fairly across sessions, so this only bounds what waits there.
CAPACITY = 64


def model_card(options: ModelOptions) -> dict[str, object]:
    return {
        "id": MODEL_ID,
        "object": "model",
        "created": 0,
        "owned_by": "opentalking-flashhead",
        "task": TASK,
        "status": "public/beta",
        "tier": "core",
        "maturity": "beta",
        "default_backend": "resident",
        "summary": f"SoulX-FlashHead 1.3B ({options.model_type}), resident: loaded once, sessions continuous.",
    }


def model_app(
    options: ModelOptions,
    output_dir: Path,
    *,
    shared_roots: Iterable[Path] = (),
    api_keys: set[str] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> tuple[FastAPI, threading.Thread, list[BaseException]]:
    """The app and its loader thread (started with the server; a failure is appended to the list)."""
    from opentalking_flashhead.server.resident.runtime import ChunkGone, ResidentRuntime, SessionLimitReached

    output_dir.mkdir(parents=True, exist_ok=True)
    runtime = ResidentRuntime(options)
    app = create_app(
        runtime,
        output_dir=output_dir,
        shared_roots=shared_roots,
        api_keys=api_keys,
        capacity=CAPACITY,
        max_body_bytes=max_body_bytes,
        refusals={SessionLimitReached: 503, ChunkGone: 409},
        card=model_card(options),
    )
    failures: list[BaseException] = []

    def load() -> None:
        try:
            runtime.load()
        except BaseException as exc:  # reported by serve_model once the server has stopped
            failures.append(exc)
        else:
            print(f"  {options.model_type} loaded and warmed up: ready", flush=True)

    return app, threading.Thread(target=load, name="flashhead-load", daemon=True), failures


def serve_model(
    options: ModelOptions,
    host: str,
    port: int,
    output_dir: Path,
    *,
    shared_roots: Iterable[Path],
    api_key_file: Path | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> None:
    """Serve until interrupted; StartupError when the model cannot be found or loaded."""
    preflight(options)
    roots = list(shared_roots)
    app, loader, failures = model_app(
        options, output_dir, shared_roots=roots, api_keys=load_api_keys(api_key_file), max_body_bytes=max_body_bytes
    )
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))

    def watch() -> None:
        loader.join()
        if failures:
            server.should_exit = True

    async def start_loading() -> None:
        loader.start()
        threading.Thread(target=watch, name="flashhead-load-watch", daemon=True).start()

    app.router.add_event_handler("startup", start_loading)

    where = ", ".join(str(root) for root in [output_dir, *roots])
    print(
        f"FlashHead {options.model_type} on {options.device} ({options.dtype}): loading; listening on "
        f"http://{host}:{port}, clips in {output_dir}, reads only under {where}",
        flush=True,
    )
    server.run()
    if failures:
        raise StartupError(f"loading the model failed: {failures[0]}") from failures[0]
