"""``opentalking-flashhead doctor``: check each part of a deployment, and say how to fix what fails.

Checks run in the order a request travels: settings, shared storage, the output dir mapping, the
service, the key, the model, then one real generation of a single slice and its clip. The path
mappings are proven by that generation only: the service must read the probe's files from shared
storage, and its clip must be read back here; nothing short of that shows a mapping works.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from opentalking_flashhead import probes, storage
from opentalking_flashhead.errors import (
    ClipUnreadable,
    ConfigError,
    DecodeError,
    FlashHeadError,
    RequestRejected,
)
from opentalking_flashhead.settings import SAMPLE_RATE, Settings, _http_url_or_none, env_name

#: Each discovery request (health, model list) may take this long.
REQUEST_TIMEOUT_SEC = 5.0
#: The probe generation's default deadline, retries included: doctor answers in seconds, not after
#: the ten minutes a live session may wait for a chunk.
PROBE_TIMEOUT_SEC = 30.0
PROBE = "probe generation (1 slice)"
CLIP = "clip readable and decodable"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    #: Passed, but something will not work as the user may expect (printed with "!").
    warning: bool = False

    def lines(self) -> list[str]:
        detail = " ".join(self.detail.split())  # one line per check, whatever the service said
        head = f"{'!' if self.warning else '✓' if self.ok else '✗'} {self.name}: {detail}"
        return [head] if self.ok or not self.fix else [head, f"    fix: {self.fix}"]


def check_storage(settings: Settings) -> list[Check]:
    """Shared dirs are writable (or can be created, for those the client creates); the OUTPUT_*
    settings add up to a way back for clips."""
    checks = []
    # The client creates the shared dir and the save dir as needed; the output dir is the service's.
    dirs = [("shared_local_dir", settings.shared_local_dir, True)]
    dirs += [("output_local_dir", settings.output_local_dir, False)] if settings.output_local_dir else []
    dirs += [("save_dir", settings.save_dir, True)] if settings.save_dir else []
    for name, path, creatable in dirs:
        checks.append(_writable_check(name, path, creatable))
    return checks + check_output_mapping(settings)


def _writable_check(name: str, path: Path, creatable: bool) -> Check:
    """A file can be created in ``path``, or, when the client creates it, in the dir it would be made in."""
    title = f"{env_name(name)} writable"
    fix = f"create it (mkdir -p {path}) and let this user write to it, or point {env_name(name)} elsewhere"
    if path.is_dir() or not creatable:
        error = storage.write_error(path)
        return Check(
            title, error is None, str(path) if error is None else f"cannot create a file in {path}: {error}", fix
        )
    parent = next(p for p in path.parents if p.exists())  # "/" exists, so there is one
    error = storage.write_error(parent) if parent.is_dir() else f"{parent} is not a directory"
    if error is not None:
        return Check(title, False, f"{path} does not exist and cannot be created in {parent}: {error}", fix)
    return Check(title, True, f"{path} (does not exist yet; the first session creates it)")


def check_output_mapping(settings: Settings) -> list[Check]:
    """When OUTPUT_* is configured: settings that cannot work, caught before the probe (which proves the rest)."""
    local, remote, url = settings.output_local_dir, settings.output_remote_dir, settings.output_base_url
    if not (local or remote or url):
        return []
    name, remote_var = "output dir mapping", env_name("output_remote_dir")
    if local and not remote:
        return [
            Check(
                name,
                False,
                f"{env_name('output_local_dir')} is set but {remote_var} is not, so clips never come back through it",
                f"set {remote_var} to the path under which the service sees {local}",
            )
        ]
    if remote and not (local or url or PurePosixPath(remote).is_relative_to(settings.shared_remote_dir)):
        return [Check(name, False, f"clips will be written under {remote}, which nothing here maps", _clip_fix())]
    return [Check(name, True, f"clips come back {_clip_route(settings)}; the probe below proves it")]


def _clip_route(settings: Settings) -> str:
    """How the configuration brings a clip back to this machine, in words."""
    if settings.output_remote_dir and settings.output_local_dir:
        return f"from {settings.output_local_dir} (the service's {settings.output_remote_dir})"
    if settings.output_remote_dir and settings.output_base_url:
        return f"over HTTP from {settings.output_base_url}"
    return f"through shared storage ({settings.shared_local_dir})"


async def check_service(settings: Settings, url_source: str | None = None) -> list[Check]:
    """Health, key and model list, with every answer that is not a FlashHead service's turned into a ✗.

    ``url_source`` names where the URL came from (``--base-url``, a variable), so the fixes point there.
    """
    source = url_source or env_name("base_url")
    url = settings.base_url
    answers = await probes.ask(settings, REQUEST_TIMEOUT_SEC)
    health, models = answers.health, answers.models
    if health is None:
        assert answers.error is not None
        return [Check("service health", False, f"{url}/healthz: {_failure(answers.error)}", _start_fix(source))]
    if health.status_code != 200:
        return [Check("service health", False, f"{url}/healthz answered HTTP {health.status_code}", _start_fix(source))]
    checks = [Check("service health", True, f"{url}/healthz answered")]
    if models is None:
        assert answers.error is not None
        return [
            *checks,
            Check("model listed", False, f"{url}/v1/models: {_failure(answers.error)}", _not_flashhead_fix(source)),
        ]
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
    listed = probes.model_ids(models) if models.status_code == 200 else None
    if listed is None:
        answer = f"HTTP {models.status_code} {models.headers.get('content-type', 'without a content type')}"
        detail = f"{url}/v1/models answered {answer}, not a model list: {models.text[:80]!r}"
        return [*checks, Check("model listed", False, detail, _not_flashhead_fix(source))]
    ok = settings.model in listed
    return [
        *checks,
        Check("API key accepted", True, f"{key_state}; /v1/models answered HTTP {models.status_code}"),
        Check(
            "model listed",
            ok,
            f"{settings.model!r} {'is' if ok else 'is not'} among {listed}{_card_note(models, settings.model)}",
            f"set {env_name('model')} to one of {listed}, or enable the model on the service",
        ),
    ]


def _card_note(response: httpx.Response, model: str) -> str:
    """What the service says of the model beyond OmniRT's card: resident or not, model type, slice."""
    cards = response.json().get("data", [])
    card = next((c for c in cards if isinstance(c, dict) and c.get("id") == model), {})
    if card.get("resident") is True:
        return f"; resident {card.get('model_type')} model, slices of {card.get('slice_samples')} samples"
    if "resident" in card:
        return "; not resident (a stand-in, or the model loads per request)"
    return ""


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} after {REQUEST_TIMEOUT_SEC:g} s"


