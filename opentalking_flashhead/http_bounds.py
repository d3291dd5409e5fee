"""Bounds on one HTTP exchange with a service we do not trust: a deadline and size caps.

httpx's timeouts are per read, so an answer trickled a byte at a time never times out; here a
whole exchange (connect, send, every byte of the answer) ends by one deadline. The chunk being
generated sets that deadline for everything done on its behalf (:func:`chunk_deadline`), so the
clip download obeys it without being handed it. Sizes are counted after decompression.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar

import anyio
import httpx

from opentalking_flashhead.errors import ResponseTooLarge

#: Largest JSON answer (job records and results are a few KB).
MAX_JSON_BYTES = 8 * 1024 * 1024
#: Longest line of a job's event stream.
MAX_EVENT_LINE = 1024 * 1024
#: How much of a service's message an error quotes.
MAX_QUOTED_CHARS = 2000

_deadline: ContextVar[float] = ContextVar("opentalking_flashhead_deadline", default=math.inf)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@contextlib.contextmanager
def chunk_deadline(at: float) -> Iterator[None]:
    """Every exchange started inside (tasks spawned there too) ends by ``at`` (``time.monotonic()``)."""
    token = _deadline.set(min(at, _deadline.get()))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextlib.asynccontextmanager
async def by(at: float | None = None) -> AsyncIterator[None]:
    """Run the block until ``at``, by default the chunk's deadline; past it, ``TimeoutError``."""
    end = _deadline.get() if at is None else at
    if math.isinf(end):
        yield
        return
    with anyio.fail_after(end - time.monotonic()):  # asyncio.timeout_at is Python 3.11+
        yield


async def read_capped(response: httpx.Response, limit: int = MAX_JSON_BYTES) -> bytes:
    """The whole decoded body, refused once it passes ``limit`` bytes (a gzip bomb included)."""
    blocks: list[bytes] = []
    size = 0
    async for block in response.aiter_bytes():
        size += len(block)
        if size > limit:
            raise ResponseTooLarge(
                f"{response.request.url} answered more than {limit // (1024 * 1024)} MB "
                f"(HTTP {response.status_code}); is that URL a FlashHead service?"
            )
        blocks.append(block)
    return b"".join(blocks)


async def capped_lines(response: httpx.Response, limit: int = MAX_EVENT_LINE) -> AsyncIterator[str]:
    """The lines of a streamed body; a line longer than ``limit`` characters raises."""
    pending = ""
    async for text in response.aiter_text():
        text = pending + text
        held = "\r" if text.endswith("\r") else ""  # maybe the first half of a \r\n split across reads
        *lines, pending = _LINE_BREAK.split(text[: len(text) - len(held)])
        for line in lines:
            yield line
        pending += held
        if len(pending) > limit:
            raise ResponseTooLarge(f"{response.request.url} sent a line over {limit // 1024} KB")
    if pending:
        yield pending.removesuffix("\r")


def quoted(text: str, limit: int = MAX_QUOTED_CHARS) -> str:
    """A service's message, cut to ``limit`` characters so an error stays readable."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
