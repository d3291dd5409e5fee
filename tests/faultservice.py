"""A FlashHead service that misbehaves on cue, for the fault matrix.

It speaks the protocol (health, models, sync and async generate, jobs, clip files) and renders
real stand-in clips, but each generate request takes the next fault from ``FaultService.script``
("ok" once the script is empty). It records what a test needs to see: the jobs it left running
(``stuck``), the jobs a client asked about (``polled``), the ``DELETE /v1/jobs/{id}`` it received
(``cancelled``), the generate requests still being answered (``active``: a hung one finishes,
and writes its clip, after the client gave up), the symlinks it swapped in (``swaps``), the
``Authorization`` header of every download from its file server (``downloads``) and of every
generate request (``authorizations``), and how many bytes its endless event streams sent
(``event_bytes``).

Faults named ``swap_{chunk|root}_{before|after}_{valid|503}`` put a symlink to ``victim`` in place
of the chunk's output dir or the session's output root, before or after answering, with a clip or
a 503; ``served`` answers with a URL on the service's own file server, ``/outputs/``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

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
    "huge",
    "unframed",
    "foreign_url",
    "oversized",
    "redirect",
    "served",
    *(
        f"swap_{what}_{when}_{answer}"
        for what in ("chunk", "root")
        for when in ("before", "after")
        for answer in ("valid", "503")
    ),
    "trickle_json",
    "trickle_job",
    "stall_download",
    "drip_download",
    "huge_json",
    "gzip_bomb",
    "huge_detail",
    "huge_event",
    "redirect_generate",
    "redirect_job",
    "unknown_job",
    "lost_record",
)
#: Between two bytes of a trickled answer (seconds).
TRICKLE_SEC = 0.5


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
        self.victim: Path | None = None
        self.swaps = 0
        self.downloads: list[str | None] = []
        self.authorizations: list[str | None] = []
        #: Jobs whose record or event stream misbehaves, by id (the fault's name).
        self.job_faults: dict[str, str] = {}
        self.event_bytes = 0
        self.base_url = ""
        self.app = self._build()

    def reset(self) -> None:
        """Forget the script and what the previous test did (jobs stay answerable)."""
        self.script.clear()
        self.stuck.clear()
        self.polled.clear()
        self.cancelled.clear()
        self.victim = None
        self.swaps = 0
        self.downloads.clear()
        self.authorizations.clear()
        self.event_bytes = 0

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
        elif fault in ("ok", "hang", "truncated", "outside", "symlink", "trickle_job", "huge_event"):
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
        elif fault in ("oversized", "redirect", "stall_download", "drip_download"):
            return self._artifact(url=f"{self.base_url}/files/{fault}")
        elif fault == "served":
            served = self.workdir / "served"
            served.mkdir(exist_ok=True)
            render_clip(Path(inputs["image"]), audio, served / clip.name)
            return self._artifact(url=f"{self.base_url}/outputs/{clip.name}")
        elif fault == "own_reference":  # the client's own input, which it must neither read as a clip nor delete
            return self._artifact(inputs["image"])
        elif fault == "wrong_size":
            write_clip(clip)
        elif fault in CANNED:
            shutil.copyfile(self.canned(fault), clip)
        return self._artifact(str(clip))

    def canned(self, fault: str) -> Path:
        """The clip ``fault`` answers with, written once (an 8192² frame takes seconds to encode)."""
        path = self.workdir / f"canned-{fault}.mp4"
        if not path.exists():
            partial = path.with_suffix(".partial")
            write_clip(partial, **CANNED[fault])
            partial.replace(path)
        return path

    def swap(self, what: str, output_dir: Path) -> None:
        """Put a symlink to ``victim`` in place of the chunk's output dir (``what="chunk"``) or the
        session's output root (``"root"``), moving a real directory there out of the way."""
        assert self.victim is not None, "set FaultService.victim before scripting a swap"
        target, victim = (
            (output_dir, self.victim / output_dir.name) if what == "chunk" else (output_dir.parent, self.victim)
        )
        if target.is_symlink():
            return
        if target.exists():
            target.replace(self.workdir / f"moved-{uuid.uuid4().hex[:8]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(victim, target_is_directory=True)
        self.swaps += 1

    async def swapping(self, fault: str, body: dict[str, Any]) -> Response:
        """Answer a ``swap_*`` fault: a clip at ``output_dir/clip.mp4`` (or a 503), the swap done
        before the answer or just after it is sent."""
        _, what, when, answer = fault.split("_")
        output_dir = Path(body["config"]["output_dir"])
        if answer == "503":
            content: Any = "Service Unavailable"
        else:
            output_dir.mkdir(parents=True, exist_ok=True)
            inputs = body["inputs"]
            await asyncio.to_thread(render_clip, Path(inputs["image"]), Path(inputs["audio"]), output_dir / "clip.mp4")
            content = self._artifact(str(output_dir / "clip.mp4"))
            if body.get("async_run"):
                job_id = str(uuid.uuid4())
                self.jobs[job_id] = {"id": job_id, "state": "succeeded", "error": None, "result": content}
                content = {"id": job_id, "state": "queued"}
        if when == "before":
            await asyncio.to_thread(self.swap, what, output_dir)
        after = BackgroundTask(self.swap, what, output_dir) if when == "after" else None
        if answer == "503":
            return PlainTextResponse(content, status_code=503, background=after)
        return JSONResponse(content, background=after)

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
            self.authorizations.append(request.headers.get("authorization"))
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
            if fault.startswith("swap_"):
                return await self.swapping(fault, body)
            if fault == "huge_detail":
                return JSONResponse({"detail": "- bad input " + "x" * 100_000}, status_code=400)
            if fault == "redirect_generate":  # an http:// URL in front of an https-only proxy
                location = self.base_url.replace("http://", "https://") + "/v1/generate"
                return Response(status_code=307, headers={"location": location})
            inputs, async_run = body["inputs"], bool(body.get("async_run"))
            output_dir = Path(body.get("config", {}).get("output_dir") or self.workdir / "out")
            job_id = str(uuid.uuid4())
            if fault == "stuck_job" and async_run:  # runs forever, writes nothing
                self.jobs[job_id] = {"id": job_id, "state": "running", "error": None}
                self.stuck.append(job_id)
                return {"id": job_id, "state": "queued"}
            if fault == "unknown_job":  # the node that answers the polls never heard of it
                return {"id": job_id, "state": "queued"}
            if fault == "lost_record":  # its events end with job_finished, its record stays running
                self.jobs[job_id] = {"id": job_id, "state": "running", "error": None}
                self.job_faults[job_id] = fault
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
            if fault in ("huge_json", "gzip_bomb"):
                result["metadata"]["padding"] = "x" * (20 * 1024 * 1024)
                if fault == "gzip_bomb":  # 20 MB of JSON in about 20 KB on the wire
                    packed = gzip.compress(json.dumps(result).encode(), compresslevel=9)
                    return Response(packed, media_type="application/json", headers={"content-encoding": "gzip"})
                return result
            if not async_run:
                return _trickled(result) if fault == "trickle_json" else result
            # A job with an endless event line finishes once its stream is closed.
            state = "running" if fault == "huge_event" else "succeeded"
            self.jobs[job_id] = {"id": job_id, "state": state, "error": None, "result": result}
            if fault in ("trickle_job", "huge_event", "redirect_job"):
                self.job_faults[job_id] = fault
            return {"id": job_id, "state": "queued"}

        @app.get("/v1/jobs/{job_id}")
        async def job(job_id: str) -> Any:
            self.polled.add(job_id)
            record = self.jobs.get(job_id)
            fault = self.job_faults.get(job_id)
            if fault == "redirect_job":
                return Response(status_code=302, headers={"location": f"{self.base_url}/other/v1/jobs/{job_id}"})
            if record and fault == "trickle_job":
                return _trickled(record)
            return record if record else JSONResponse({"detail": "Job not found"}, status_code=404)

        @app.get("/v1/jobs/{job_id}/events", response_model=None)
        async def events(job_id: str) -> Any:
            fault = self.job_faults.get(job_id)
            if fault == "lost_record":
                finished = f"event: job_finished\ndata: {json.dumps({'job_id': job_id})}\n\n"
                return StreamingResponse(iter([finished]), media_type="text/event-stream")
            if fault == "huge_event":
                return StreamingResponse(self._endless_line(job_id), media_type="text/event-stream")
            return JSONResponse({"detail": "Not Found"}, status_code=404)

        @app.delete("/v1/jobs/{job_id}")
        async def cancel(job_id: str) -> Any:
            self.cancelled.append(job_id)  # like OmniRT, a job that has started runs on regardless
            record = self.jobs.get(job_id)
            return record if record else JSONResponse({"detail": "Job not found"}, status_code=404)

        @app.get("/outputs/{name}")
        async def outputs(name: str, request: Request) -> Response:
            """A file server for the output dir, on the service's own origin (``OUTPUT_BASE_URL``)."""
            self.downloads.append(request.headers.get("authorization"))
            return FileResponse(self.workdir / "served" / Path(name).name, media_type="video/mp4")

        @app.get("/files/{name}")
        async def files(name: str) -> Response:
            if name == "redirect":
                return Response(status_code=302, headers={"location": "http://127.0.0.2:9/clip.mp4"})
            if name == "stall_download":  # the headers, then nothing
                return StreamingResponse(_silence(), media_type="video/mp4")
            if name == "drip_download":  # a byte now and then, for ever
                return StreamingResponse(_drip(), media_type="video/mp4")
            return Response(b"\0" * (3 * 1024 * 1024), media_type="video/mp4")

        return app

    async def _endless_line(self, job_id: str) -> AsyncIterator[bytes]:
        """An event line that does not end (64 KB every 10 ms, counted in ``event_bytes``) until the
        client hangs up; then the job succeeds."""
        try:
            yield b"event: stage_progress\ndata: "
            for _ in range(3000):
                self.event_bytes += 65536
                yield b"x" * 65536
                await asyncio.sleep(0.01)
        finally:
            self.jobs[job_id]["state"] = "succeeded"


def _trickled(body: dict[str, Any]) -> StreamingResponse:
    """``body`` as JSON, one byte every TRICKLE_SEC: no single read ever waits long."""

    async def trickle() -> AsyncIterator[bytes]:
        for byte in json.dumps(body).encode():
            yield bytes([byte])
            await asyncio.sleep(TRICKLE_SEC)

    return StreamingResponse(trickle(), media_type="application/json")


async def _silence() -> AsyncIterator[bytes]:
    yield b""
    await asyncio.sleep(120)


async def _drip() -> AsyncIterator[bytes]:
    for _ in range(600):
        yield b"\0"
        await asyncio.sleep(0.2)


#: Clips that are the same for every request: an 8192×8192 H.264 of about 200 KB (flat, so it
#: compresses), and a fragmented MP4 (its header counts no frames) ten times a chunk's length.
CANNED: dict[str, dict[str, Any]] = {
    "huge": {"size": (8192, 8192), "frames": 1},
    "unframed": {"size": (512, 512), "frames": 280, "fragmented": True},
}


def write_clip(path: Path, size: tuple[int, int] = (320, 240), frames: int = 28, fragmented: bool = False) -> None:
    """A valid H.264 MP4 of flat frames, 320×240 by default: what a service that is not FlashHead might
    answer. ``fragmented`` writes the moov box empty, as a live muxer does, so no frame count is declared."""
    import av

    options = {"movflags": "frag_keyframe+empty_moov"} if fragmented else {}
    width, height = size
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(frames):
            pixels = np.full((height, width, 3), index * 8 % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
