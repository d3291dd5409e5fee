"""The protocol layer: OmniRT 0.1.0's routes, status codes and body shapes for FlashHead, any renderer.

Our extensions (``examples/protocol-extensions.md``; advertised in ``/v1/models``, and never
changing what an OmniRT-valid request gets): session headers, a close route, inline inputs and
clips. Hardening OmniRT lacks: inputs and clips only under the service's directories, a body
cap (413), finished jobs forgotten after a while. Differences a client cannot rely on either
way: a sync run does not block other requests here (OmniRT's does), and the job event stream
ends after a terminal event even when it was missed (OmniRT's can hang then).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opentalking_flashhead.server.generation import Generation, Ticket
from opentalking_flashhead.server.inputs import INPUT_KEYS, Roots, boundary_errors, inline_digest, is_inline
from opentalking_flashhead.server.jobs import KEEP_SEC, TERMINAL_EVENTS, Job, JobRunner
from opentalking_flashhead.server.renderer import Renderer
from opentalking_flashhead.server.validation import validate

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: Request bodies above this are refused with 413 (inline inputs included).
MAX_BODY_BYTES = 32 * 1024 * 1024
SESSION_HEADER, CHUNK_HEADER, OUTPUT_HEADER = "x-flashhead-session", "x-flashhead-chunk", "x-flashhead-output"
#: What ``/v1/models`` advertises; a client uses an extension only when it is listed.
EXTENSIONS = ("session-headers", "close-session", "inline-io")
LOADING = "the model is still loading and warming up; retry once /readyz answers 200"


class GenerateSubmission(BaseModel):
    """OmniRT's request body, field for field (so a malformed body gets the same 422)."""

    task: str
    model: str
    backend: str = "auto"
    inputs: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    adapters: list[dict[str, Any]] | None = None
    async_run: bool = False


class ApiKeys(BaseHTTPMiddleware):
    """OmniRT's key check: ``x-api-key`` or ``Authorization: Bearer``; health routes stay open."""

    def __init__(self, app: Any, keys: set[str]) -> None:
        super().__init__(app)
        self.keys = keys

    async def dispatch(self, request: Request, call_next: Any) -> Any:
        if not self.keys or request.url.path in OPEN_PATHS:
            return await call_next(request)
        provided = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if not provided and auth.lower().startswith("bearer "):
            provided = auth[7:].strip()
        if provided in self.keys:
            return await call_next(request)
        return JSONResponse(status_code=401, content={"detail": "Unauthorized"})


