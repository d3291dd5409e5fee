"""The bounds every exchange runs under: line splitting across reads, caps, quoting, the chunk deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from opentalking_flashhead import http_bounds
from opentalking_flashhead.errors import ResponseTooLarge


def streamed(*parts: bytes) -> httpx.Response:
    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    return httpx.Response(200, content=body(), request=httpx.Request("GET", "http://svc:1/v1/jobs/j/events"))


async def lines_of(response: httpx.Response, limit: int = http_bounds.MAX_EVENT_LINE) -> list[str]:
    return [line async for line in http_bounds.capped_lines(response, limit)]


async def test_lines_split_across_reads_and_every_line_break() -> None:
    response = streamed(b"event: job_st", b"arted\r\ndata: {}\r", b"\nevent: job_finished\n\nlast")
    assert await lines_of(response) == ["event: job_started", "data: {}", "event: job_finished", "", "last"]


async def test_a_line_over_the_cap_raises() -> None:
    with pytest.raises(ResponseTooLarge, match="a line over 1 KB"):
        await lines_of(streamed(b"event: x\n", b"y" * 600, b"y" * 600), limit=1024)


async def test_a_body_over_the_cap_raises_naming_the_url() -> None:
    with pytest.raises(ResponseTooLarge, match=r"http://svc:1/v1/jobs/j/events answered more than 1 MB"):
        await http_bounds.read_capped(streamed(b"x" * 700_000, b"x" * 700_000), limit=1024 * 1024)


def test_quoted_cuts_long_messages_and_says_how_much() -> None:
    assert http_bounds.quoted("short") == "short"
    assert http_bounds.quoted("x" * 2500, 2000) == "x" * 2000 + "… (500 more characters)"


async def test_the_chunk_deadline_bounds_exchanges_started_in_its_tasks() -> None:
    async def exchange() -> None:
        async with http_bounds.by():
            await asyncio.sleep(30)

    with http_bounds.chunk_deadline(time.monotonic() + 0.05):
        task = asyncio.create_task(exchange())  # a task copies the context: the deadline goes with it
    with pytest.raises(TimeoutError):
        await task
