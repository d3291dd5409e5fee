"""What ``opentalking-flashhead plugins`` prints: every discovered plugin and where we looked."""

from __future__ import annotations

import dataclasses
import json
import os
import site
import sys
from typing import Any

from opentalking_flashhead.host.manager import DISABLED_VAR, LOAD_VAR, STRICT_VAR, load_plugins


def plugin_report() -> dict[str, Any]:
    """The plugins as this interpreter's host would load them, plus the interpreter and environment."""
    loaded = load_plugins()
    return {
        "interpreter": sys.executable,
        "prefix": sys.prefix,
        "site_packages": site.getsitepackages(),
        "environment": {name: os.environ.get(name) for name in (LOAD_VAR, DISABLED_VAR, STRICT_VAR)},
        "plugins": [dataclasses.asdict(record) for record in loaded.records],
    }


def format_report(report: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(report, indent=2)
    lines = [f"interpreter: {report['interpreter']}", f"environment: {report['prefix']}"]
    lines += [f"  {name}={value!r}" for name, value in report["environment"].items() if value is not None]
    if not report["plugins"]:
        lines.append("no 'opentalking' plugins found in this environment")
    for p in report["plugins"]:
        status = f"failed: {p['error']}" if p["status"] == "failed" else p["status"]
        providers = ", ".join(p["providers"]) or "-"
        lines.append(f"{p['name']}: {p['distribution']} {p['version']} ({p['value']}) {status}; models: {providers}")
    return "\n".join(lines)
