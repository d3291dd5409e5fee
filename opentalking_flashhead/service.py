"""The HTTP conversation with a FlashHead service (OmniRT ``POST /v1/generate``).

One place knows the protocol's sharp edges: sync runs answer a bare ``500`` on failure, so async
jobs are the default (the only way to read the failure); 4xx carry a ``detail`` we pass on
verbatim; connection failures and 502/503/504 are worth retrying, 4xx never.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from opentalking_flashhead import http_bounds
from opentalking_flashhead.errors import (
    ConfigError,
    FlashHeadError,
    GenerationFailed,
    RequestRejected,
    ResponseTooLarge,
    ServiceStalled,
    ServiceUnavailable,
)
from opentalking_flashhead.probes import HEALTH_PATH, MODELS_PATH
from opentalking_flashhead.retry import Backoff, step
from opentalking_flashhead.settings import Settings, env_name, without_userinfo

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({502, 503, 504})
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_EVENTS = frozenset({"job_finished", "job_failed", "job_cancelled"})
HEALTH_TIMEOUT_SEC = 3.0
#: Backoff between polls of a job (seconds).
POLL_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)
#: Between polls while the job's event stream is open (it wakes us sooner; this is a safety net).
STREAMING_POLL_SEC = 1.0
#: Least time an exchange started late in the progress window gets to answer (seconds).
ANSWER_GRACE_SEC = 1.0
#: Least time any exchange gets, even one sent at its deadline (the poll that reads the final state).
LAST_WORD_SEC = 0.1


def _hint(status: int, detail: str) -> str:
    """What the operator should change, for the rejections users actually meet."""
    if status == 401:
        return f"Set {env_name('api_key')} to a key the service accepts"
    if status == 403:
        return f"Enable the model on the service, or set {env_name('model')} to one it serves"
    if "does not exist locally" in detail:
        return (
            f"The service cannot see our files: set {env_name('shared_remote_dir')} to the path under "
            f"which the service sees {env_name('shared_local_dir')}"
        )
    if "Unsupported config keys" in detail:
        return f"Remove the rejected key from {env_name('config_json')}"
    if "Unknown model" in detail:
        return f"Set {env_name('model')} to a model the service lists at /v1/models"
    return ""


def _detail(response: httpx.Response, body: bytes) -> str:
    """The service's own message (FastAPI's ``detail``, string or list form, else the raw text), cut short."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return http_bounds.quoted(body.decode(errors="replace").strip() or response.reason_phrase)
    detail = parsed.get("detail", parsed) if isinstance(parsed, dict) else parsed
    if isinstance(detail, list):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', item)}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return http_bounds.quoted(detail if isinstance(detail, str) else json.dumps(detail))


def _redirected(url: str, path: str, response: httpx.Response) -> ConfigError:
    """A redirect of an API route: the base URL is not the service's own address (never followed)."""
    target = without_userinfo(str(response.request.url.join(response.headers.get("location", ""))))
    base = target[: -len(path)] if target.endswith(path) else None
    fix = f"set {env_name('base_url')}={base}" if base else f"set {env_name('base_url')} to the service's own address"
    return ConfigError(
        f"{url} answered HTTP {response.status_code}, redirecting to {target}: a FlashHead service answers its API "
        f"directly, so this is a misconfiguration; {fix}"
    )


