"""What the adapter knows of OpenTalking 0.1.x, and how to tell whether a host still looks like it.

Every check here only reads: a version number, where a module would be found (without importing
it), and the kind of an attribute. Each returns None when the seam is as expected, else a short
description of what differs, for the one line the adapter prints before leaving the host stock.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

#: The OpenTalking releases whose seams this adapter knows; pyproject's ``opentalking`` extra says the same.
SUPPORTED_SERIES = (0, 1)
SUPPORTED_RANGE = f">={SUPPORTED_SERIES[0]}.{SUPPORTED_SERIES[1]},<{SUPPORTED_SERIES[0]}.{SUPPORTED_SERIES[1] + 1}"

HOST_PACKAGE = "opentalking"
CLIENT_MODULE = "opentalking.providers.synthesis.flashhead"
AVAILABILITY_MODULE = "opentalking.providers.synthesis.availability"
MODELS_ROUTE_MODULE = "apps.api.routes.models"
STATUS_FUNCTION = "resolve_model_statuses"
STATUS_TYPE = "ModelStatus"
STATUS_FIELDS = frozenset({"id", "backend", "connected", "reason"})
#: Only this model has a client seam in OpenTalking 0.1.x.
CLIENT_ATTRIBUTES = {"flashhead": "FlashHeadWSClient"}
#: Set on every function the adapter puts into the host, so it is recognised (and undone) later.
MARK = "__opentalking_plugins__"


def host_version() -> str | None:
    """The installed OpenTalking's version, None when there is no distribution of it."""
    try:
        return version(HOST_PACKAGE)
    except PackageNotFoundError:
        return None


def version_problem(found: str | None) -> str | None:
    if found is None:
        return "no installed distribution (version unknown)"
    release = re.match(r"(\d+)\.(\d+)", found)
    if release is None or (int(release[1]), int(release[2])) != SUPPORTED_SERIES:
        return f"version (this adapter knows {SUPPORTED_RANGE})"
    return None


def layout_problem() -> str | None:
    """A seam module the host does not have; found the way ``import`` would, without running anything."""
    for name in (CLIENT_MODULE, AVAILABILITY_MODULE):
        if not _findable(name):
            return f"{name} not found"
    return None


def _findable(name: str) -> bool:
    locations: Any = None
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        module = sys.modules.get(prefix)
        if module is not None:
            locations = getattr(module, "__path__", None)
            continue
        spec = _find_spec(prefix, locations)
        if spec is None:
            return False
        locations = spec.submodule_search_locations
    return True


def _find_spec(name: str, locations: Any) -> Any:
    for finder in sys.meta_path:
        if type(finder).__module__ == "opentalking_flashhead_autoload" or not hasattr(finder, "find_spec"):
            continue
        spec = finder.find_spec(name, locations)
        if spec is not None:
            return spec
    return None


def ours(value: Any) -> bool:
    return bool(getattr(value, MARK, False))


def client_problem(module: ModuleType) -> str | None:
    for attribute in CLIENT_ATTRIBUTES.values():
        value = getattr(module, attribute, None)
        if value is None:
            return f"{module.__name__}.{attribute} missing"
        if not (isinstance(value, type) or ours(value)):
            return f"{module.__name__}.{attribute} is not a class"
    return None


def status_problem(module: ModuleType) -> str | None:
    where = module.__name__
    function = getattr(module, STATUS_FUNCTION, None)
    if function is None:
        return f"{where}.{STATUS_FUNCTION} missing"
    if not inspect.iscoroutinefunction(function):
        return f"{where}.{STATUS_FUNCTION} is not a coroutine function"
    status_type = getattr(module, STATUS_TYPE, None)
    if status_type is None:
        return f"{where}.{STATUS_TYPE} missing"
    if not (isinstance(status_type, type) and dataclasses.is_dataclass(status_type)):
        return f"{where}.{STATUS_TYPE} is not a dataclass"
    missing = STATUS_FIELDS - {f.name for f in dataclasses.fields(status_type)}
    if missing:
        return f"{where}.{STATUS_TYPE} lacks {sorted(missing)}"
    return None


def statuses_problem(statuses: Any) -> str | None:
    """What the status function returned, if it is not a list of statuses the adapter can rewrite."""
    if not isinstance(statuses, list):
        return f"{STATUS_FUNCTION} returned {type(statuses).__name__}, not a list"
    for status in statuses:
        if isinstance(status, type) or not dataclasses.is_dataclass(status):
            return f"{STATUS_FUNCTION} returned a {type(status).__name__}, not a dataclass"
        if STATUS_FIELDS - {f.name for f in dataclasses.fields(status)}:
            return f"{STATUS_FUNCTION} returned a status without {sorted(STATUS_FIELDS)}"
    return None


def route_problem(route: ModuleType, availability: ModuleType) -> str | None:
    """The models route must hold the host's status function (or ours), so /models and the gate agree."""
    held = getattr(route, STATUS_FUNCTION, None)
    current = getattr(availability, STATUS_FUNCTION, None)
    if held is None or held is current or held is getattr(current, "__wrapped__", None):
        return None
    return f"{route.__name__}.{STATUS_FUNCTION} is not the host's own"


def refusal(found: str | None, problem: str, models: list[str]) -> str:
    """The one line an operator sees when the adapter leaves the host stock."""
    return f"OpenTalking {found or '?'} not supported: {problem}; {', '.join(models) or 'every model'} left stock"
