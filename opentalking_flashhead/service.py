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
from dataclasses import dataclass
from typing import Any

import httpx

from opentalking_flashhead.errors import GenerationFailed, RequestRejected, ServiceUnavailable
from opentalking_flashhead.settings import Settings, env_name

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({502, 503, 504})
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_EVENTS = frozenset({"job_finished", "job_failed", "job_cancelled"})
HEALTH_TIMEOUT_SEC = 3.0
#: Backoff between retries of a failed connection, and between polls of a job (seconds).
RETRY_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0)
POLL_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)
#: Between polls while the job's event stream is open (it wakes us sooner; this is a safety net).
STREAMING_POLL_SEC = 1.0


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


def _detail(response: httpx.Response) -> str:
    """The service's own message: FastAPI's ``detail`` (string or list form), else the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', item)}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    return detail if isinstance(detail, str) else json.dumps(detail)


def _object(response: httpx.Response) -> dict[str, Any]:
    """A success's JSON object; anything else (a proxy's HTML page, a cut-off body) is a hiccup."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GenerationFailed(
            f"{response.request.url} answered HTTP {response.status_code} with something that is not a JSON "
            f"object: {response.text[:200]!r}",
            retryable=True,
        )
    return body


@dataclass
class Stats:
    """What a client has done over its life: for logs, doctors and load tests."""

    chunks: int = 0
    requests: int = 0  # generate requests sent, repeats included
    retries: int = 0  # requests (or whole chunks) repeated after a transient failure
    still_chunks: int = 0


