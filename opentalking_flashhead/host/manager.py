"""Build the plugin manager and bring in ``opentalking`` entry points, one at a time.

``pluggy``'s ``load_setuptools_entrypoints`` stops at the first plugin that fails to import;
a host must not go down because one optional package is broken, so each entry point is loaded,
registered and asked for its providers on its own, and the outcome is recorded.

Environment:
    ``OPENTALKING_LOAD_PLUGINS``      comma-separated allowlist (set but empty: load none)
    ``OPENTALKING_DISABLED_PLUGINS``  comma-separated denylist
    ``OPENTALKING_STRICT_PLUGINS=1``  re-raise a plugin's failure instead of skipping it
Names are entry-point names or distribution names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

import pluggy

from opentalking_flashhead.host import hookspecs
from opentalking_flashhead.host.hookspecs import PROJECT, ModelProvider

log = logging.getLogger(__name__)

LOAD_VAR = "OPENTALKING_LOAD_PLUGINS"
DISABLED_VAR = "OPENTALKING_DISABLED_PLUGINS"
STRICT_VAR = "OPENTALKING_STRICT_PLUGINS"


@dataclass
class PluginRecord:
    """What happened to one entry point: ``loaded``, ``disabled`` or ``failed`` (with the error)."""

    name: str
    value: str
    distribution: str
    version: str
    status: str
    error: str | None = None
    providers: list[str] = field(default_factory=list)


@dataclass
class PluginSet:
    """The loaded plugins, what each registered, and a record per entry point found."""

    manager: pluggy.PluginManager
    records: list[PluginRecord]
    providers: dict[str, ModelProvider]


def _names(raw: str | None) -> set[str] | None:
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _record(ep: EntryPoint, status: str, error: str | None = None) -> PluginRecord:
    dist = ep.dist
    return PluginRecord(
        name=ep.name,
        value=ep.value,
        distribution=dist.metadata["Name"] if dist else "?",
        version=dist.version if dist else "?",
        status=status,
        error=error,
    )


def _order(ep: EntryPoint) -> tuple[str, str]:
    """The contract's order: entry-point name, then distribution name (the first to offer an id keeps it)."""
    return ep.name, ep.dist.metadata["Name"] if ep.dist else ""


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def load_plugins(environ: Mapping[str, str] | None = None) -> PluginSet:
    """Discover, filter, load and query every ``opentalking`` entry point of this environment."""
    env = os.environ if environ is None else environ
    allow, deny = _names(env.get(LOAD_VAR)), _names(env.get(DISABLED_VAR)) or set()
    strict = env.get(STRICT_VAR, "").strip().lower() in {"1", "true", "yes", "on"}
    manager = new_manager()
    plugins = PluginSet(manager, [], {})
    for ep in sorted(entry_points(group=PROJECT), key=_order):
        record = _record(ep, "loaded")
        names = {record.name, record.distribution}
        if (allow is not None and not names & allow) or names & deny:
            record.status = "disabled"
        else:
            # Two distributions may use the same entry-point name: each registers under its own key,
            # and a failure unregisters only what this entry point registered.
            key, registered = f"{record.distribution}:{ep.name}", False
            try:
                manager.register(ep.load(), name=key)
                registered = True
                manager.check_pending()
                record.providers = _collect(manager, key, plugins.providers)
            except Exception as exc:
                if registered:
                    manager.unregister(name=key)
                record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
                log.error("plugin %s (%s %s) failed to load: %s", ep.name, record.distribution, record.version, exc)
                if strict:
                    raise
        plugins.records.append(record)
    return plugins


def _collect(manager: pluggy.PluginManager, plugin_name: str, providers: dict[str, ModelProvider]) -> list[str]:
    """Ask one plugin for its providers; an id already taken by an earlier plugin keeps its owner."""
    offered: list[ModelProvider] = []
    for impl in manager.hook.register_models.get_hookimpls():
        if impl.plugin_name == plugin_name:
            impl.function(register=offered.append)
    for provider in offered:
        if provider.id in providers:
            log.warning(
                "plugin %s: model %r is already provided by %s; ignoring its copy",
                plugin_name,
                provider.id,
                providers[provider.id].label,
            )
        else:
            providers[provider.id] = provider
    return [p.id for p in offered]
