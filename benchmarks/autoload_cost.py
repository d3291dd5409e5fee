"""What the ``.pth`` autoload costs a Python process that never imports OpenTalking.

Runs ``python -X importtime -c pass`` repeatedly in this environment (where the wheel's ``.pth``
is active) and reads the cumulative import time of ``opentalking_flashhead_autoload``; the
baseline, measured in the same run, is the whole interpreter start-up (``python -c pass``).
Target: under 5 ms, and nothing imported but the module itself.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

RUNS = 30
MODULE = "opentalking_flashhead_autoload"


def autoload_us() -> tuple[int, int]:
    """Microseconds of the autoload import: its own, and with everything it imported (cumulative)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True).stderr
    for line in err.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[2].strip() == MODULE:
            return int(parts[0]), int(parts[1])
    raise SystemExit(f"{MODULE} is not imported at start-up: is the wheel's .pth installed here?")


def startup_ms() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    own, cumulative = zip(*(autoload_us() for _ in range(RUNS)), strict=True)
    startup = statistics.median(startup_ms() for _ in range(RUNS))
    cost = statistics.median(cumulative) / 1000
    imported_more = any(c > o for o, c in zip(own, cumulative, strict=True))
    figures = (
        f"autoload import {cost:.3f} ms (median of {RUNS}), interpreter start-up {startup:.1f} ms "
        f"(share {cost / startup:.3f}); imported other modules: {'yes' if imported_more else 'no'}"
    )
    checks = {"<5ms": cost < 5.0, "imports nothing else": not imported_more}
    return common.verdict(f"autoload cost ({common.machine()})", figures, checks)


if __name__ == "__main__":
    sys.exit(main())
