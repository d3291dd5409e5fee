"""Bring registered model providers into today's unmodified OpenTalking 0.1.x.

OpenTalking 0.1.x has no plugin loader, but it has two seams that work (found by running it):

* the worker and video creation re-import ``opentalking.providers.synthesis.flashhead
  .FlashHeadWSClient`` for every session/job, so that attribute decides the client class;
* ``/models`` and the session gate go through ``availability.resolve_model_statuses``
  (``apps.api.routes.models`` holds its own reference to it).

Each adjustment is idempotent, happens in whichever process imports the module (unified, API
or worker), and touches only models a plugin provides and only on the backends where the host
would use the client we replace. The host's own registry is never written to (it raises on a
duplicate key).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from opentalking_flashhead.host.manager import PluginSet, load_plugins

log = logging.getLogger(__name__)

CLIENT_MODULE = "opentalking.providers.synthesis.flashhead"
AVAILABILITY_MODULE = "opentalking.providers.synthesis.availability"
MODELS_ROUTE_MODULE = "apps.api.routes.models"
#: Only this model has a client seam in OpenTalking 0.1.x.
CLIENT_ATTRIBUTES = {"flashhead": "FlashHeadWSClient"}
#: Backends on which the host builds the client we replace (mock and local keep their own).
REMOTE_BACKENDS = frozenset({"direct_ws", "omnirt"})
_MARK = "__opentalking_plugins__"


@functools.lru_cache(maxsize=1)
def plugins() -> PluginSet:
    """The plugins of this process, loaded once."""
    loaded = load_plugins()
    log.info("opentalking plugins: %s", ", ".join(f"{r.name}={r.status}" for r in loaded.records) or "none")
    return loaded


def on_import(fullname: str, module: ModuleType) -> None:
    """Adjust one just-imported host module (called by the autoload finder)."""
    if fullname == CLIENT_MODULE:
        _swap_clients(module)
    elif fullname == AVAILABILITY_MODULE:
        _wrap_statuses(module)
        route = sys.modules.get(MODELS_ROUTE_MODULE)
        if route is not None:
            _share_statuses(route, module)
    elif fullname == MODELS_ROUTE_MODULE:
        _share_statuses(module, sys.modules.get(AVAILABILITY_MODULE))


def apply() -> None:
    """Adjust every seam module already imported; for launchers and hosts without the ``.pth``."""
    for name in (CLIENT_MODULE, AVAILABILITY_MODULE, MODELS_ROUTE_MODULE):
        module = sys.modules.get(name)
        if module is not None:
            on_import(name, module)


def _swap_clients(module: ModuleType) -> None:
    for model_id, attribute in CLIENT_ATTRIBUTES.items():
        provider = plugins().providers.get(model_id)
        if provider is not None and getattr(module, attribute, None) is not provider.create_client:
            setattr(module, attribute, provider.create_client)
            log.info("opentalking plugins: %s sessions use %s", model_id, provider.label)


def _wrap_statuses(module: ModuleType) -> None:
    original = module.resolve_model_statuses
    if getattr(original, _MARK, False) or not plugins().providers:
        return

    @functools.wraps(original)
    async def resolve_model_statuses(settings: Any) -> list[Any]:
        return [await _provider_status(status) for status in await original(settings)]

    setattr(resolve_model_statuses, _MARK, True)
    module.resolve_model_statuses = resolve_model_statuses


async def _provider_status(status: Any) -> Any:
    provider = plugins().providers.get(status.id)
    if provider is None or status.backend not in REMOTE_BACKENDS:
        return status
    check: Callable[[], Awaitable[Any]] = provider.check_availability
    try:
        answer = await check()
    except Exception as exc:  # the model list must render whatever a plugin does
        log.warning("availability check of %s failed: %s", status.id, exc)
        return dataclasses.replace(status, connected=False, reason="plugin_error")
    return dataclasses.replace(status, connected=answer.connected, reason=answer.reason)


def _share_statuses(route: ModuleType, availability: ModuleType | None) -> None:
    """``from availability import resolve_model_statuses`` copied the unwrapped function: renew it."""
    if availability is not None and hasattr(route, "resolve_model_statuses"):
        route.resolve_model_statuses = availability.resolve_model_statuses