def _object(response: httpx.Response, body: bytes) -> dict[str, Any]:
    """A success's JSON object; anything else (a proxy's HTML page, a cut-off body) is a hiccup."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise GenerationFailed(
            f"{response.request.url} answered HTTP {response.status_code} with something that is not a JSON "
            f"object: {body[:200]!r}",
            retryable=True,
        )
    return parsed


@dataclass
class _Progress:
    """When the service last showed it is working on this generation (``time.monotonic()``).

    Signs of progress: the request accepted, a job state seen to change, an event (any line of the
    job's event stream), a poll answered while that stream is open. Without any for ``stall_sec``
    the service counts as stalled, however long the chunk's deadline.
    """

    stall_sec: float
    last: float = field(default_factory=time.monotonic)

    def mark(self) -> None:
        self.last = time.monotonic()

    @property
    def window_end(self) -> float:
        return self.last + self.stall_sec


@dataclass
class _EventStream:
    """What a job's event stream has shown so far."""

    open: bool = False
    terminal: bool = False

    @property
    def alive(self) -> bool:
        """Connected and not finished: the service is still working on the job."""
        return self.open and not self.terminal


@dataclass
class Stats:
    """What a client has done over its life: for logs, doctors and load tests."""

    chunks: int = 0
    requests: int = 0  # generate requests sent, repeats included
    retries: int = 0  # generate requests repeated after a transient failure (polls tried again are not)
    still_chunks: int = 0


class ServiceClient:
    """Async HTTP client of one FlashHead service: health, generate (sync or as a job), cancel."""

    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None, stats: Stats | None = None
    ) -> None:
        self.settings = settings
        self.stats = stats or Stats()
        #: Attempts that got no usable answer (refused, reset, timed out, 5xx): a poll's 404 after
        #: some means a restart; after none, a node that never knew the job.
        self.unanswered = 0
        self.http = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=settings.auth_headers,
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_sec, connect=min(10.0, settings.timeout_sec)),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def check_health(self) -> None:
        """Fail fast, naming the URL, when nothing answers at the base URL."""
        url = f"{self.settings.base_url}{HEALTH_PATH}"
        try:
            async with http_bounds.by(time.monotonic() + HEALTH_TIMEOUT_SEC):
                response = await self.http.get(HEALTH_PATH, timeout=HEALTH_TIMEOUT_SEC)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise ServiceUnavailable(
                f"{url} did not answer ({type(exc).__name__}: {exc}); start the service there "
                f"or set {env_name('base_url')}"
            ) from exc
        if response.status_code != 200:
            detail = _detail(response, response.content)
            raise ServiceUnavailable(f"{url} answered HTTP {response.status_code}: {detail}")

    async def model_card(self) -> dict[str, Any]:
        """Our model's entry in ``/v1/models`` (what the service advertises: slice, extensions), or {}
        when it cannot be read: then nothing beyond OmniRT's protocol is used."""
        try:
            async with http_bounds.by(time.monotonic() + HEALTH_TIMEOUT_SEC):
                request = self.http.build_request("GET", MODELS_PATH, timeout=HEALTH_TIMEOUT_SEC)
                response = await self.http.send(request, stream=True)
                async with contextlib.aclosing(response):
                    body = await http_bounds.read_capped(response)
            cards = _object(response, body).get("data") if response.status_code == 200 else None
        except (httpx.HTTPError, TimeoutError, FlashHeadError):
            return {}
        for card in cards if isinstance(cards, list) else []:
            if isinstance(card, dict) and card.get("id") == self.settings.model:
                return card
        return {}

    async def close_session(self, session: str) -> None:
        """Best effort: end the session on a service that advertises the close route."""
        await self._delete(f"/v1/sessions/{session}")

    async def generate(
        self, payload: Mapping[str, Any], deadline: float | None = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Run one generation and return the sync-style body (``outputs`` and ``metadata``).

        ``deadline`` (``time.monotonic()``) bounds it, retries included; by default the timeout.
        A service showing no progress for ``STALL_SEC`` raises :class:`ServiceStalled` sooner.
        ``headers``: our extensions' (session, chunk, inline clip), which OmniRT ignores.
        """
        deadline = min(deadline or math.inf, time.monotonic() + self.settings.timeout_sec)
        progress = _Progress(self.settings.stall_sec)
        sent = dict(headers or {})
        if not self.settings.async_jobs:
            return await self._call(
                "POST", "/v1/generate", deadline, progress, slow_answer=True, json=dict(payload), headers=sent
            )
        submission = {**payload, "async_run": True}
        job = await self._call("POST", "/v1/generate", deadline, progress, json=submission, headers=sent)
        progress.mark()
        if not job.get("id"):
            raise GenerationFailed(f"the service accepted the job but gave it no id: {str(job)[:200]}", retryable=True)
        try:
            return await self._wait_for_job(str(job["id"]), deadline, progress)
        except asyncio.CancelledError:
            await self.cancel_job(str(job["id"]))
            raise

    async def cancel_job(self, job_id: str) -> None:
        """Best effort: the service can only cancel a job that has not started."""
        await self._delete(f"/v1/jobs/{job_id}")

    async def _delete(self, path: str) -> None:
        """A best-effort ``DELETE``, bounded like every exchange; a failure is only logged."""
        try:
            async with http_bounds.by(time.monotonic() + HEALTH_TIMEOUT_SEC):
                await self.http.delete(path, timeout=HEALTH_TIMEOUT_SEC)
        except (httpx.HTTPError, TimeoutError) as exc:
            log.debug("FlashHead DELETE %s failed: %r", path, exc)

    async def _call(
        self, method: str, path: str, deadline: float, progress: _Progress, *, slow_answer: bool = False, **kwargs: Any
    ) -> dict[str, Any]:
        """One exchange, retried on connection failures, 502/503/504 and missing answers; its JSON object.

        Every attempt, the whole answer included, ends by one deadline: ``deadline`` for a sync
        generation (``slow_answer``: it answers when done), else the progress window (at least
        :data:`ANSWER_GRACE_SEC` from the attempt's start), and never sooner than
        :data:`LAST_WORD_SEC`. Retries stop at ``deadline``, or with :class:`ServiceStalled` once the
        service has shown no progress for ``STALL_SEC``.
        """
        url = f"{self.settings.base_url}{path}"
        backoff = Backoff()
        while True:
            give_up = min(deadline, progress.window_end)
            now = time.monotonic()
            answer_by = deadline if slow_answer else min(deadline, max(give_up, now + ANSWER_GRACE_SEC))
            answer_by = max(answer_by, now + LAST_WORD_SEC)
            if method == "POST":
                self.stats.requests += 1
            try:
                async with http_bounds.by(answer_by):
                    timeout = answer_by - time.monotonic()
                    request = self.http.build_request(method, path, timeout=timeout, **kwargs)
                    response = await self.http.send(request, stream=True)
                    async with contextlib.aclosing(response):
                        body = await http_bounds.read_capped(response)
            except (TimeoutError, httpx.TimeoutException) as exc:
                if slow_answer:
                    raise ServiceUnavailable(
                        f"{url} did not answer within {time.monotonic() - now:.1f} s; raise "
                        f"{env_name('timeout_sec')} or {env_name('chunk_deadline_sec')} if generation is slow"
                    ) from exc
                problem = f"{url} did not answer in time"
            except httpx.TransportError as exc:
                problem = f"{url}: {type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if 300 <= status < 400:
                    raise _redirected(url, path, response)
                if status < 300:
                    return _object(response, body)
                detail = _detail(response, body)
                if status not in RETRY_STATUS:
                    self._raise_for(status, detail)
                problem = f"{url} answered HTTP {status}: {detail}"
            self.unanswered += 1
            pause = backoff.next_pause(give_up)
            if pause is None:
                tries = f"gave up after {backoff.failures} attempts"
                if give_up < deadline:
                    raise ServiceStalled(f"{problem} ({tries}: no progress for {progress.stall_sec:g} s)")
                raise ServiceUnavailable(f"{problem} ({tries})")
            log.warning("FlashHead request failed, retrying in %.2f s: %s", pause, problem)
            if method == "POST":  # a poll tried again sends no generate request
                self.stats.retries += 1
            await asyncio.sleep(pause)

    @staticmethod
    def _raise_for(status: int, detail: str) -> None:
        if status >= 500:
            raise GenerationFailed(
                f"HTTP {status} {detail} (a sync run hides the cause; set {env_name('async_jobs')}=1 to see it)"
            )
        raise RequestRejected(status, detail, _hint(status, detail))

    async def _wait_for_job(self, job_id: str, deadline: float, progress: _Progress) -> dict[str, Any]:
        """Wait for a job: woken by its event stream, polled with backoff once the stream is gone.

        While the stream is open a poll is only a safety net, so no request competes with the
        rendering; the stream's end (a terminal event, an error, a missing route) wakes the loop.
        A job that neither changes state nor sends an event for ``STALL_SEC`` is cancelled; if its
        events said it ended, its record was lost (OmniRT with Redis) and the chunk is sent again.
        """
        wake, stream = asyncio.Event(), _EventStream()
        listener = asyncio.create_task(self._listen(job_id, wake, stream, progress))
        trouble, state = self.unanswered, None
        try:
            polls = 0
            while True:
                if listener.done():
                    pause = step(POLL_BACKOFF, polls)
                    polls += 1
                else:
                    pause = STREAMING_POLL_SEC
                now = time.monotonic()
                until = deadline if stream.alive else min(deadline, progress.window_end)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=max(0.0, min(pause, until - now)))
                wake.clear()  # one wake-up per event; if the record lags behind it, polls take over
                try:
                    job = await self._call("GET", f"/v1/jobs/{job_id}", deadline, progress)
                except RequestRejected as exc:
                    if exc.status_code != 404:
                        raise
                    raise self._unknown(job_id, restarted=self.unanswered != trouble) from exc
                if job.get("state") in TERMINAL_STATES:
                    return self._job_result(job)
                if job.get("state") != state or stream.alive:
                    state = job.get("state")
                    progress.mark()
                if time.monotonic() >= deadline:
                    await self.cancel_job(job_id)
                    raise ServiceUnavailable(
                        f"job {job_id} still {state} at its deadline; raise "
                        f"{env_name('timeout_sec')} or {env_name('chunk_deadline_sec')} if generation is slow"
                    )
                if time.monotonic() >= progress.window_end:
                    await self.cancel_job(job_id)
                    raise self._stalled(job_id, state, stream, progress)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, job_id: str, wake: asyncio.Event, stream: _EventStream, progress: _Progress) -> None:
        """Follow the job's SSE stream; set ``wake`` at a terminal event or when the stream ends.

        Every line counts as progress. After the terminal event the stream is read to its end
        (the service closes it then), so its connection goes back to the pool instead of a new one
        being opened for every chunk.
        """
        try:
            async with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
                if response.status_code != 200:
                    return
                stream.open = True
                async for line in http_bounds.capped_lines(response):
                    progress.mark()
                    if line.startswith("event:") and line[6:].strip() in TERMINAL_EVENTS:
                        stream.terminal = True
                        wake.set()
        except (httpx.HTTPError, ResponseTooLarge) as exc:
            log.debug("event stream of job %s ended: %s", job_id, exc)
        finally:
            stream.open = False
            wake.set()

    def _unknown(self, job_id: str, *, restarted: bool) -> GenerationFailed:
        """A poll answered 404: a restart forgot the job (send it again), or a node never knew it."""
        if restarted:
            return GenerationFailed("the service no longer knows this job (restarted?)", job_id)
        return GenerationFailed(
            f"{self.settings.base_url} accepted the job, then answered 404 for it without having been "
            "unreachable in between: its requests reach several servers that do not share jobs (a load "
            "balancer). Start OmniRT with --redis-url so every node sees every job, route each client to "
            f"one node (sticky sessions), or set {env_name('async_jobs')}=0",
            job_id,
            retryable=False,
        )

    @staticmethod
    def _stalled(job_id: str, state: object, stream: _EventStream, progress: _Progress) -> FlashHeadError:
        """The error for a job that showed nothing for ``STALL_SEC`` (it has been cancelled)."""
        if stream.terminal:
            progress.mark()  # the service answers: sending the chunk again is worth it
            return GenerationFailed(
                f"the job's events said it ended, but its record still says {state!r} after "
                f"{progress.stall_sec:g} s (a lost record, as OmniRT's Redis store leaves them); sending it again",
                job_id,
                retryable=True,
            )
        return ServiceStalled(
            f"job {job_id} still {state} with no state change and no event for {progress.stall_sec:g} s; "
            f"cancelled it. Raise {env_name('stall_sec')} if the event stream cannot reach this client"
        )

    @staticmethod
    def _job_result(job: Mapping[str, Any]) -> dict[str, Any]:
        state, job_id = job.get("state"), str(job.get("id"))
        if state == "succeeded":
            result = job.get("result")
            if not isinstance(result, dict):
                raise GenerationFailed(f"job succeeded without a result: {http_bounds.quoted(repr(result))}", job_id)
            return result
        if state == "cancelled":
            raise GenerationFailed("the job was cancelled on the service", job_id)
        raise GenerationFailed(http_bounds.quoted(str(job.get("error") or "the service gave no reason")), job_id)
