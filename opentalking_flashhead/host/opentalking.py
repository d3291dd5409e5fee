"""Bring registered model providers into today's unmodified OpenTalking 0.1.x.

OpenTalking 0.1.x has no plugin loader, but it has two seams that work (found by running it):

* the worker and video creation re-import ``opentalking.providers.synthesis.flashhead
  .FlashHeadWSClient`` for every session/job, so that attribute decides the client class;
* ``/models`` and the session gate go through ``availability.resolve_model_statuses``
  (``apps.api.routes.models`` holds its own reference to it).

It also reads FlashHead settings from OpenTalking's ``.env`` and YAML config, which the host keeps
in its settings object and never puts into the environment our client reads (see
:func:`mirror_host_config`).

Each adjustment is idempotent, happens in whichever process imports the module (unified, API
or worker), and touches only models a plugin provides and only on the backends where the host
would use the client we replace. The host's own registry is never written to (it raises on a
duplicate key).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import Any

from opentalking_flashhead.host.manager import PluginSet, load_plugins
from opentalking_flashhead.settings import Settings, env_name

log = logging.getLogger(__name__)

CLIENT_MODULE = "opentalking.providers.synthesis.flashhead"
AVAILABILITY_MODULE = "opentalking.providers.synthesis.availability"
MODELS_ROUTE_MODULE = "apps.api.routes.models"
#: Only this model has a client seam in OpenTalking 0.1.x.
CLIENT_ATTRIBUTES = {"flashhead": "FlashHeadWSClient"}
#: Backends on which the host builds the client we replace (mock and local keep their own).
REMOTE_BACKENDS = frozenset({"direct_ws", "omnirt"})
_MARK = "__opentalking_plugins__"
#: The model whose settings OpenTalking keeps as ``flashhead_<name>``.
FLASHHEAD = "flashhead"
#: OpenTalking's ``flashhead_*`` settings that mean the same to our client. fps, sample rate, size
#: and frame count are left out: the model fixes them, and the service rejects other values.
HOST_FIELDS = (
    "ws_url",
    "base_url",
    "model",
    "shared_local_dir",
    "shared_remote_dir",
    "output_local_dir",
    "output_remote_dir",
    "output_base_url",
    "timeout_sec",
    "chunk_samples",
)


@functools.lru_cache(maxsize=1)
def plugins() -> PluginSet:
    """The plugins of this process, loaded once."""
    loaded = load_plugins()
    _announce("opentalking plugins: " + (", ".join(f"{r.name}={r.status}" for r in loaded.records) or "none"))
    return loaded


def _announce(line: str) -> None:
    """Log ``line``, or print it to stderr when this process has not set up logging.

    OpenTalking 0.1.0 sets up logging only in ``opentalking-unified``, after it has imported the
    modules we adjust, and uvicorn (``opentalking-api``, ``opentalking-worker``) only for its own
    loggers: an INFO record would vanish, leaving the operator no sign that the plugin loaded.
    """
    if log.hasHandlers():
        log.info(line)
    else:
        print(line, file=sys.stderr)


def host_defaults(host: Any, dotenv: Mapping[str, str | None]) -> dict[str, str]:
    """Our ``OPENTALKING_FLASHHEAD_*`` variables with the values OpenTalking's configuration gives them.

    ``host`` is OpenTalking's settings object; a field counts only when one of its sources
    (environment, ``.env``, legacy names, YAML) set it (``model_fields_set``), never as a default.
    ``dotenv`` is the host's ``.env``, for our names the host has no field for (API key, preset,
    config JSON, ...): its settings drop those.
    """
    ours = {env_name(f.name) for f in dataclasses.fields(Settings)} | {env_name(name) for name in HOST_FIELDS}
    found = {name: str(value).strip() for name, value in dotenv.items() if name in ours and value}
    for name in HOST_FIELDS:
        if f"{FLASHHEAD}_{name}" in host.model_fields_set:
            found[env_name(name)] = str(getattr(host, f"{FLASHHEAD}_{name}")).strip()
    return {name: value for name, value in found.items() if value}


@functools.lru_cache(maxsize=1)
def mirror_host_config() -> dict[str, str]:
    """Export OpenTalking's FlashHead configuration as environment defaults, once; returns what it set.

    OpenTalking reads ``OPENTALKING_FLASHHEAD_*`` from its ``.env`` and the ``flashhead:`` section of
    its YAML into its settings object only; our Settings, which must not import OpenTalking, reads
    keyword overrides and ``os.environ``. Exporting the values with set-if-absent before any client
    or availability check exists gives the client and the availability check in this process one
    answer that matches the host's, while a real environment variable still wins.
    """
    try:
        from dotenv import dotenv_values
        from opentalking.core.config import get_settings

        host = get_settings()
        wanted = host_defaults(host, dotenv_values(host.model_config["env_file"]))
    except Exception as exc:  # a host that cannot read its own configuration reports that itself
        log.warning("opentalking plugins: could not read OpenTalking's FlashHead settings: %s", exc)
        return {}
    exported = {name: value for name, value in wanted.items() if name not in os.environ}
    os.environ.update(exported)
    return exported


def on_import(fullname: str, module: ModuleType) -> None:
    """Adjust one just-imported host module (called by the autoload finder)."""
    if FLASHHEAD in plugins().providers:
        mirror_host_config()
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
