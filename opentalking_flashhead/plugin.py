"""The ``opentalking`` entry point: registers the "flashhead" model provider.

Hook implementations only. Nothing heavy is imported here: the client (numpy, av, httpx) loads
when the host first creates one, the availability probe when the host first asks.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentalking_flashhead.host.hookspecs import ModelProvider, ProviderStatus, hookimpl
from opentalking_flashhead.settings import Settings, env_name

if TYPE_CHECKING:
    from opentalking_flashhead.client import FlashHeadClient

MODEL_ID = "flashhead"
LABEL = "FlashHead (SoulX-FlashHead 1.3B)"
#: What the host passes as arguments of its own (``ws_url=``, ``model=``), not as settings.
HOST_ARGUMENTS = frozenset({"ws_url", "model"})


def settings_overrides(host_config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The host's values for the settings no ``OPENTALKING_FLASHHEAD_*`` variable sets.

    A real environment variable still wins, as it does for the host itself; the values travel
    as keyword overrides, so nothing is written to the environment.
    """
    env = os.environ if environ is None else environ
    known = {f.name for f in dataclasses.fields(Settings)} - HOST_ARGUMENTS
    return {
        name: value
        for name, value in host_config.items()
        if name in known and value not in (None, "") and not env.get(env_name(name), "").strip()
    }


def create_client(
    host_config: Mapping[str, Any], /, *, ws_url: str, model: str, config: Mapping[str, Any]
) -> FlashHeadClient:
    """Build a :class:`~opentalking_flashhead.client.FlashHeadClient` with the host's arguments."""
    from opentalking_flashhead.client import FlashHeadClient

    return FlashHeadClient(ws_url, model=model, config=config, **settings_overrides(host_config))


async def check_availability(host_config: Mapping[str, Any]) -> ProviderStatus:
    from opentalking_flashhead.availability import check_service

    return await check_service(host_config)


@hookimpl
def register_models(register: Callable[[ModelProvider], None]) -> None:
    register(ModelProvider(MODEL_ID, LABEL, create_client, check_availability))
