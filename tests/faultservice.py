"""A FlashHead service that misbehaves on cue, for the fault matrix.

It speaks the protocol (health, models, sync and async generate, jobs, clip files) and renders
real stand-in clips, but each generate request takes the next fault from ``FaultService.script``
("ok" once the script is empty). It records what a test needs to see: the jobs it left running
(``stuck``), the jobs a client asked about (``polled``), the ``DELETE /v1/jobs/{id}`` it received
(``cancelled``), and the generate requests still being answered (``active``: a hung one finishes,
and writes its clip, after the client gave up).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from opentalking_flashhead.server.standin import render_clip

FAULTS = (
    "ok",
    "500",
    "503",
    "job_failed",
    "job_failed_permanent",
    "job_failed_leaving_clip",
    "stuck_job",
    "hang",
    "truncated",
    "empty",
    "not_video",
    "too_long",
    "outside",
    "dotdot",
    "symlink",
    "own_reference",
    "wrong_size",
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
        self.active = 0
        self.stuck: list[str] = []
        self.polled: set[str] = set()
        self.cancelled: list[str] = []
        self.base_url = ""
        self.app = self._build()

    def reset(self) -> None:
        """Forget the script and what the previous test did (jobs stay answerable)."""
        self.script.clear()
        self.stuck.clear()
        self.polled.clear()
        self.cancelled.clear()

    def settle(self, timeout: float = 30.0) -> None:
        """Block until no generate request is being answered any more (hung ones included)."""
        deadline = time.monotonic() + timeout
        while self.active:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.active} generate request(s) still being answered after {timeout:g} s")
            time.sleep(0.02)

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
        elif fault == "own_reference":  # the client's own input, which it must neither read as a clip nor delete
            return self._artifact(inputs["image"])
        elif fault == "wrong_size":
            _write_small_clip(clip)
        return self._artifact(str(clip))

    @staticmethod
    def deliver(result: dict[str, Any], output_dir: Path) -> dict[str, Any]:
        """Move a staged clip into ``output_dir``, as a slow model writes its clip at last."""
        staged = Path(result["outputs"][0]["path"])
        output_dir.mkdir(parents=True, exist_ok=True)
        return FaultService._artifact(str(staged.replace(output_dir / staged.name)))

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
            self.active += 1
            try:
                return await answer(await request.json())
            finally:
                self.active -= 1

        async def answer(body: dict[str, Any]) -> Any:
            self.requests += 1
            fault = self.script.popleft() if self.script else "ok"
            if fault == "500":
                return PlainTextResponse("Internal Server Error", status_code=500)
            if fault == "503":
                return PlainTextResponse("Service Unavailable", status_code=503)
            inputs, async_run = body["inputs"], bool(body.get("async_run"))
            output_dir = Path(body.get("config", {}).get("output_dir") or self.workdir / "out")
            job_id = str(uuid.uuid4())
            if fault == "stuck_job" and async_run:  # runs forever, writes nothing
                self.jobs[job_id] = {"id": job_id, "state": "running", "error": None}
                self.stuck.append(job_id)
                return {"id": job_id, "state": "queued"}
            if fault.startswith("job_failed"):
                if fault == "job_failed_leaving_clip":  # the model died while writing its clip
                    await asyncio.to_thread(self.clip_for, "truncated", inputs, output_dir)
                if not async_run:
                    return PlainTextResponse("Internal Server Error", status_code=500)
                error = (
                    "FileNotFoundError: FlashHead repo_path not found"
                    if fault.endswith("permanent")
                    else ("FlashHead launch failed with exit code 1. CUDA out of memory")
                )
                self.jobs[job_id] = {"id": job_id, "state": "failed", "error": error}
                return {"id": job_id, "state": "queued"}
            if fault == "hang":  # the model has read its inputs but takes too long: its clip lands late
                staged = await asyncio.to_thread(self.clip_for, "ok", inputs, self.workdir / "staging")
                await asyncio.sleep(self.hang_sec)
                result = await asyncio.to_thread(self.deliver, staged, output_dir)
            else:
                result = await asyncio.to_thread(self.clip_for, fault, inputs, output_dir)
            if not async_run:
                return result
            self.jobs[job_id] = {"id": job_id, "state": "succeeded", "error": None, "result": result}
            return {"id": job_id, "state": "queued"}

        @app.get("/v1/jobs/{job_id}")
        async def job(job_id: str) -> Any:
            self.polled.add(job_id)
            record = self.jobs.get(job_id)
            return record if record else JSONResponse({"detail": "Job not found"}, status_code=404)

        @app.delete("/v1/jobs/{job_id}")
        async def cancel(job_id: str) -> Any:
            self.cancelled.append(job_id)  # like OmniRT, a job that has started runs on regardless
            record = self.jobs.get(job_id)
            return record if record else JSONResponse({"detail": "Job not found"}, status_code=404)

        @app.get("/files/{name}")
        async def files(name: str) -> Response:
            if name == "redirect":
                return Response(status_code=302, headers={"location": "http://127.0.0.2:9/clip.mp4"})
            return Response(b"\0" * (3 * 1024 * 1024), media_type="video/mp4")

        return app


def _write_small_clip(path: Path, frames: int = 28) -> None:
    """A valid H.264 clip of 320×240: what a service that is not FlashHead might answer."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), index * 8, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
