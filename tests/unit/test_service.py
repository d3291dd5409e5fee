"""The HTTP conversation, against httpx.MockTransport: edge cases a real server rarely shows."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from opentalking_flashhead.errors import GenerationFailed, RequestRejected, ServiceUnavailable
from opentalking_flashhead.service import ServiceClient
from opentalking_flashhead.settings import Settings

OK_BODY = {"outputs": [{"kind": "video", "path": "/x.mp4"}], "metadata": {}}


def client(handler: Callable[[httpx.Request], httpx.Response], **overrides: object) -> ServiceClient:
    settings = Settings.load(overrides={"base_url": "http://svc:1", "timeout_sec": 5, **overrides}, environ={})
    return ServiceClient(settings, transport=httpx.MockTransport(handler))


async def test_sync_generate_sends_payload_and_bearer_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=OK_BODY)

    svc = client(handler, async_jobs=False, api_key="k1")
    assert await svc.generate({"task": "audio2video"}) == OK_BODY
    assert seen[0].headers["authorization"] == "Bearer k1"
    assert json.loads(seen[0].content) == {"task": "audio2video"}
    await svc.aclose()


async def test_400_carries_the_services_detail_and_a_hint() -> None:
    detail = "- Input audio does not exist locally: /srv/a.wav"
    svc = client(lambda r: httpx.Response(400, json={"detail": detail}), async_jobs=False)
    with pytest.raises(RequestRejected) as err:
        await svc.generate({})
    assert err.value.status_code == 400 and err.value.detail == detail
    assert "OPENTALKING_FLASHHEAD_SHARED_REMOTE_DIR" in str(err.value)


async def test_422_list_detail_is_flattened() -> None:
    body = {"detail": [{"loc": ["body", "task"], "msg": "Field required", "type": "missing"}]}
    svc = client(lambda r: httpx.Response(422, json=body), async_jobs=False)
    with pytest.raises(RequestRejected, match=r"body\.task: Field required"):
        await svc.generate({})


async def test_401_says_which_variable_to_set() -> None:
    svc = client(lambda r: httpx.Response(401, json={"detail": "Unauthorized"}), async_jobs=False)
    with pytest.raises(RequestRejected, match="OPENTALKING_FLASHHEAD_API_KEY"):
        await svc.generate({})


async def test_plain_500_points_at_async_mode() -> None:
    svc = client(lambda r: httpx.Response(500, text="Internal Server Error"), async_jobs=False)
    with pytest.raises(GenerationFailed, match="OPENTALKING_FLASHHEAD_ASYNC=1"):
        await svc.generate({})


async def test_503_then_success_is_retried() -> None:
    answers = iter([httpx.Response(503, text="busy"), httpx.Response(502), httpx.Response(200, json=OK_BODY)])
    svc = client(lambda r: next(answers), async_jobs=False)
    assert await svc.generate({}) == OK_BODY


async def test_4xx_is_never_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"detail": "no"})

    with pytest.raises(RequestRejected):
        await client(handler, async_jobs=False).generate({})
    assert len(calls) == 1


async def test_connection_refused_until_timeout_is_not_connected() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    svc = client(handler, async_jobs=False, timeout_sec=0.5)
    with pytest.raises(ServiceUnavailable, match="not connected") as err:
        await svc.generate({})
    assert isinstance(err.value, RuntimeError)


async def test_health_failure_names_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ServiceUnavailable, match=r"http://svc:1/healthz.*OPENTALKING_FLASHHEAD_BASE_URL"):
        await client(handler).check_health()


def job_server(states: list[dict], events: int = 404) -> Callable[[httpx.Request], httpx.Response]:
    answers = iter(states)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert json.loads(request.content)["async_run"] is True
            return httpx.Response(200, json={"id": "j1", "state": "queued"})
        if request.url.path.endswith("/events"):
            return httpx.Response(events)
        return httpx.Response(200, json={"id": "j1", **next(answers)})

    return handler


async def test_async_job_is_polled_until_it_succeeds() -> None:
    svc = client(job_server([{"state": "queued"}, {"state": "running"}, {"state": "succeeded", "result": OK_BODY}]))
    assert await svc.generate({}) == OK_BODY


async def test_failed_job_carries_its_error() -> None:
    svc = client(job_server([{"state": "failed", "error": "FlashHead launch failed with exit code 1."}]))
    with pytest.raises(GenerationFailed, match="launch failed") as err:
        await svc.generate({})
    assert err.value.job_id == "j1"


async def test_event_stream_wakes_the_waiter() -> None:
    stream = b"event: job_started\ndata: {}\n\nevent: job_finished\ndata: {}\n\n"
    answers = iter([{"state": "running"}, {"state": "succeeded", "result": OK_BODY}])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"id": "j1", "state": "queued"})
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"id": "j1", **next(answers)})

    assert await client(handler).generate({}) == OK_BODY


async def test_no_poll_competes_with_the_rendering_while_the_event_stream_is_open() -> None:
    import asyncio

    polls, done = [], []

    async def events():
        yield b"event: job_started\ndata: {}\n\n"
        await asyncio.sleep(0.4)  # rendering: longer than the first poll of the fallback schedule
        done.append(True)
        yield b"event: job_finished\ndata: {}\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"id": "j1", "state": "queued"})
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=events(), headers={"content-type": "text/event-stream"})
        polls.append(request)
        state = {"state": "succeeded", "result": OK_BODY} if done else {"state": "running"}
        return httpx.Response(200, json={"id": "j1", **state})

    assert await client(handler).generate({}) == OK_BODY
    assert len(polls) == 1


async def test_a_stream_that_ends_early_hands_over_to_polling() -> None:
    import asyncio

    jobs = job_server([{"state": "running"}, {"state": "running"}, {"state": "succeeded", "result": OK_BODY}])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):  # ends without a terminal event
            return httpx.Response(200, content=b"event: job_started\ndata: {}\n\n")
        return jobs(request)

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await client(handler).generate({}) == OK_BODY
    assert loop.time() - started < 1.0  # polled with backoff, not left to the one-second safety net


async def test_403_is_rejected_at_once_naming_the_model_variable() -> None:
    """Row "misconfiguration" (403): RequestRejected with the service's words, never retried, naming the model."""
    calls = []
    detail = "Model 'soulx-flashhead-1.3b' is not enabled for this server tier policy."

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(403, json={"detail": detail})

    for async_jobs in (False, True):
        with pytest.raises(RequestRejected, match="OPENTALKING_FLASHHEAD_MODEL") as err:
            await client(handler, async_jobs=async_jobs).generate({})
        assert err.value.status_code == 403 and err.value.detail == detail
    assert len(calls) == 2  # one request each: never retried
