"""The stand-in's HTTP face: OmniRT 0.1.0's routes, status codes and body shapes for FlashHead.

Differences a client cannot rely on either way: a sync run does not block other requests here
(OmniRT's does), and the job event stream ends after a terminal event even when it was missed
(OmniRT's can hang then).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.middleware.base import BaseHTTPMiddleware

from opentalking_flashhead.standin.jobs import TERMINAL_EVENTS, Job, JobRunner
from opentalking_flashhead.standin.validation import MODEL_ID, TASK, validate

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
MODEL_CARD = {
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


def create_app(
    *,
    output_dir: Path,
    api_keys: set[str] | None = None,
    latency: float = 0.0,
    capacity: int = 1,
    fail_rate: float = 0.0,
) -> FastAPI:
    """A stand-in FlashHead service writing clips to ``output_dir`` unless a request names another.

    ``fail_rate`` makes that share of generations fail transiently (half as 503, half as a failed
    run), as a flaky GPU service does.
    """
    runner = JobRunner(output_dir, latency=latency, capacity=capacity, fail_rate=fail_rate)
    app = FastAPI(title="FlashHead stand-in (no model)", version="0.1.0")
    app.state.runner = runner
    app.router.add_event_handler("shutdown", runner.shutdown)
    if api_keys:
        app.add_middleware(ApiKeys, keys=set(api_keys))

    def job_or_404(job_id: str) -> Job:
        job = runner.jobs.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail="Job not found")
        return job

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        return {"ok": True, "job_store_backend": "memory", "remote_worker_count": 0, "allowed_model_tiers": []}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [MODEL_CARD]}

    @app.post("/v1/generate", response_model=None)
    async def generate(payload: GenerateSubmission) -> Any:
        request = payload.model_dump(exclude={"async_run"})
        request["backend"] = "standin" if request["backend"] == "auto" else request["backend"]
        errors = validate(payload.task, payload.model, payload.inputs, payload.config)
        if errors:
            raise HTTPException(status_code=400, detail="\n".join(f"- {e}" for e in errors))
        failure = runner.draw_failure()
        if failure == "overload":
            return PlainTextResponse("stand-in: simulated overload (--fail-rate)", status_code=503)
        job, record = runner.submit(request, fail=failure == "run")
        if payload.async_run:
            return record
        assert job.future is not None
        try:
            await asyncio.wrap_future(job.future)
        except Exception:
            return PlainTextResponse("Internal Server Error", status_code=500)
        return job.result

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
            loop, changed, sent = asyncio.get_running_loop(), asyncio.Event(), 0
            unsubscribe = runner.subscribe(lambda: loop.call_soon_threadsafe(changed.set))
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
