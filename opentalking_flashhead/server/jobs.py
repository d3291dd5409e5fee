"""Jobs of the stand-in: OmniRT's job records and events, run on a pool as large as the fake GPU.

``capacity`` generations run at once (the rest wait, queued, and can be cancelled), and each
takes at least ``latency`` seconds, so a client or benchmark sees a slow service's shape.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentalking_flashhead.standin.clip import SIZE, render_clip
from opentalking_flashhead.standin.validation import MODEL_ID

#: The events after which a job never changes again.
TERMINAL_EVENTS = frozenset({"job_finished", "job_failed", "job_cancelled"})
BACKEND = "standin"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Job:
    """One generation, shaped like OmniRT's JobRecord."""

    request: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "queued"
    result: dict[str, Any] | None = None
    error: str | None = None
    enqueued_at_ms: int = field(default_factory=_now_ms)
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    future: Future[None] | None = field(default=None, repr=False)
    fail: bool = False  # a simulated transient failure (``--fail-rate``) is due

    def to_dict(self) -> dict[str, Any]:
        record = {
            "id": self.id,
            "state": self.state,
            "backend": BACKEND,
            "request": self.request,
            "error": self.error,
            "trace_id": None,
            "worker_id": "standin" if self.started_at_ms else None,
            "enqueued_at_ms": self.enqueued_at_ms,
            "started_at_ms": self.started_at_ms,
            "finished_at_ms": self.finished_at_ms,
            "execution_mode": "standin" if self.started_at_ms else None,
            "events": list(self.events),
        }
        if self.result is not None:
            record["result"] = self.result
        return record


class JobRunner:
    """Runs stand-in generations with bounded concurrency and keeps every job for polling."""

    def __init__(self, output_dir: Path, *, latency: float = 0.0, capacity: int = 1, fail_rate: float = 0.0) -> None:
        self.output_dir = output_dir
        self.latency = latency
        self.fail_rate = fail_rate
        self.random = random.Random()
        self.pool = ThreadPoolExecutor(max_workers=max(1, capacity), thread_name_prefix="standin")
        self.jobs: dict[str, Job] = {}
        self.listeners: set[Callable[[], None]] = set()
        self._lock = threading.Lock()
        self._last_ms = 0

    def submit(self, request: dict[str, Any], *, fail: bool = False) -> tuple[Job, dict[str, Any]]:
        """Queue a generation (``fail``: make its run fail); returns the job and its record as of submission."""
        job = Job(request, fail=fail)
        self.jobs[job.id] = job
        self._event(job, "job_enqueued")
        record = job.to_dict()
        job.future = self.pool.submit(self._run, job)
        return job, record

    def cancel(self, job: Job) -> Job:
        """Like OmniRT: only a job that has not started can be cancelled."""
        if job.state == "queued" and job.future is not None and job.future.cancel():
            job.state, job.finished_at_ms = "cancelled", _now_ms()
            self._event(job, "job_cancelled")
        return job

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (from a worker thread) after every job event; returns the unsubscriber."""
        self.listeners.add(listener)
        return lambda: self.listeners.discard(listener)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _event(self, job: Job, name: str, **data: Any) -> None:
        event = {"event": name, "stage": "job", "timestamp_ms": _now_ms(), "data": {"job_id": job.id, **data}}
        job.events.append(event)
        for listener in list(self.listeners):
            listener()

    def _run(self, job: Job) -> None:
        job.state, job.started_at_ms = "running", _now_ms()
        self._event(job, "job_started")
        try:
            job.result = self._generate(job)
        except Exception as exc:
            job.state, job.error, job.finished_at_ms = "failed", str(exc), _now_ms()
            self._event(job, "job_failed", error=str(exc))
            raise
        job.state, job.finished_at_ms = "succeeded", _now_ms()
        self._event(job, "job_finished")

    def draw_failure(self) -> str | None:
        """The simulated transient failure a new generation suffers: ``overload`` (a 503), ``run`` (a failed
        job) or None. One draw per generation, so exactly ``fail_rate`` of them fail, half each way."""
        draw = self.random.random()
        if draw < self.fail_rate / 2:
            return "overload"
        return "run" if draw < self.fail_rate else None

    def _generate(self, job: Job) -> dict[str, Any]:
        started = time.monotonic()
        if job.fail:
            raise RuntimeError("stand-in: simulated transient failure (--fail-rate)")
        request = job.request
        config = request.get("config") or {}
        output_dir = Path(str(config.get("output_dir") or self.output_dir))
        if not output_dir.is_absolute():
            raise ValueError(
                f"output_dir {str(output_dir)!r} is relative; the model runs in another working directory, "
                "so give an absolute path both sides can reach"
            )
        output_dir.mkdir(parents=True, exist_ok=True)
        save_file = output_dir / f"{MODEL_ID}-{int(config.get('seed', 9999))}-{self._unique_ms()}.mp4"
        inputs = request["inputs"]
        frames = render_clip(
            Path(inputs["image"]), Path(inputs["audio"]), save_file, model_type=str(config.get("model_type", "pro"))
        )
        time.sleep(max(0.0, self.latency - (time.monotonic() - started)))
        artifact = {
            "kind": "video",
            "path": str(save_file),
            "mime": "video/mp4",
            "width": SIZE,
            "height": SIZE,
            "num_frames": frames,
            "transport": "path",
            "data_b64": None,
        }
        return {
            "outputs": [artifact],
            "metadata": {"task": request["task"], "model": MODEL_ID, "backend": BACKEND, "standin": True},
        }

    def _unique_ms(self) -> int:
        """OmniRT names clips by millisecond; two at once must not share a name here."""
        with self._lock:
            self._last_ms = max(_now_ms(), self._last_ms + 1)
            return self._last_ms