class BodyCap:
    """Refuse a request body over ``limit`` bytes with 413, counted as it arrives (a wrong or missing
    Content-Length changes nothing); the body is neither kept nor logged."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            more = bool(message.get("more_body"))
            if size > self.limit:
                chunks.clear()
                while more:  # drain it unread, so the client gets to read our answer
                    more = bool((await receive()).get("more_body"))
                detail = f"request body over {self.limit} bytes (this service's cap, --max-body-mb)"
                await JSONResponse(status_code=413, content={"detail": detail})(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
        body: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return body.pop() if body else await receive()

        await self.app(scope, replay, send)


def create_app(
    renderer: Renderer,
    *,
    output_dir: Path,
    shared_roots: Iterable[Path] = (),
    api_keys: set[str] | None = None,
    latency: float = 0.0,
    capacity: int = 1,
    fail_rate: float = 0.0,
    max_body_bytes: int = MAX_BODY_BYTES,
    job_keep_sec: float = KEEP_SEC,
    refusals: Mapping[type[Exception], int] | None = None,
    card: Mapping[str, Any],
) -> FastAPI:
    """A FlashHead service drawing with ``renderer``, writing clips to ``output_dir`` unless a request
    names another dir under the roots (``output_dir`` and ``shared_roots``).

    ``card``: the model card's fixed fields; ``refusals``: renderer exceptions answered with that
    status and their text as the detail (a sync run) instead of OmniRT's bare 500. ``fail_rate``
    makes that share of generations fail transiently (half as 503, half as a failed run).
    """
    roots = Roots(output_dir, shared_roots)
    backend = str(card.get("default_backend", "standin"))
    work = Generation(renderer, output_dir, roots, backend=backend)
    runner = JobRunner(
        work, backend=backend, latency=latency, capacity=capacity, fail_rate=fail_rate, keep_sec=job_keep_sec
    )
    refused = dict(refusals or {})

    async def shutdown() -> None:
        await runner.shutdown()
        await renderer.aclose()

    app = FastAPI(title=f"FlashHead service ({backend})", version="0.1.0")
    app.state.runner = runner
    app.router.add_event_handler("shutdown", shutdown)
    if api_keys:
        app.add_middleware(ApiKeys, keys=set(api_keys))
    app.add_middleware(BodyCap, limit=max_body_bytes)

    def _model_errors(config: Mapping[str, Any]) -> list[str]:
        """A renderer that runs one model type cannot honour another (the stand-in draws any)."""
        served, asked = renderer.describe().get("model_type"), config.get("model_type")
        if served is None or asked in (None, served):
            return []
        return [f"This service runs model_type {served!r} (its --model-type); the request asks for {asked!r}."]

    def job_or_404(job_id: str) -> Job:
        job = runner.jobs.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail="Job not found")
        return job

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/readyz", response_model=None)
    async def readyz() -> Any:
        if not renderer.ready:
            return JSONResponse(status_code=503, content={"ok": False, "detail": LOADING})
        return {"ok": True, "job_store_backend": "memory", "remote_worker_count": 0, "allowed_model_tiers": []}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        model = {**card, **renderer.describe(), "ready": renderer.ready, "extensions": list(EXTENSIONS)}
        return {"object": "list", "data": [model]}

    @app.delete("/v1/sessions/{session}")
    async def close_session(session: str) -> dict[str, Any]:
        return {"session": session, "closed": renderer.close_session(session)}

    @app.post("/v1/generate", response_model=None)
    async def generate(payload: GenerateSubmission, request: Request) -> Any:
        record = payload.model_dump(exclude={"async_run"})
        record["backend"] = backend if record["backend"] == "auto" else record["backend"]
        errors = validate(payload.task, payload.model, payload.inputs, payload.config)
        errors = errors or boundary_errors(payload.inputs, payload.config, roots) or _model_errors(payload.config)
        if errors:
            raise HTTPException(status_code=400, detail="\n".join(f"- {e}" for e in errors))
        if not renderer.ready:
            raise HTTPException(status_code=503, detail=LOADING)
        failure = runner.draw_failure()
        if failure == "overload":
            return PlainTextResponse(f"{backend}: simulated overload (--fail-rate)", status_code=503)
        job, submitted = runner.submit(record, _ticket(payload, request), fail=failure == "run")
        if payload.async_run:
            return submitted
        assert job.task is not None
        await asyncio.wait({job.task})  # the job goes on if this request is dropped, as OmniRT's does
        if job.state == "succeeded":
            return job.result
        status = next((code for kind, code in refused.items() if isinstance(job.exception, kind)), None)
        if status is not None:
            return JSONResponse(status_code=status, content={"detail": job.error})
        return PlainTextResponse("Internal Server Error", status_code=500)

    @app.get("/v1/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        return job_or_404(job_id).to_dict()

    @app.delete("/v1/jobs/{job_id}")
    async def cancel_job(job_id: str) -> dict[str, Any]:
        return runner.cancel(job_or_404(job_id)).to_dict()

    @app.get("/v1/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        job = job_or_404(job_id)

        async def stream() -> AsyncIterator[str]:
            changed, sent = asyncio.Event(), 0
            unsubscribe = runner.subscribe(changed.set)
            try:
                while not await request.is_disconnected():
                    changed.clear()
                    for event in job.events[sent:]:
                        yield f"event: {event['event']}\ndata: {json.dumps(event)}\n\n"
                        sent += 1
                        if event["event"] in TERMINAL_EVENTS:
                            return
                    try:
                        await asyncio.wait_for(changed.wait(), timeout=15.0)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
            finally:
                unsubscribe()

        return StreamingResponse(stream(), media_type="text/event-stream")

    return app


def _ticket(payload: GenerateSubmission, request: Request) -> Ticket:
    """The session and chunk this request belongs to (our headers, else its output_dir) and its transport."""
    from opentalking_flashhead.server.resident.identity import session_of

    inputs = {key: str(payload.inputs[key]) for key in INPUT_KEYS}
    image = inline_digest(inputs["image"]) if is_inline(inputs["image"]) else inputs["image"]
    output_dir = payload.config.get("output_dir")
    session, chunk = session_of(
        str(output_dir) if output_dir else None,
        image,
        request.headers.get(SESSION_HEADER),
        request.headers.get(CHUNK_HEADER),
    )
    inline_output = request.headers.get(OUTPUT_HEADER, "").strip().lower() == "inline"
    return Ticket(inputs, session, chunk, inline_output)