class ServiceClient:
    """Async HTTP client of one FlashHead service: health, generate (sync or as a job), cancel."""

    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None, stats: Stats | None = None
    ) -> None:
        self.settings = settings
        self.stats = stats or Stats()
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.http = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_sec, connect=min(10.0, settings.timeout_sec)),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def check_health(self) -> None:
        """Fail fast, naming the URL, when nothing answers at the base URL."""
        url = f"{self.settings.base_url}/healthz"
        try:
            response = await self.http.get("/healthz", timeout=HEALTH_TIMEOUT_SEC)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"{url} did not answer ({type(exc).__name__}: {exc}); start the service there "
                f"or set {env_name('base_url')}"
            ) from exc
        if response.status_code != 200:
            raise ServiceUnavailable(f"{url} answered HTTP {response.status_code}: {_detail(response)}")

    async def model_card(self) -> dict[str, Any]:
        """Our model's entry in ``/v1/models`` (what the service advertises: slice, extensions), or {}
        when it cannot be read: then nothing beyond OmniRT's protocol is used."""
        try:
            response = await self.http.get("/v1/models", timeout=HEALTH_TIMEOUT_SEC)
            cards = response.json().get("data") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return {}
        for card in cards if isinstance(cards, list) else []:
            if isinstance(card, dict) and card.get("id") == self.settings.model:
                return card
        return {}

    async def close_session(self, session: str) -> None:
        """Best effort: end the session on a service that advertises the close route."""
        try:
            await self.http.delete(f"/v1/sessions/{session}", timeout=HEALTH_TIMEOUT_SEC)
        except httpx.HTTPError as exc:
            log.debug("closing FlashHead session %s failed: %s", session, exc)

    async def generate(
        self, payload: Mapping[str, Any], deadline: float | None = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Run one generation and return the sync-style body (``outputs`` and ``metadata``).

        ``deadline`` (``time.monotonic()``) bounds it, retries included; by default the timeout.
        ``headers``: our extensions' (session, chunk, inline clip), which OmniRT ignores.
        """
        deadline = min(deadline or math.inf, time.monotonic() + self.settings.timeout_sec)
        extra = {"headers": dict(headers)} if headers else {}
        if not self.settings.async_jobs:
            return _object(await self._request("POST", "/v1/generate", deadline, json=dict(payload), **extra))
        submission = {**payload, "async_run": True}
        job = _object(await self._request("POST", "/v1/generate", deadline, json=submission, **extra))
        if not job.get("id"):
            raise GenerationFailed(f"the service accepted the job but gave it no id: {str(job)[:200]}", retryable=True)
        try:
            return await self._wait_for_job(str(job["id"]), deadline)
        except asyncio.CancelledError:
            await self.cancel_job(str(job["id"]))
            raise

    async def cancel_job(self, job_id: str) -> None:
        """Best effort: the service can only cancel a job that has not started."""
        try:
            await self.http.delete(f"/v1/jobs/{job_id}", timeout=HEALTH_TIMEOUT_SEC)
        except httpx.HTTPError as exc:
            log.debug("cancelling FlashHead job %s failed: %s", job_id, exc)

    async def _request(self, method: str, path: str, deadline: float, **kwargs: Any) -> httpx.Response:
        """Send with retries on connection failures and 502/503/504 until ``deadline``."""
        attempt = 0
        while True:
            timeout = max(0.1, deadline - time.monotonic())
            if method == "POST":
                self.stats.requests += 1
            try:
                response = await self.http.request(method, path, timeout=timeout, **kwargs)
            except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
                raise ServiceUnavailable(
                    f"{self.settings.base_url}{path} did not answer within {timeout:.1f} s; raise "
                    f"{env_name('timeout_sec')} or {env_name('chunk_deadline_sec')} if generation is slow"
                ) from exc
            except httpx.TransportError as exc:
                problem = f"{self.settings.base_url}{path}: {type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                detail = _detail(response)
                if response.status_code not in RETRY_STATUS:
                    self._raise_for(response.status_code, detail)
                problem = f"{self.settings.base_url}{path} answered HTTP {response.status_code}: {detail}"
            pause = RETRY_BACKOFF[min(attempt, len(RETRY_BACKOFF) - 1)]
            if time.monotonic() + pause >= deadline:
                raise ServiceUnavailable(f"{problem} (gave up after {attempt + 1} attempts)")
            log.warning("FlashHead request failed, retrying in %.2f s: %s", pause, problem)
            self.stats.retries += 1
            await asyncio.sleep(pause)
            attempt += 1

    @staticmethod
    def _raise_for(status: int, detail: str) -> None:
        if status >= 500:
            raise GenerationFailed(
                f"HTTP {status} {detail} (a sync run hides the cause; set {env_name('async_jobs')}=1 to see it)"
            )
        raise RequestRejected(status, detail, _hint(status, detail))

    async def _wait_for_job(self, job_id: str, deadline: float) -> dict[str, Any]:
        """Wait for a job: woken by its event stream, polled with backoff once the stream is gone.

        While the stream is open a poll is only a safety net, so no request competes with the
        rendering; the stream's end (a terminal event, an error, a missing route) wakes the loop.
        """
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(job_id, wake))
        try:
            polls = 0
            while True:
                if listener.done():
                    pause = POLL_BACKOFF[min(polls, len(POLL_BACKOFF) - 1)]
                    polls += 1
                else:
                    pause = STREAMING_POLL_SEC
                remaining = deadline - time.monotonic()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=max(0.0, min(pause, remaining)))
                wake.clear()  # one wake-up per event; if the record lags behind it, polls take over
                try:
                    job = _object(await self._request("GET", f"/v1/jobs/{job_id}", deadline))
                except RequestRejected as exc:
                    if exc.status_code != 404:
                        raise
                    raise GenerationFailed("the service no longer knows this job (restarted?)", job_id) from exc
                if job.get("state") in TERMINAL_STATES:
                    return self._job_result(job)
                if remaining <= 0:
                    await self.cancel_job(job_id)
                    raise ServiceUnavailable(
                        f"job {job_id} still {job.get('state')} at its deadline; raise "
                        f"{env_name('timeout_sec')} or {env_name('chunk_deadline_sec')} if generation is slow"
                    )
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, job_id: str, wake: asyncio.Event) -> None:
        """Follow the job's SSE stream; set ``wake`` at a terminal event or when the stream ends.

        After the terminal event the stream is read to its end (the service closes it then), so
        its connection goes back to the pool instead of a new one being opened for every chunk.
        """
        try:
            async with self.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
                if response.status_code != 200:
                    return
                async for line in response.aiter_lines():
                    if line.startswith("event:") and line[6:].strip() in TERMINAL_EVENTS:
                        wake.set()
        except httpx.HTTPError as exc:
            log.debug("event stream of job %s ended: %s", job_id, exc)
        finally:
            wake.set()

    @staticmethod
    def _job_result(job: Mapping[str, Any]) -> dict[str, Any]:
        state, job_id = job.get("state"), str(job.get("id"))
        if state == "succeeded":
            result = job.get("result")
            if not isinstance(result, dict):
                raise GenerationFailed(f"job succeeded without a result: {result!r}", job_id)
            return result
        if state == "cancelled":
            raise GenerationFailed("the job was cancelled on the service", job_id)
        raise GenerationFailed(str(job.get("error") or "the service gave no reason"), job_id)
