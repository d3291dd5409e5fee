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

The synthesis client ``create_client`` returns (what OpenTalking's runner does with it)
    1. ``connect()``: sync or async, optional.
    2. ``await init_session(ref_image=Path | str | bytes, **keywords)``: the host passes a dozen
       keywords most models ignore; a client must accept unknown ones. Returns a dict.
    3. ``await generate(pcm)`` once per chunk, never concurrently within a session: a 1-D int16
       array of exactly ``audio_chunk_samples`` samples at 16 kHz (the last one zero-padded).
       Returns frames with ``.data`` (H×W×3 BGR uint8), ``.width``, ``.height``,
       ``.timestamp_ms``; the runner pairs frame i with the i-th slice of the chunk's audio, so the
       count decides lip-sync.
    4. ``close(send_close_msg=True)`` at session end and on every interrupt, after which the host
       may ``connect()`` and ``init_session`` the same object again. A ``RuntimeError`` saying
       "not connected" makes the runner reconnect and retry once.
    Attributes read after construction and after each call: ``audio_chunk_samples`` (> 0),
    ``sample_rate`` (16000), ``fps``, ``width``/``height`` (size of the idle still), ``frame_num``,
    ``motion_frames_num``, ``slice_len``. Video creation drives the same object without ``connect``.
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
