"""The one backoff schedule and give-up rule the client and the HTTP layer share."""

from __future__ import annotations

import time

from opentalking_flashhead.retry import RETRY_BACKOFF, Backoff, step


def test_pauses_follow_the_schedule_and_repeat_its_last() -> None:
    assert [step((1.0, 2.0), n) for n in range(4)] == [1.0, 2.0, 2.0, 2.0]
    backoff = Backoff()
    far = time.monotonic() + 3600
    assert [backoff.next_pause(far) for _ in range(6)] == [*RETRY_BACKOFF, RETRY_BACKOFF[-1]]
    assert backoff.failures == 6


def test_it_gives_up_when_the_next_attempt_would_start_past_the_deadline() -> None:
    backoff = Backoff((5.0,))
    assert backoff.next_pause(time.monotonic() + 1.0) is None
    assert backoff.failures == 1  # the failure still counts: "gave up after 1 attempts"
