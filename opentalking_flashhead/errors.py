"""The exceptions this package raises, one class per thing a caller can act on.

Every class derives from :class:`FlashHeadError`, so ``except FlashHeadError`` catches all of
them; the subclasses say *what* went wrong so a caller can pick a fix (reconfigure, retry,
reconnect) without parsing messages. ``retryable`` says whether trying the same chunk again can
help (a hiccup) or not (a misconfiguration, or a service we refuse to trust).
"""

from __future__ import annotations


class FlashHeadError(Exception):
    """Base class of every error raised by opentalking-flashhead.

    ``retryable`` defaults per class; pass it to say otherwise for one occurrence.
    """

    retryable = False

    def __init__(self, *args: object, retryable: bool | None = None) -> None:
        super().__init__(*args)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(FlashHeadError, ValueError):
    """A setting is missing or malformed; the message names the variable and what it accepts."""


class ServiceUnavailable(FlashHeadError, RuntimeError):
    """The service could not be reached (or kept failing) within the timeout.

    The message always contains ``not connected``: OpenTalking's runner reconnects and retries
    once when a ``RuntimeError`` says so.
    """

    retryable = True

    def __init__(self, message: str) -> None:
        super().__init__(f"FlashHead service not connected: {message}")


class ServiceStalled(ServiceUnavailable):
    """The service showed no progress for ``STALL_SEC`` (no answer, or a job that neither changed nor
    sent an event): the chunk gets still frames at once instead of waiting for its deadline."""


class ResponseTooLarge(FlashHeadError):
    """An answer broke a size cap (JSON body, event line): a broken or hostile service, not a hiccup."""


class RequestRejected(FlashHeadError):
    """The service refused the request (4xx); ``detail`` is the service's own message."""

    def __init__(self, status_code: int, detail: str, hint: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        text = f"FlashHead service rejected the request (HTTP {status_code}): {detail}"
        super().__init__(f"{text}. {hint}" if hint else text)


class GenerationFailed(FlashHeadError):
    """The service accepted the request but generation failed; ``error`` is the job's message."""

    #: Job errors that mean the service is misconfigured: trying again cannot help.
    PERMANENT = ("not configured", "not found", "does not exist", "No such file", "is relative")

    def __init__(self, error: str, job_id: str | None = None, *, retryable: bool | None = None) -> None:
        self.error = error
        self.job_id = job_id
        where = f" (job {job_id})" if job_id else ""
        if retryable is None:
            retryable = not any(marker in error for marker in self.PERMANENT)
        super().__init__(f"FlashHead generation failed{where}: {error}", retryable=retryable)


class ClipUnreadable(FlashHeadError):
    """The clip cannot or must not be read here (path mapping, origin, size); retryable only when a
    download failed on the way."""


class DecodeError(FlashHeadError):
    """The clip was read but is truncated, empty, not a video, or far too long: worth another try
    (unless it can never be right, like frames of another size)."""

    retryable = True
