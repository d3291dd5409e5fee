"""The ``opentalking`` entry point: registers the "flashhead" model provider.

Hook implementations only. Nothing heavy is imported here: the client (numpy, av, httpx) loads
when the host first creates one, the availability probe when the host first asks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentalking_flashhead.host.hookspecs import ModelProvider, ProviderStatus, hookimpl

MODEL_ID = "flashhead"
LABEL = "FlashHead (SoulX-FlashHead 1.3B)"


def create_client(*args: Any, **kwargs: Any) -> Any:
    """Build a :class:`~opentalking_flashhead.client.FlashHeadClient` with the host's arguments."""
    from opentalking_flashhead.client import FlashHeadClient

    return FlashHeadClient(*args, **kwargs)


async def check_availability() -> ProviderStatus:
    from opentalking_flashhead.availability import check_service

    return await check_service()


@hookimpl
def register_models(register: Callable[[ModelProvider], None]) -> None:
    register(ModelProvider(MODEL_ID, LABEL, create_client, check_availability))
