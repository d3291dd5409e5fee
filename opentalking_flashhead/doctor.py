"""``opentalking-flashhead doctor``: check each part of a deployment, and say how to fix what fails.

Checks run in the order a request travels: settings, shared storage, the path mapping, the
service, the model, the key, then one real generation of a single slice and its clip.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentalking_flashhead.errors import (
    ClipUnreadable,
    ConfigError,
    DecodeError,
    FlashHeadError,
    GenerationFailed,
    RequestRejected,
    ServiceUnavailable,
)
from opentalking_flashhead.settings import PRO_SLICE_SAMPLES, SAMPLE_RATE, Settings, env_name

PROBE_TIMEOUT_SEC = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        detail = " ".join(self.detail.split())  # one line per check, whatever the service said
        head = f"{'✓' if self.ok else '✗'} {self.name}: {detail}"
        return [head] if self.ok or not self.fix else [head, f"    fix: {self.fix}"]


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def check_storage(settings: Settings) -> list[Check]:
    """Shared dirs exist and are writable, and a file's remote path maps back to it."""
    checks = []
    dirs = [("shared_local_dir", settings.shared_local_dir)]
    dirs += [(name, path) for name, path in (("output_local_dir", settings.output_local_dir),) if path]
    dirs += [("save_dir", settings.save_dir)] if settings.save_dir else []
    for name, path in dirs:
        ok = _writable(path)
        checks.append(
            Check(
                f"{env_name(name)} writable",
                ok,
                str(path) if ok else f"{path} does not exist or is not writable",
                f"create it (mkdir -p {path}) and let this user write to it, or point {env_name(name)} elsewhere",
            )
        )
    if checks[0].ok:
        checks.append(_round_trip(settings))
    return checks


def _round_trip(settings: Settings) -> Check:
    from opentalking_flashhead.artifacts import PathMap

    probe = settings.shared_local_dir / f".doctor-{uuid.uuid4().hex[:8]}"
    probe.write_bytes(b"probe")
    try:
        paths = PathMap(settings)
        remote = paths.to_remote(probe)
        back = paths.to_local(remote)
        ok = back == probe.resolve()
        detail = f"{probe.name}: here {settings.shared_local_dir} ↔ service {settings.shared_remote_dir}"
    finally:
        probe.unlink(missing_ok=True)
    return Check(
        "local ↔ remote mapping round-trips",
        ok,
        detail if ok else f"{remote} maps back to {back}, not {probe}",
        f"make {env_name('shared_remote_dir')} the path under which the service sees {env_name('shared_local_dir')}",
    )


async def check_service(settings: Settings) -> list[Check]:
    """Health, model list and key, as the availability probe sees them, with the reasons spelled out."""
    import httpx

    url = settings.base_url
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=PROBE_TIMEOUT_SEC) as http:
        try:
            health = await http.get("/healthz")
        except httpx.HTTPError as exc:
            return [Check("service health", False, f"{url}/healthz: {type(exc).__name__}: {exc}", _start_fix())]
        if health.status_code != 200:
            return [Check("service health", False, f"{url}/healthz answered HTTP {health.status_code}", _start_fix())]
        checks = [Check("service health", True, f"{url}/healthz answered")]
        models = await http.get("/v1/models")
    key_state = "a key was sent" if settings.api_key else "no key was sent"
    if models.status_code in (401, 403):
        return [
            *checks,
            Check(
                "API key accepted",
                False,
                f"/v1/models answered HTTP {models.status_code}; {key_state}",
                f"set {env_name('api_key')} to a key listed in the service's API key file",
            ),
        ]
    checks.append(Check("API key accepted", True, f"{key_state}; /v1/models answered HTTP {models.status_code}"))
    listed = sorted(str(m.get("id")) for m in models.json().get("data", []) if isinstance(m, dict))
    ok = settings.model in listed
    checks.append(
        Check(
            "model listed",
            ok,
            f"{settings.model!r} {'is' if ok else 'is not'} among {listed}",
            f"set {env_name('model')} to one of {listed}, or enable the model on the service",
        )
    )
    return checks


def _start_fix() -> str:
    return f"start the FlashHead service, or set {env_name('base_url')} to where it runs"


async def check_generation(overrides: dict[str, Any]) -> list[Check]:
    """Generate one slice through the real client: the end-to-end proof, timed."""
    import numpy as np

    from opentalking_flashhead.client import FlashHeadClient

    t = np.arange(PRO_SLICE_SAMPLES) / SAMPLE_RATE
    tone = (np.sin(2 * np.pi * 200 * t) * 8000).astype(np.int16)
    client = FlashHeadClient(**overrides)
    started = time.monotonic()
    try:
        await client.init_session(ref_image=_probe_face())
        frames = await client.generate(tone)
    except (RequestRejected, GenerationFailed, ServiceUnavailable) as exc:
        return [Check("probe generation (1 slice)", False, str(exc), _generation_fix(exc))]
    except (ClipUnreadable, DecodeError) as exc:
        return [
            Check("probe generation (1 slice)", True, "the service generated a clip"),
            Check("clip readable and decodable", False, str(exc), _clip_fix()),
        ]
    finally:
        await client.close()
    seconds = time.monotonic() - started
    return [
        Check("probe generation (1 slice)", True, f"{len(frames)} frames in {seconds:.2f} s"),
        Check(
            "clip readable and decodable",
            len(frames) == 28,
            f"{len(frames)} frames of 28, {frames[0].width}×{frames[0].height} BGR",
            _clip_fix(),
        ),
    ]


def _generation_fix(exc: FlashHeadError) -> str:
    if isinstance(exc, RequestRejected) and "does not exist locally" in exc.detail:
        return f"the service cannot see shared storage: set {env_name('shared_remote_dir')} to its path for it"
    if isinstance(exc, GenerationFailed):
        return "read the service's log for the model's error (GPU memory, checkpoints, launcher)"
    return f"see the message; {env_name('timeout_sec')} bounds how long a slice may take"


def _clip_fix() -> str:
    return (
        f"map the service's output dir ({env_name('output_remote_dir')} + {env_name('output_local_dir')}) or "
        f"serve it and set {env_name('output_base_url')}"
    )


def _probe_face() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (512, 512), (90, 120, 160))
    ImageDraw.Draw(image).ellipse((150, 80, 362, 420), fill=(230, 190, 160))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def diagnose(**overrides: Any) -> list[Check]:
    try:
        settings = Settings.load(overrides=overrides)
    except ConfigError as exc:
        return [Check("settings parse", False, str(exc), "correct the variable named above")]
    key = "set (hidden)" if settings.api_key else "not set"
    checks = [Check("settings parse", True, f"service {settings.base_url}, model {settings.model}, API key {key}")]
    checks += check_storage(settings)
    checks += await check_service(settings)
    if all(c.ok for c in checks):
        checks += await check_generation(overrides)
    else:
        checks.append(Check("probe generation (1 slice)", False, "not run: fix the checks above first"))
    return checks


def run(**overrides: Any) -> int:
    checks = asyncio.run(diagnose(**overrides))
    for check in checks:
        print("\n".join(check.lines()))
    return 0 if all(c.ok for c in checks) else 1
