"""The host contract: how an OpenTalking host discovers model providers in installed packages.

This module is the whole public API between a host and its plugins; it is small on purpose so
that OpenTalking can adopt it unchanged (see examples/host-integration.md).

Plugins
    A distribution declares an entry point in the ``opentalking`` group naming a module (or any
    object) with ``@hookimpl`` functions::

        [project.entry-points.opentalking]
        flashhead = "opentalking_flashhead.plugin"

Hosts
    Build a ``pluggy.PluginManager(PROJECT)``, ``add_hookspecs(this module)``, load the entry
    points (``opentalking_flashhead.host.manager.load_plugins`` does it one at a time, so a broken
    plugin cannot take the host down), then call ``pm.hook.register_models(register=...)`` once and
    keep the :class:`ModelProvider` objects it receives.

Everything a plugin hands over is lazy: importing a plugin must not import its model's
dependencies; they load when the host first calls ``create_client``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pluggy

#: The pluggy project name, which is also the entry-point group.
PROJECT = "opentalking"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class ProviderStatus:
    """Whether a provider can serve sessions right now, and why (shown in the host's model list)."""

    connected: bool
    reason: str


@dataclass(frozen=True)
class ModelProvider:
    """A synthesis model a plugin offers to the host.

    ``create_client(ws_url=..., model=..., config=...)`` returns a synthesis client with the
    interface the host's realtime runner drives (connect, init_session, generate, close).
    ``check_availability()`` answers quickly (it backs the model dropdown) and never raises.
    """

    id: str
    label: str
    create_client: Callable[..., Any]
    check_availability: Callable[[], Awaitable[ProviderStatus]]


@hookspec
def register_models(register: Callable[[ModelProvider], None]) -> None:
    """Call ``register(provider)`` once for every model provider this plugin offers."""
