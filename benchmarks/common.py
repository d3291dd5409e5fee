"""Shared pieces of the benchmarks: a stand-in service in its own process, media, figures, verdicts.

The service runs as a separate process (as a GPU service would), so the figures measure the
client's process alone.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

SLICE = 17920


def machine() -> str:
    """One line describing where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


@contextmanager
def standin_process(latency: float = 0.0, capacity: int = 1) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``opentalking-flashhead serve-standin`` on a free loopback port; yields its base URL and process
    (a benchmark may kill or freeze it; it is stopped, and resumed first, at the end)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tempfile.mkdtemp(prefix="bench-standin-")
    command = [sys.executable, "-m", "opentalking_flashhead.cli", "serve-standin", "--port", str(port)]
    command += ["--output-dir", out, "--latency", str(latency), "--capacity", str(capacity)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the stand-in did not start") from None
                time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGCONT)
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)


@contextmanager
def standin(latency: float = 0.0, capacity: int = 1) -> Iterator[str]:
    """``opentalking-flashhead serve-standin`` on a free loopback port; yields its base URL."""
    with standin_process(latency, capacity) as (url, _):
        yield url


def face_png() -> bytes:
    """The example avatar shipped in examples/."""
    return (Path(__file__).resolve().parents[1] / "examples" / "avatar.png").read_bytes()


def speech(samples: int, seed: int = 0) -> np.ndarray:
    """Voice-like int16 audio: a warbling tone under a syllable envelope."""
    t = np.arange(samples) / 16000
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * (170 + 30 * np.sin(2 * np.pi * 3 * t)) * t) + 0.05 * rng.standard_normal(samples)
    return (tone * (0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 2.5 * t))) * 12000).astype(np.int16)


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000.0


def verdict(name: str, figures: str, checks: dict[str, bool]) -> int:
    """Print the one closing line and return the exit status (non-zero when a target is missed)."""
    missed = [label for label, ok in checks.items() if not ok]
    status = "PASS" if not missed else "FAIL: " + ", ".join(missed)
    print(f"{name}: {figures} | {status}", flush=True)
    return 1 if missed else 0


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="bench-io-"))
