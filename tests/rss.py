"""Peak resident memory of this process, read from /proc (Linux): what a decoding bound must hold to."""

from __future__ import annotations

from pathlib import Path


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"/proc/self/status has no {field}")


def reset_peak() -> int:
    """Reset the process's peak RSS to its current RSS (``clear_refs`` 5); the current RSS, in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") * 1024


def peak_growth(baseline: int) -> int:
    """How far the peak RSS rose above ``baseline`` (bytes, from :func:`reset_peak`) since the reset."""
    return _status_kb("VmHWM") * 1024 - baseline