def _start_fix(source: str) -> str:
    return f"start the FlashHead service, or set {source} to where it runs"


def _not_flashhead_fix(source: str) -> str:
    return (
        f"make sure {source} points at the FlashHead service (OmniRT) itself, not a proxy or another "
        "server, and read its log"
    )


async def check_generation(settings: Settings, overrides: dict[str, Any], timeout: float) -> list[Check]:
    """Generate one slice through the real client, failures raised rather than covered: the end-to-end proof.

    It proves the shared mapping (the service read the probe's WAV and face) and the way back for
    the clip (it was read and decoded here).
    """
    import numpy as np

    from opentalking_flashhead.client import FlashHeadClient

    client = FlashHeadClient(**{**overrides, "on_error": "raise", "chunk_deadline_sec": timeout})
    started = time.monotonic()
    try:
        await client.init_session(ref_image=_probe_face())  # the chunk length may follow the service's slice
        t = np.arange(client.audio_chunk_samples) / SAMPLE_RATE
        frames = await client.generate((np.sin(2 * np.pi * 200 * t) * 8000).astype(np.int16))
    except (ClipUnreadable, DecodeError) as exc:
        return [
            Check(PROBE, True, "the service generated a clip"),
            Check(CLIP, False, str(exc), _clip_fix()),
        ]
    except FlashHeadError as exc:
        return [Check(PROBE, False, str(exc), _generation_fix(exc, timeout))]
    finally:
        await client.close()
    seconds = time.monotonic() - started
    if client.inline:
        inputs, route = "inputs sent inline (no shared storage needed)", "sent back inline"
    else:
        inputs = f"the service read its inputs from {settings.shared_local_dir} as {settings.shared_remote_dir}"
        route = _clip_route(settings)
    expected = client.slice_len
    return [
        Check(PROBE, True, f"{len(frames)} frames in {seconds:.2f} s ({client.audio_chunk_samples} samples); {inputs}"),
        Check(
            CLIP,
            len(frames) == expected,
            f"{len(frames)} frames of {expected}, {frames[0].width}×{frames[0].height} BGR, {route}",
            _clip_fix(),
        ),
    ]


