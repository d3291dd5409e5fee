"""One thread runs every slice of the pipeline, one at a time, taking turns across streams.

A job is a generator that yields after each step (opening a face, one slice) and returns its frames;
the thread runs one step of the first stream in the ring, then moves that stream to the back, so a
long chunk of one session never holds up the others' slices. A stream's own jobs run in chunk order.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

Job = Generator[None, None, np.ndarray]


class OutOfOrder(Exception):
    """A chunk came after a later chunk of its stream had started."""


@dataclass(order=True)
class _Entry:
    order: int
    job: Job = field(compare=False)
    future: Future[np.ndarray] = field(compare=False, default_factory=Future)
    started: bool = field(compare=False, default=False)


class SliceWorker:
    """The pipeline's only user: a daemon thread fed by ``submit``."""

    def __init__(self, name: str = "flashhead-slices") -> None:
        self._queues: dict[str, list[_Entry]] = {}
        self._ring: deque[str] = deque()  # streams with work, in turn order; the running one is not in it
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, stream: str, order: int, job: Job) -> Future[np.ndarray]:
        """Queue ``job`` on ``stream`` by ``order`` (its chunk index) and return the future of its frames."""
        entry = _Entry(order, job)
        with self._cond:
            if self._closed:
                job.close()
                raise RuntimeError("the resident runtime is closed")
            queue = self._queues.get(stream)
            if queue is None:
                self._queues[stream] = [entry]
                self._ring.append(stream)
            elif queue[0].started and order < queue[0].order:
                job.close()
                raise OutOfOrder(f"chunk {queue[0].order} of this session has started")
            else:
                bisect.insort(queue, entry, lo=1 if queue[0].started else 0)
            self._cond.notify()
        return entry.future

    def drop(self, stream: str, error: Exception) -> None:
        """Fail the stream's jobs that have not started (one running finishes)."""
        with self._cond:
            queue = self._queues.get(stream, [])
            waiting = [entry for entry in queue if not entry.started]
            queue[:] = [entry for entry in queue if entry.started]
            if not queue and stream in self._ring:
                self._ring.remove(stream)
                del self._queues[stream]
        for entry in waiting:
            _fail(entry, error)

    def close(self) -> None:
        """Stop after the step running now; every unfinished job fails. Blocks until the thread ends."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ring and not self._closed:
                    self._cond.wait()
                if self._closed:
                    break
                stream = self._ring.popleft()
                entry = self._queues[stream][0]
                runs = entry.started or entry.future.set_running_or_notify_cancel()  # False: cancelled, unstarted
                entry.started = True
            if runs:
                finished = self._step(entry)
            else:
                entry.job.close()
                finished = True
            with self._cond:
                queue = self._queues[stream]
                if finished:
                    queue.pop(0)
                if queue:
                    self._ring.append(stream)
                else:
                    del self._queues[stream]
        self._fail_all()

    @staticmethod
    def _step(entry: _Entry) -> bool:
        """One step of the entry's job; True when the job is over (its future then holds the outcome)."""
        try:
            next(entry.job)
        except StopIteration as stop:
            entry.future.set_result(stop.value)
            return True
        except Exception as exc:
            entry.future.set_exception(exc)
            return True
        return False

    def _fail_all(self) -> None:
        with self._cond:
            entries = [entry for queue in self._queues.values() for entry in queue]
            self._queues.clear()
            self._ring.clear()
        for entry in entries:
            _fail(entry, RuntimeError("the resident runtime closed before this chunk was rendered"))


def _fail(entry: _Entry, error: Exception) -> None:
    """End a job that will not run (on): its generator closed (so it can roll back), its future failed
    unless whoever waited for it cancelled it."""
    entry.job.close()
    if entry.started or entry.future.set_running_or_notify_cancel():
        entry.future.set_exception(error)
