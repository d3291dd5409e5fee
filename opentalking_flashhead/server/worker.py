"""``worker``: the resident runtime behind OmniRT's gRPC worker protocol, one process per GPU.

An OmniRT server in front (``omnirt serve``, with Redis for several fronts) keeps the job API (async
jobs, events, auth) and hands each FlashHead request whose ``config.resident_target`` names this
worker to it over gRPC (``Health``, ``RunSync``); the clip comes back inline. OmniRT's own server,
protocol and resident-worker modules carry the calls (``omnirt.engine.grpc_transport``,
``omnirt.workers.remote``); this module only supplies the worker they run: the same
``ResidentRuntime`` as ``serve``, sessions recognised from the request's ``output_dir`` layout and
reference (``identity.session_of``), the clip written by the server room's clip writer.

Needs the ``[worker]`` extra (omnirt, grpcio); nothing here is imported by the plugin or the client.
The gRPC ports have no authentication: keep them on a private network.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from opentalking_flashhead.server.clip import SIZE, read_mono_16k, write_clip
from opentalking_flashhead.server.resident.identity import session_of
from opentalking_flashhead.server.resident.options import ModelOptions, StartupError, preflight
from opentalking_flashhead.server.validation import MODEL_ID, TASK

if TYPE_CHECKING:
    from omnirt.core.types import GenerateRequest, GenerateResult

    from opentalking_flashhead.server.resident.runtime import ResidentRuntime

#: gRPC's fork handlers make subprocesses started next to a gRPC server fail at random (measured on
#: OmniRT's workers: 12-23 % of runs until it was off). Read when grpc is imported, so set it first.
GRPC_ENV = {"GRPC_ENABLE_FORK_SUPPORT": "0"}
#: How our client names its session dirs (``storage.SESSION_PREFIX``; the service side does not import it).


def _prepare_grpc() -> None:
    for name, value in GRPC_ENV.items():
        os.environ.setdefault(name, value)


class FlashHeadResidentWorker:
    """OmniRT's ``ResidentModelWorker`` protocol over a ``ResidentRuntime``.

    gRPC calls arrive on the server's thread pool; the runtime is asynchronous, so it lives on one
    event loop thread of its own and each call waits for its render there.
    """

    def __init__(self, runtime: ResidentRuntime, scratch_root: Path, worker_id: str) -> None:
        self.runtime = runtime
        self.worker_id = worker_id
        self.scratch_root = scratch_root
        self.last_error: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flashhead-worker-loop", daemon=True)
        self._inflight = 0
        self._count_lock = threading.Lock()

    def start(self) -> None:
        """Start the event loop; the model is loaded separately (``load``), while Health answers."""
        if not self._thread.is_alive():
            self._thread.start()

    def load(self) -> None:
        self.runtime.load()

    def ready(self) -> bool:
        return self.runtime.ready

    def submit(self, request: GenerateRequest) -> GenerateResult:
        with self._count_lock:
            self._inflight += 1
        try:
            return self._generate(request)
        except Exception as exc:
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            raise
        finally:
            with self._count_lock:
                self._inflight -= 1

    def shutdown(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.runtime.aclose(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    @property
    def inflight(self) -> int:
        return self._inflight

    def _generate(self, request: GenerateRequest) -> GenerateResult:
        from omnirt.core.artifact_transport import pack_artifact
        from omnirt.core.types import Artifact, GenerateResult, RunReport

        if request.task != TASK or request.model != MODEL_ID:
            raise ValueError(f"this worker serves {TASK} with {MODEL_ID}, not {request.task} with {request.model}")
        if not self.runtime.ready:
            raise RuntimeError("the FlashHead model is still loading on this worker; retry once Health says ready")
        model_type = request.config.get("model_type")
        if model_type is not None and model_type != self.runtime.options.model_type:
            raise ValueError(
                f"this worker runs model_type {self.runtime.options.model_type!r}, not {model_type!r}; "
                "send the request to a worker started with that --model-type"
            )
        transport = str(request.config.get("artifact_transport") or "inline_bytes")
        if transport != "inline_bytes":
            raise ValueError(
                f"artifact_transport {transport!r}: this worker returns clips inline only (inline_bytes), "
                "so it needs no storage shared with the coordinator for its output"
            )
        image, audio = (str(request.inputs.get(key) or "") for key in ("image", "audio"))
        if not image or not audio:
            raise ValueError("inputs.image and inputs.audio are required (paths this worker can read)")
        output_dir = request.config.get("output_dir")
        session, chunk = session_of(str(output_dir) if output_dir else None, image, None, None)
        started = time.perf_counter()
        pcm = read_mono_16k(Path(audio))
        render = self.runtime.render(
            image=Path(image), audio=pcm.astype(np.float32) / 32768.0, session=session, chunk=chunk
        )
        frames = asyncio.run_coroutine_threadsafe(render, self._loop).result()
        rendered = time.perf_counter()
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=self.scratch_root, prefix="clip-"))
        try:
            seed = int(request.config.get("seed", self.runtime.options.seed))
            save_file = scratch / f"{MODEL_ID}-{seed}-{int(time.time() * 1000)}.mp4"
            count = write_clip(save_file, frames, pcm)
            clip = Artifact(
                kind="video", path=str(save_file), mime="video/mp4", width=SIZE, height=SIZE, num_frames=count
            )
            artifact = pack_artifact(clip, transport="inline_bytes")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        timings = {"render_ms": (rendered - started) * 1000, "total_ms": (time.perf_counter() - started) * 1000}
        metadata = RunReport(
            run_id=uuid.uuid4().hex,
            task=TASK,
            model=MODEL_ID,
            backend="resident",
            timings=timings,
            worker_id=self.worker_id,
            config_resolved={
                **self.runtime.describe(),
                "worker_id": self.worker_id,
                "session": session is not None,
                "chunk": chunk,
            },
        )
        return GenerateResult(outputs=[artifact], metadata=metadata)


def worker_service(worker: FlashHeadResidentWorker) -> Any:
    """OmniRT's ``ResidentWorkerService`` for ``worker``, with the status its gRPC ``Health`` reports."""
    from omnirt.workers.remote import ResidentWorkerService

    class FlashHeadWorkerService(ResidentWorkerService):
        def worker_status(self) -> dict[str, Any]:
            ready = worker.ready()
            return {
                "state": "ready" if ready else "loading",
                "model_loaded": ready,
                "inflight": worker.inflight,
                "queue_depth": max(0, worker.inflight - 1),
                "last_error": worker.last_error,
                "worker_id": worker.worker_id,
            }

    return FlashHeadWorkerService(worker, worker_id=worker.worker_id)


