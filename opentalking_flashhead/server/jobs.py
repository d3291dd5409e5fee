"""Jobs: OmniRT's job records and events, run as tasks on the event loop, ``capacity`` at a time.

The work itself (``Work``) is a coroutine that never blocks the loop: the renderer and the clip
writer hand their computing to threads. Each job takes at least ``latency`` seconds and
``fail_rate`` of them fail transiently (stand-in knobs, so a client sees a slow or flaky
service's shape). Finished jobs are forgotten after ``keep_sec`` or beyond ``keep_max``, so
memory stays bounded however long the service runs.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

#: The events after which a job never changes again.
TERMINAL_EVENTS = frozenset({"job_finished", "job_failed", "job_cancelled"})
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled"})
#: How long, and how many, finished jobs stay answerable by ``GET /v1/jobs/{id}``.
KEEP_SEC = 600.0
KEEP_MAX = 256


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Job:
    """One generation, shaped like OmniRT's JobRecord."""

    request: dict[str, Any]
    #: What submission decided for the work (resolved inputs, session, output transport).
    ticket: Any = None
    backend: str = "standin"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = "queued"
    result: dict[str, Any] | None = None
    error: str | None = None
    exception: Exception | None = field(default=None, repr=False)
    enqueued_at_ms: int = field(default_factory=_now_ms)
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    fail: bool = False  # a simulated transient failure (``--fail-rate``) is due

    def to_dict(self) -> dict[str, Any]:
        started = self.started_at_ms is not None
        record = {
            "id": self.id,
            "state": self.state,
            "backend": self.backend,
            "request": self.request,
            "error": self.error,
            "trace_id": None,
            "worker_id": self.backend if started else None,
            "enqueued_at_ms": self.enqueued_at_ms,
            "started_at_ms": self.started_at_ms,
            "finished_at_ms": self.finished_at_ms,
            "execution_mode": self.backend if started else None,
            "events": list(self.events),
        }
        if self.result is not None:
            record["result"] = self.result
        return record


Work = Callable[[Job], Awaitable[dict[str, Any]]]


class JobRunner:
    """Runs generations with bounded concurrency and keeps recent jobs for polling."""

    def __init__(
        self,
        work: Work,
        *,
        backend: str,
        latency: float = 0.0,
        capacity: int = 1,
        fail_rate: float = 0.0,
        keep_sec: float = KEEP_SEC,
        keep_max: int = KEEP_MAX,
    ) -> None:
        self.work = work
        self.backend = backend
        self.latency = latency
        self.fail_rate = fail_rate
        self.keep_sec = keep_sec
        self.keep_max = keep_max
        self.random = random.Random()
        self.slots = asyncio.Semaphore(max(1, capacity))
        self.jobs: dict[str, Job] = {}
        self.listeners: set[Callable[[], None]] = set()

    def submit(self, request: dict[str, Any], ticket: Any, *, fail: bool = False) -> tuple[Job, dict[str, Any]]:
        """Queue a generation (``fail``: make its run fail); returns the job and its record as of submission."""
        self._forget_finished()
        job = Job(request, ticket, backend=self.backend, fail=fail)
        self.jobs[job.id] = job
        self._event(job, "job_enqueued")
        record = job.to_dict()
        job.task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        return job, record

    def cancel(self, job: Job) -> Job:
        """Like OmniRT: only a job that has not started can be cancelled."""
        if job.state == "queued" and job.task is not None:
            job.task.cancel()
            job.state, job.finished_at_ms = "cancelled", _now_ms()
            self._event(job, "job_cancelled")
        return job

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after every job event; returns the unsubscriber."""
        self.listeners.add(listener)
        return lambda: self.listeners.discard(listener)

    def draw_failure(self) -> str | None:
        """The simulated transient failure a new generation suffers: ``overload`` (a 503), ``run`` (a failed
        job) or None. One draw per generation, so exactly ``fail_rate`` of them fail, half each way."""
        draw = self.random.random()
        if draw < self.fail_rate / 2:
            return "overload"
        return "run" if draw < self.fail_rate else None

    async def shutdown(self) -> None:
        tasks = [job.task for job in self.jobs.values() if job.task is not None and not job.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _event(self, job: Job, name: str, **data: Any) -> None:
        event = {"event": name, "stage": "job", "timestamp_ms": _now_ms(), "data": {"job_id": job.id, **data}}
        job.events.append(event)
        for listener in list(self.listeners):
            listener()

    async def _run(self, job: Job) -> None:
        async with self.slots:
            job.state, job.started_at_ms = "running", _now_ms()
            self._event(job, "job_started")
            started = time.monotonic()
            try:
                if job.fail:
                    raise RuntimeError(f"{self.backend}: simulated transient failure (--fail-rate)")
                job.result = await self.work(job)
                await asyncio.sleep(max(0.0, self.latency - (time.monotonic() - started)))
            except Exception as exc:
                job.state, job.error, job.exception, job.finished_at_ms = "failed", str(exc), exc, _now_ms()
                self._event(job, "job_failed", error=str(exc))
                return
            job.state, job.finished_at_ms = "succeeded", _now_ms()
            self._event(job, "job_finished")

    def _forget_finished(self) -> None:
        finished = [job for job in self.jobs.values() if job.state in FINISHED_STATES]
        cutoff = _now_ms() - self.keep_sec * 1000
        finished.sort(key=lambda job: job.finished_at_ms or 0)
        excess = len(finished) - self.keep_max
        for index, job in enumerate(finished):
            if index < excess or (job.finished_at_ms or 0) < cutoff:
                del self.jobs[job.id]
