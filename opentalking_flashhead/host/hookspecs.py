"""The host contract: how an OpenTalking host discovers model providers in installed packages.

This module is the whole public API between a host and its plugins; it is small on purpose and
depends on nothing but ``pluggy``, so that a host carries its own copy (see
examples/host-integration.md) instead of importing it from a plugin. A copy stays compatible as
long as :data:`CONTRACT_VERSION` has the same major number.

Plugins
    A distribution declares an entry point in the ``opentalking`` group naming a module (or any
    object) with ``@hookimpl`` functions::

        [project.entry-points.opentalking]
        flashhead = "opentalking_flashhead.plugin"

Hosts
    Build a ``pluggy.PluginManager(PROJECT)``, ``add_hookspecs(this module)`` and load the entry
    points one at a time, so a broken plugin cannot take the host down
    (``opentalking_flashhead.host.manager.load_plugins`` is one such loader).

When the hook runs
    Once per process, lazily, before the first provider is needed: a native host when it first
    builds a synthesis client or answers the model list; this package's adapter for 0.1.x when
    the host imports the first module it adjusts. ``register_models`` is called for one plugin at
    a time, in the order of the entry-point names (then distribution names).

Who wins a shared model id
    The first plugin in that order to register an id keeps it; a later plugin's provider with the
    same id is ignored and the host logs a warning naming both.

Settings reach the provider explicitly
    The host passes its own configuration of the model (``host_config``: the model's settings
    from its ``.env``, YAML and environment, keyed by setting name, e.g. ``{"base_url": ...,
    "api_key": ...}``) to :meth:`ModelProvider.create_client` and
    :meth:`ModelProvider.check_availability`. Nothing goes through ``os.environ``, so secrets stay
    in the objects that use them and out of every process the host spawns.

The synthesis client
    :class:`SynthesisClient` is what ``create_client`` returns and the host's realtime runner
    drives: ``connect`` (sync or async, optional), ``init_session``, ``generate`` once per chunk,
    ``close``, and the attributes read after each call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pluggy

#: The pluggy project name, which is also the entry-point group.
PROJECT = "opentalking"
#: ``major.minor``: a host and a plugin agree when the major numbers match.
CONTRACT_VERSION = "1.0"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class ProviderStatus:
    """Whether a provider can serve sessions right now, and why (shown in the host's model list)."""

    connected: bool
    reason: str


@runtime_checkable
class SynthesisClient(Protocol):
    """The object the host's realtime runner and video creation drive, one per session or job.

    1. ``connect()``: sync or async, optional; video creation never calls it.
    2. ``await init_session(ref_image=..., **keywords)``: the host passes a dozen keywords most
       models ignore; a client must accept unknown ones. Returns a dict describing the session.
    3. ``await generate(pcm)`` once per chunk, never concurrently within a session: a 1-D int16
       array of exactly ``audio_chunk_samples`` samples at 16 kHz (the last one zero-padded).
       Returns frames with ``.data`` (H×W×3 BGR uint8), ``.width``, ``.height``,
       ``.timestamp_ms``; the runner pairs frame i with the i-th slice of the chunk's audio, so
       the count decides lip-sync.
    4. ``close(send_close_msg=True)`` at session end and on every interrupt, after which the host
       may ``connect()`` and ``init_session`` the same object again. A ``RuntimeError`` saying
       "not connected" makes the runner reconnect and retry once.
    """

    audio_chunk_samples: int  # > 0, or the runner's chunking loop never ends
    sample_rate: int  # 16000
    fps: int  # the WebRTC track rate and the idle cadence
    width: int  # size of the idle still cut from the reference image
    height: int
    frame_num: int  # informational
    motion_frames_num: int
    slice_len: int  # round(audio_chunk_samples * fps / sample_rate)

    async def init_session(self, ref_image: Path | str | bytes, **keywords: Any) -> dict[str, Any]: ...

    async def generate(self, pcm: Any) -> list[Any]: ...

    async def close(self, send_close_msg: bool = True) -> None: ...


class ClientFactory(Protocol):
    """Builds a client from the host's configuration and the arguments the host's runner passes."""

    def __call__(
        self, host_config: Mapping[str, Any], /, *, ws_url: str, model: str, config: Mapping[str, Any]
    ) -> SynthesisClient: ...


#: Answers quickly (it backs the model dropdown and the session gate) and never raises.
AvailabilityCheck = Callable[[Mapping[str, Any]], Awaitable[ProviderStatus]]


@dataclass(frozen=True)
class ModelProvider:
    """A synthesis model a plugin offers to the host.

    Both callables receive the host's configuration of this model first (see the module
    docstring); importing the plugin must not import the model's dependencies: they load when
    the host first calls one of them.
    """

    id: str
    label: str
    create_client: ClientFactory
    check_availability: AvailabilityCheck


@hookspec
def register_models(register: Callable[[ModelProvider], None]) -> None:
    """Call ``register(provider)`` once for every model provider this plugin offers."""