def serve_worker(options: ModelOptions, host: str, port: int) -> None:
    """Serve OmniRT's worker protocol until interrupted; StartupError when the model cannot be found or loaded.

    Start-up order as ``serve``: preflight before anything listens, then listen (Health says
    ``loading``), then load and warm up; ``RunSync`` before that is refused with a clear error.
    """
    preflight(options)
    _prepare_grpc()
    from omnirt.engine.grpc_transport import GrpcWorkerServer

    from opentalking_flashhead.server.resident.runtime import ResidentRuntime

    worker_id = f"flashhead-{options.model_type}-{host}:{port}"
    scratch = Path(tempfile.gettempdir()) / f"flashhead-worker-{port}"
    worker = FlashHeadResidentWorker(ResidentRuntime(options), scratch, worker_id)
    server = GrpcWorkerServer(worker_service(worker), host=host, port=port)
    worker.start()
    server.start()
    print(
        f"FlashHead {options.model_type} worker on {options.device} ({options.dtype}): loading; gRPC on {host}:{port} "
        "(no authentication: keep it on a private network)",
        flush=True,
    )
    try:
        worker.load()
    except Exception as exc:
        server.stop()
        raise StartupError(f"loading the model failed: {exc}") from exc
    print(f"  {options.model_type} loaded and warmed up: ready as {worker_id}", flush=True)
    try:
        server.wait_for_termination()
    finally:
        server.stop(grace=1.0)
        worker.shutdown()
