"""What ``opentalking-flashhead plugins`` prints: every discovered plugin, where we looked, and
whether the adapter would act on the OpenTalking installed here (the same verdict the host logs)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import site
import sys
from importlib.util import find_spec
from typing import Any

from opentalking_flashhead.host import seams
from opentalking_flashhead.host.hookspecs import CONTRACT_VERSION
from opentalking_flashhead.host.manager import DISABLED_VAR, LOAD_VAR, STRICT_VAR, load_plugins
from opentalking_flashhead.host.opentalking import host_problem


def plugin_report() -> dict[str, Any]:
    """The plugins as this interpreter's host would load them, plus the interpreter and environment."""
    loaded = load_plugins()
    return {
        "interpreter": sys.executable,
        "prefix": sys.prefix,
        "site_packages": site.getsitepackages(),
        "environment": {name: os.environ.get(name) for name in (LOAD_VAR, DISABLED_VAR, STRICT_VAR)},
        "host": host_report(sorted(loaded.providers)),
        "plugins": [dataclasses.asdict(record) for record in loaded.records],
    }


def host_report(models: list[str]) -> dict[str, Any]:
    """The adapter's verdict on this interpreter's OpenTalking, with every seam checked."""
    found = seams.host_version()
    if found is None and find_spec(seams.HOST_PACKAGE) is None:
        return {"opentalking": None, "supported": False, "verdict": "OpenTalking is not installed here"}
    problem = host_problem() or _seam_problem()
    if problem is None:
        verdict = f"OpenTalking {found} supported (adapter for {seams.SUPPORTED_RANGE}, contract {CONTRACT_VERSION})"
    else:
        verdict = seams.refusal(found, problem, models)
    return {"opentalking": found, "supported": problem is None, "verdict": verdict}


def _seam_problem() -> str | None:
    """Import the seam modules here (a diagnostic process, not the host) and check their shape."""
    try:
        client = importlib.import_module(seams.CLIENT_MODULE)
        availability = importlib.import_module(seams.AVAILABILITY_MODULE)
    except Exception as exc:  # the host's own modules do not import here: say so, do not crash
        return f"its modules do not import ({type(exc).__name__}: {exc})"
    return seams.client_problem(client) or seams.status_problem(availability)


def format_report(report: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(report, indent=2)
    lines = [f"interpreter: {report['interpreter']}", f"environment: {report['prefix']}"]
    lines.append(f"host: {report['host']['verdict']}")
    lines += [f"  {name}={value!r}" for name, value in report["environment"].items() if value is not None]
    if not report["plugins"]:
        lines.append("no 'opentalking' plugins found in this environment")
    for p in report["plugins"]:
        status = f"failed: {p['error']}" if p["status"] == "failed" else p["status"]
        providers = ", ".join(p["providers"]) or "-"
        lines.append(f"{p['name']}: {p['distribution']} {p['version']} ({p['value']}) {status}; models: {providers}")
    return "\n".join(lines)
