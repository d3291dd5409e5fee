"""SoulX-FlashHead for OpenTalking: drive a FlashHead generation service from OpenTalking's runner.

Importing this package is cheap; the client (numpy, av, httpx) loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentalking_flashhead.errors import (
    ClipUnreadable,
    ConfigError,
    DecodeError,
    FlashHeadError,
    GenerationFailed,
    RequestRejected,
    ServiceUnavailable,
)

if TYPE_CHECKING:
    from opentalking_flashhead.client import FlashHeadClient

__version__ = "0.1.0"
__all__ = [
    "ClipUnreadable",
    "ConfigError",
    "DecodeError",
    "FlashHeadClient",
    "FlashHeadError",
    "GenerationFailed",
    "RequestRejected",
    "ServiceUnavailable",
]


def __getattr__(name: str) -> Any:
    if name == "FlashHeadClient":
        from opentalking_flashhead.client import FlashHeadClient

        return FlashHeadClient
    raise AttributeError(name)