async def check_remote_workers(settings: Settings) -> list[Check]:
    """OmniRT's ``--remote-worker`` delegation serves sync requests only: async jobs run on the coordinator."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        async with httpx.AsyncClient(base_url=settings.base_url, headers=headers, timeout=REQUEST_TIMEOUT_SEC) as http:
            ready = (await http.get("/readyz")).json()
    except (httpx.HTTPError, ValueError):
        return []  # not OmniRT's readiness answer: nothing to say about its workers
    count = ready.get("remote_worker_count") if isinstance(ready, dict) else None
    if not isinstance(count, int) or not count or not settings.async_jobs:
        return []
    return [
        Check(
            "remote workers",
            True,
            f"OmniRT reports {count} remote worker(s) while {env_name('async_jobs')} is on: async jobs run on the "
            "coordinator, not the remote workers",
            f"set {env_name('async_jobs')}=0 to use them, or run `opentalking-flashhead worker` processes and list "
            f"them in {env_name('resident_targets')}",
            warning=True,
        )
    ]


async def check_target(settings: Settings, target: str, overrides: dict[str, Any], timeout: float) -> Check:
    """One probe slice pinned to ``target`` through the service: each resident worker proven on its own."""
    checks = await check_generation(settings, {**overrides, "resident_targets": target}, timeout)
    failed = [check for check in checks if not check.ok]
    variable = env_name("resident_targets")
    fix = (
        f"start `opentalking-flashhead worker --listen {target}` there (reachable from the service), or remove "
        f"{target} from {variable}"
    )
    return Check(f"resident target {target}", not failed, (failed or checks)[0].detail, fix)


def _generation_fix(exc: FlashHeadError, timeout: float) -> str:
    if isinstance(exc, RequestRejected):
        if "does not exist locally" in exc.detail:
            return f"the service cannot see shared storage: set {env_name('shared_remote_dir')} to its path for it"
        return "the service refused the probe: change what its message names"
    if exc.retryable:
        return (
            f"it kept failing for {timeout:g} s: read the service's log (GPU memory, checkpoints, launcher); "
            "give a slow service longer with --timeout"
        )
    return "read the service's log and configuration for the model's error (checkpoints, launcher)"


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


async def diagnose(timeout: float = PROBE_TIMEOUT_SEC, **overrides: Any) -> list[Check]:
    """Every check in order; the probe runs only when everything before it passed."""
    try:
        settings = Settings.load(overrides=overrides)
    except ConfigError as exc:
        return [Check("settings parse", False, str(exc), "correct the variable named above")]
    key = "set (hidden)" if settings.api_key else "not set"
    checks = [Check("settings parse", True, f"service {settings.base_url}, model {settings.model}, API key {key}")]
    checks += check_storage(settings)
    checks += await check_service(settings, _url_source(overrides))
    if all(c.ok for c in checks):
        checks += await check_remote_workers(settings)
        checks += await check_generation(settings, overrides, timeout)
        checks += [await check_target(settings, target, overrides, timeout) for target in settings.resident_targets]
    else:
        checks.append(Check(PROBE, False, "not run: fix the checks above first"))
    return checks


def _url_source(overrides: dict[str, Any]) -> str:
    """What set the service URL, as the user would change it: the flag, or the variable the client read."""
    if overrides.get("base_url"):
        return "--base-url"
    if not os.environ.get(env_name("base_url"), "").strip() and _http_url_or_none(os.environ.get(env_name("ws_url"))):
        return env_name("ws_url")
    return env_name("base_url")


def run(timeout: float = PROBE_TIMEOUT_SEC, **overrides: Any) -> int:
    checks = asyncio.run(diagnose(timeout, **overrides))
    for check in checks:
        print("\n".join(check.lines()))
    return 0 if all(c.ok for c in checks) else 1
