"""A FlashHead service that misbehaves on cue, for the fault matrix.

It speaks the protocol (health, models, sync and async generate, jobs, clip files) and renders
real stand-in clips, but each generate request takes the next fault from ``FaultService.script``
("ok" once the script is empty).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from opentalking_flashhead.standin.clip import render_clip

FAULTS = (
    "ok",
    "500",
    "503",
    "job_failed",
    "job_failed_permanent",
    "hang",
    "truncated",
    "empty",
    "not_video",
    "too_long",
    "outside",
    "dotdot",
    "symlink",
    "foreign_url",
    "oversized",
    "redirect",
)


class FaultService:
    """State and app of the misbehaving service; ``base_url`` is set by the test that serves it."""

    def __init__(self, workdir: Path, hang_sec: float = 30.0) -> None:
        self.workdir = workdir
        self.hang_sec = hang_sec
        self.script: deque[str] = deque()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.base_url = ""
        self.app = self._build()

    def clip_for(self, fault: str, inputs: dict[str, str], output_dir: Path) -> dict[str, Any]:
        """The artifact a generation answers with, misbehaving as ``fault`` says."""
        output_dir.mkdir(parents=True, exist_ok=True)
        clip = output_dir / f"soulx-flashhead-1.3b-9999-{uuid.uuid4().hex[:8]}.mp4"
        audio = Path(inputs["audio"])
        if fault == "too_long":
            pcm, rate = sf.read(str(audio), dtype="int16")
            longer = output_dir / f"long-{uuid.uuid4().hex[:6]}.wav"
            sf.write(longer, np.tile(pcm, 10), rate, subtype="PCM_16")
            render_clip(Path(inputs["image"]), longer, clip)
            longer.unlink()
        elif fault in ("ok", "hang", "truncated", "outside", "symlink"):
            render_clip(Path(inputs["image"]), audio, clip)
        if fault == "truncated":
            clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
        elif fault == "empty":
            clip.write_bytes(b"")
        elif fault == "not_video":
            clip.write_text("this is not a video")
        elif fault == "outside":
            target = self.workdir / "elsewhere" / clip.name
            target.parent.mkdir(exist_ok=True)
            clip.replace(target)
            clip = target
        elif fault == "dotdot":
            return self._artifact(f"{output_dir}/../../../etc/passwd")
        elif fault == "symlink":
            secret = self.workdir / "secret.mp4"
            clip.replace(secret)
            clip.symlink_to(secret)
        elif fault == "foreign_url":
            return self._artifact(url=f"http://127.0.0.2:9/{clip.name}")
        elif fault in ("oversized", "redirect"):
            return self._artifact(url=f"{self.base_url}/files/{fault}")
        return self._artifact(str(clip))

    @staticmethod
    def _artifact(path: str | None = None, url: str | None = None) -> dict[str, Any]:
        item = {"kind": "video", "mime": "video/mp4", "width": 512, "height": 512, "num_frames": 28}
        item |= {"path": path, "transport": "path"} if path else {"url": url, "transport": "url"}
        return {"outputs": [{**item, "data_b64": None}], "metadata": {}}

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/healthz")
        async def healthz() -> dict[str, bool]:
            return {"ok": True}

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": "soulx-flashhead-1.3b", "task": "audio2video"}]}

        @app.post("/v1/generate", response_model=None)
        async def generate(request: Request) -> Any:
            body = await request.json()
            self.requests += 1
            fault = self.script.popleft() if self.script else "ok"
            if fault == "500":
                return PlainTextResponse("Internal Server Error", status_code=500)
            if fault == "503":
                return PlainTextResponse("Service Unavailable", status_code=503)
            if fault == "hang":
                await asyncio.sleep(self.hang_sec)
            output_dir = Path(body.get("config", {}).get("output_dir") or self.workdir / "out")
            if not body.get("async_run"):
                return await asyncio.to_thread(self.clip_for, fault, body["inputs"], output_dir)
            job_id = str(uuid.uuid4())
            if fault.startswith("job_failed"):
                error = (
                    "FileNotFoundError: FlashHead repo_path not found"
                    if fault.endswith("permanent")
                    else ("FlashHead launch failed with exit code 1. CUDA out of memory")
                )
                self.jobs[job_id] = {"id": job_id, "state": "failed", "error": error}
            else:
                result = await asyncio.to_thread(self.clip_for, fault, body["inputs"], output_dir)
                self.jobs[job_id] = {"id": job_id, "state": "succeeded", "error": None, "result": result}
            return {"id": job_id, "state": "queued"}

        @app.get("/v1/jobs/{job_id}")
        async def job(job_id: str) -> Any:
            record = self.jobs.get(job_id)
            return record if record else JSONResponse({"detail": "Job not found"}, status_code=404)

        @app.get("/files/{name}")
        async def files(name: str) -> Response:
            if name == "redirect":
                return Response(status_code=302, headers={"location": "http://127.0.0.2:9/clip.mp4"})
            return Response(b"\0" * (3 * 1024 * 1024), media_type="video/mp4")

        return app
