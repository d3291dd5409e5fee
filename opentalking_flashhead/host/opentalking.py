"""Bring registered model providers into today's unmodified OpenTalking 0.1.x.

OpenTalking 0.1.x has no plugin loader, but it has two seams that work (found by running it):

* the worker and video creation re-import ``opentalking.providers.synthesis.flashhead
  .FlashHeadWSClient`` for every session/job, so that attribute decides the client class;
* ``/models`` and the session gate go through ``availability.resolve_model_statuses``
  (``apps.api.routes.models`` holds its own reference to it).

The adapter acts only on the releases it knows and only on seams that look as expected
(:mod:`.seams`); otherwise it prints one line, undoes whatever it had adjusted in this process and
leaves the host stock. Errors of its own never reach the host: the model list and the session
gate then get the host's own answer. It only replaces attributes that exist, touches only models
a plugin provides and only on the backends where the host would use the client we replace, and
never writes the host's registry (it raises on a duplicate key). The host's configuration is read
when a client is built or a status is asked for, never at import time, and handed to the provider
as a mapping (:mod:`.hostconfig`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from opentalking_flashhead.host import seams
from opentalking_flashhead.host.hookspecs import ModelProvider, ProviderStatus
from opentalking_flashhead.host.hostconfig import current_host_config, read_host_config
from opentalking_flashhead.host.manager import PluginSet, load_plugins

log = logging.getLogger(__name__)

#: Backends on which the host builds the client we replace (mock and local keep their own).
REMOTE_BACKENDS = frozenset({"direct_ws", "omnirt"})
#: Where each adjusted attribute lives, for undoing them all.
ADJUSTED = (
    *((seams.CLIENT_MODULE, attribute) for attribute in seams.CLIENT_ATTRIBUTES.values()),
    (seams.AVAILABILITY_MODULE, seams.STATUS_FUNCTION),
    (seams.MODELS_ROUTE_MODULE, seams.STATUS_FUNCTION),
)
_refused: list[str] = []


@functools.lru_cache(maxsize=1)
def plugins() -> PluginSet:
    """The plugins of this process, loaded once, on first need."""
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
        log.log(logging.WARNING if line.startswith("OpenTalking ") else logging.INFO, line)
    else:
        print(line, file=sys.stderr)


@functools.lru_cache(maxsize=1)
def host_problem() -> str | None:
    """Why this process's OpenTalking is not one the adapter knows (release or package layout)."""
    return seams.version_problem(seams.host_version()) or seams.layout_problem()


def _refuse(problem: str) -> None:
    """Leave the host stock: undo every adjustment in this process and say why, once."""
    if _refused:
        return
    _refused.append(problem)
    for module_name, attribute in ADJUSTED:
        module = sys.modules.get(module_name)
        value: Any = getattr(module, attribute, None)
        if module is not None and seams.ours(value):
            setattr(module, attribute, value.__wrapped__)
    providers = sorted(plugins().providers)
    if providers:
        _announce(seams.refusal(seams.host_version(), problem, providers))


def on_import(fullname: str, module: ModuleType) -> None:
    """Adjust one just-imported host module (called by the autoload finder)."""
    problem = host_problem()
    if problem is not None:
        _refuse(problem)
        return
    if _refused or fullname == seams.HOST_PACKAGE or not plugins().providers:
        return
    if fullname == seams.CLIENT_MODULE:
        problem = seams.client_problem(module)
        if problem is None:
            _swap_clients(module)
    elif fullname == seams.AVAILABILITY_MODULE:
        problem = seams.status_problem(module)
        route = sys.modules.get(seams.MODELS_ROUTE_MODULE)
        if problem is None:
            _wrap_statuses(module)
            problem = _share_statuses(route, module) if route is not None else None
    elif fullname == seams.MODELS_ROUTE_MODULE:
        availability = sys.modules.get(seams.AVAILABILITY_MODULE)
        if availability is not None:
            problem = _share_statuses(module, availability)
    if problem is not None:
        _refuse(problem)


def apply() -> None:
    """Adjust every seam module already imported; for launchers and hosts without the ``.pth``."""
    for name in (seams.HOST_PACKAGE, seams.CLIENT_MODULE, seams.AVAILABILITY_MODULE, seams.MODELS_ROUTE_MODULE):
        module = sys.modules.get(name)
        if module is not None:
            on_import(name, module)


def _mark(function: Callable[..., Any], original: Any) -> None:
    function.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(function, seams.MARK, True)


def _swap_clients(module: ModuleType) -> None:
    for model_id, attribute in seams.CLIENT_ATTRIBUTES.items():
        provider = plugins().providers.get(model_id)
        stock = getattr(module, attribute)
        if provider is not None and not seams.ours(stock):
            setattr(module, attribute, _client_factory(provider, stock))
            log.info("opentalking plugins: %s sessions use %s", model_id, provider.label)


def _client_factory(provider: ModelProvider, stock: type) -> Callable[..., Any]:
    """Stands where the host looks up its client class: the provider's client, built with the host's
    configuration; the host's own client if reading that configuration fails."""

    def create_client(*args: Any, **kwargs: Any) -> Any:
        try:
            config = current_host_config()
        except Exception as exc:
            log.warning("opentalking plugins: could not read OpenTalking's configuration, using its client: %s", exc)
            return stock(*args, **kwargs)
        return provider.create_client(config, *args, **kwargs)

    _mark(create_client, stock)
    return create_client


def _wrap_statuses(module: ModuleType) -> None:
    original = getattr(module, seams.STATUS_FUNCTION)
    if seams.ours(original):
        return

    @functools.wraps(original)
    async def resolve_model_statuses(settings: Any) -> Any:
        statuses = await original(settings)
        problem = seams.statuses_problem(statuses)
        if problem is not None:
            _refuse(problem)
            return statuses
        try:
            config = read_host_config(settings)
            return [await _provider_status(status, config) for status in statuses]
        except Exception as exc:  # the model list and the session gate must never fail because of us
            log.warning("opentalking plugins: model statuses left as the host has them: %s", exc)
            return statuses

    _mark(resolve_model_statuses, original)
    setattr(module, seams.STATUS_FUNCTION, resolve_model_statuses)


async def _provider_status(status: Any, host_config: dict[str, str]) -> Any:
    provider = plugins().providers.get(status.id)
    if provider is None or status.backend not in REMOTE_BACKENDS:
        return status
    try:
        answer = await provider.check_availability(host_config)
    except Exception as exc:
        log.warning("availability check of %s failed, its status left as the host has it: %s", status.id, exc)
        return status
    if not isinstance(answer, ProviderStatus):
        log.warning("availability check of %s answered %r, not a ProviderStatus", status.id, answer)
        return status
    return dataclasses.replace(status, connected=bool(answer.connected), reason=str(answer.reason))


def _share_statuses(route: ModuleType, availability: ModuleType) -> str | None:
    """``from availability import resolve_model_statuses`` may have copied the unwrapped function: renew it."""
    problem = seams.route_problem(route, availability)
    current = getattr(availability, seams.STATUS_FUNCTION)
    if problem is None and hasattr(route, seams.STATUS_FUNCTION) and seams.ours(current):
        setattr(route, seams.STATUS_FUNCTION, current)
    return problem
