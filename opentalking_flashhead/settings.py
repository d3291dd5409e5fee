"""Every knob of the client, read once and checked once.

Values come from keyword overrides first, then ``OPENTALKING_FLASHHEAD_*`` environment
variables (OpenTalking's documented names plus ours), then defaults. Anything malformed raises
:class:`ConfigError` at construction, naming the variable and what it accepts, so a
misconfiguration surfaces when a session starts, not as a 400 in the middle of a reply.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from opentalking_flashhead.errors import ConfigError
from opentalking_flashhead.targets import parse_targets

ENV_PREFIX = "OPENTALKING_FLASHHEAD_"
DEFAULT_BASE_URL = "http://127.0.0.1:8766"
DEFAULT_MODEL = "soulx-flashhead-1.3b"
DEFAULT_SHARED_DIR = "/tmp/opentalking_flashhead_io"

#: Fixed by the model, not by the request: the service rejects attempts to set them.
SAMPLE_RATE = 16000
FPS = 25
WIDTH = HEIGHT = 512
#: One FlashHead Pro slice: 28 frames per 17,920 samples.
PRO_SLICE_SAMPLES = 17920
#: Samples of one model slice per model type (Lite: 24 frames per 15,360): the chunk that wastes nothing.
SLICE_SAMPLES = {"pro": PRO_SLICE_SAMPLES, "lite": 15360}

PRESETS = ("fast", "balanced", "quality", "low-vram")
#: What a chunk that keeps failing transiently yields: still frames (keeps the audio in sync) or an error.
ON_ERROR = ("still", "raise")

#: The ``config`` keys OmniRT 0.1.0 accepts for FlashHead; any other key is a 400 there.
SERVICE_CONFIG_KEYS = frozenset(
    {
        "preset",
        "seed",
        "output_dir",
        "model_type",
        "audio_encode_mode",
        "sample_steps",
        "vae_2d_split",
        "latent_carry",
        "npu_fusion_attention",
        "profile",
        "device",
        "repo_path",
        "ckpt_dir",
        "model_path",
        "wav2vec_dir",
        "python_executable",
        "ascend_env_script",
        "launcher",
        "nproc_per_node",
        "num_processes",
        "visible_devices",
        "accelerate_executable",
        "resident_target",
    }
)
_CHOICES = {"preset": PRESETS, "model_type": ("pro", "lite"), "audio_encode_mode": ("stream", "once")}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one client (all paths absolute, all numbers in range)."""

    base_url: str = DEFAULT_BASE_URL
    model: str = DEFAULT_MODEL
    shared_local_dir: Path = Path(DEFAULT_SHARED_DIR)
    shared_remote_dir: str = DEFAULT_SHARED_DIR
    output_local_dir: Path | None = None
    output_remote_dir: str | None = None
    output_base_url: str | None = None
    timeout_sec: float = 600.0
    preset: str | None = None
    config_json: Mapping[str, Any] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    async_jobs: bool = True
    chunk_samples: int = PRO_SLICE_SAMPLES
    #: CHUNK_SAMPLES was given: the chunk length no longer follows the service's advertised slice.
    chunk_samples_fixed: bool = field(default=False, metadata={"derived": True})
    #: Storage was mapped for the service (SHARED_REMOTE_DIR, OUTPUT_*, an output_dir): use paths even
    #: where the service could take inputs and clips inline.
    storage_mapped: bool = field(default=False, metadata={"derived": True})
    save_dir: Path | None = None
    max_clip_mb: float = 64.0
    chunk_deadline_sec: float = 600.0
    on_error: str = "still"
    max_still_chunks: int = 3
    stall_sec: float = 2.0
    #: OmniRT resident workers to pin sessions to (``config.resident_target``), see targets.py.
    resident_targets: tuple[str, ...] = ()

    @classmethod
    def load(
        cls,
        ws_url: str | None = None,
        model: str | None = None,
        host_config: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings the way the host constructs clients: overrides, environment, host args."""
        env = os.environ if environ is None else environ
        given = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(f"unknown FlashHead setting(s) {unknown}; known: {sorted(known)}")

        def raw(name: str, default: Any = None) -> Any:
            """The override, else the variable, else ``default``: a given 0 or "" is checked, not skipped."""
            if given.get(name) is not None:
                return given[name]
            return env.get(env_name(name), "").strip() or default

        host_config = host_config or {}
        # Hosts pass OpenTalking's flashhead_ws_url; a check or a doctor without one reads the same variable.
        ws_url = ws_url if ws_url is not None else env.get(env_name("ws_url"))
        base_url = raw("base_url", _http_url_or_none(ws_url) or DEFAULT_BASE_URL)
        shared_local = _abs_dir("shared_local_dir", raw("shared_local_dir", DEFAULT_SHARED_DIR))
        output_local = raw("output_local_dir")
        # OpenTalking's own client also read the older name PARAMETERS_JSON.
        config_json = _service_config(raw("config_json", env.get(ENV_PREFIX + "PARAMETERS_JSON", "").strip() or None))
        save_dir = raw("save_dir")
        base_url, url_password = _service_url(base_url)
        api_key = raw("api_key") or url_password
        chunk_samples = raw("chunk_samples", host_config.get("chunk_samples") or None)
        model_type = config_json.get("model_type", "pro")
        return cls(
            base_url=base_url,
            model=str(raw("model", model or DEFAULT_MODEL)),
            shared_local_dir=shared_local,
            shared_remote_dir=_abs_remote("shared_remote_dir", raw("shared_remote_dir", str(shared_local))),
            output_local_dir=_abs_dir("output_local_dir", output_local) if output_local else None,
            output_remote_dir=_opt(raw("output_remote_dir"), lambda v: _abs_remote("output_remote_dir", v)),
            output_base_url=_opt(raw("output_base_url"), lambda v: _url("output_base_url", v)),
            timeout_sec=_positive_float("timeout_sec", raw("timeout_sec", 600.0)),
            preset=_opt(raw("preset"), lambda v: _choice("preset", v, PRESETS)),
            config_json=config_json,
            api_key=str(api_key) if api_key else None,
            async_jobs=_bool("async_jobs", raw("async_jobs"), default=True),
            chunk_samples=_positive_int(
                "chunk_samples", SLICE_SAMPLES[model_type] if chunk_samples is None else chunk_samples
            ),
            chunk_samples_fixed=chunk_samples is not None,
            storage_mapped="output_dir" in config_json
            or any(
                raw(name) for name in ("shared_remote_dir", "output_remote_dir", "output_local_dir", "output_base_url")
            ),
            save_dir=_abs_dir("save_dir", save_dir) if save_dir else None,
            max_clip_mb=_positive_float("max_clip_mb", raw("max_clip_mb", 64.0)),
            chunk_deadline_sec=_positive_float(
                "chunk_deadline_sec", raw("chunk_deadline_sec", raw("timeout_sec", 600.0))
            ),
            on_error=_choice("on_error", raw("on_error", "still"), ON_ERROR),
            max_still_chunks=_count("max_still_chunks", raw("max_still_chunks"), default=3),
            stall_sec=_positive_float("stall_sec", raw("stall_sec", 2.0)),
            resident_targets=parse_targets(env_name("resident_targets"), raw("resident_targets")),
        )

    @property
    def auth_headers(self) -> dict[str, str]:
        """The headers that carry the API key to the service (none without a key)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def output_root(self) -> str | None:
        """Where the user wants the service to write (``CONFIG_JSON``'s ``output_dir``, else
        ``OUTPUT_REMOTE_DIR``); None means inside each session's directory in shared storage."""
        return str(self.config_json["output_dir"]) if "output_dir" in self.config_json else self.output_remote_dir

    def service_config(self, output_dir: str) -> dict[str, Any]:
        """The ``config`` object of a request: whitelisted keys only, and ``output_dir``, the chunk's
        own absolute directory (under :attr:`output_root`), so its clip can be found and removed."""
        config: dict[str, Any] = {"preset": self.preset} if self.preset else {}
        return {**config, **self.config_json, "output_dir": output_dir}


_ENV_SUFFIX = {"async_jobs": "ASYNC"}


def env_name(setting: str) -> str:
    """The environment variable behind a setting, e.g. ``base_url`` → ``OPENTALKING_FLASHHEAD_BASE_URL``."""
    return ENV_PREFIX + _ENV_SUFFIX.get(setting, setting.upper())


def _opt(value: Any, convert: Any) -> Any:
    return None if value is None else convert(value)


def _http_url_or_none(ws_url: str | None) -> str | None:
    """The host passes its realtime ``ws_url``; only an http(s) one can be a /v1/generate base."""
    if ws_url and urlsplit(ws_url).scheme in ("http", "https"):
        return ws_url
    return None


def _url(name: str, value: Any) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = without_userinfo(text)
        raise ConfigError(f"{env_name(name)}={shown!r} is not an http(s) URL; set it like http://host:8766")
    return text


def without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``, so a password never reaches a log line or a message."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _service_url(value: Any) -> tuple[str, str | None]:
    """The base URL without credentials, and the password it carried (the API key when none is set).

    The service authenticates with a bearer key, never Basic auth, so ``user:pass@`` is taken
    off the URL before httpx (or a log line) sees it.
    """
    text = str(value).strip()
    password = urlsplit(text).password
    return _url("base_url", without_userinfo(text)), unquote(password) if password else None


def _abs_dir(name: str, value: Any) -> Path:
    path = Path(str(value)).expanduser()
    if not path.is_absolute():
        raise ConfigError(f"{env_name(name)}={value!r} must be an absolute directory path")
    return path


def _abs_remote(name: str, value: Any) -> str:
    text = str(value).strip()
    if not text.startswith("/"):
        raise ConfigError(f"{env_name(name)}={value!r} must be an absolute path as the service sees it")
    return text.rstrip("/") or "/"


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number <= 0:
        raise ConfigError(f"{env_name(name)}={value!r} must be a whole number greater than 0")
    return number


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"{env_name(name)}={value!r} must be one of {list(choices)}")
    return text


def _count(name: str, value: Any, *, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(f"{env_name(name)}={value!r} must be a whole number, 0 or more")
    return number


def _positive_float(name: str, value: Any) -> float:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not (number > 0 and math.isfinite(number)):
        raise ConfigError(f"{env_name(name)}={value!r} must be a number greater than 0")
    return number


def _bool(name: str, value: Any, *, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ConfigError(f"{env_name(name)}={value!r} must be one of 1/0, true/false, yes/no, on/off")


def _service_config(value: Any) -> dict[str, Any]:
    """Parse and vet CONFIG_JSON so the service never sees a key it would reject."""
    name = env_name("config_json")
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f'{name} is not valid JSON ({exc}); give an object like {{"seed": 7}}') from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a JSON object, got {type(value).__name__}")
    rejected = sorted(set(value) - SERVICE_CONFIG_KEYS)
    if rejected:
        raise ConfigError(
            f"{name} has key(s) {rejected} that the FlashHead service rejects "
            f"(fps, size and frame count are fixed by the model); allowed: {sorted(SERVICE_CONFIG_KEYS)}"
        )
    for key, choices in _CHOICES.items():
        if key in value and value[key] not in choices:
            raise ConfigError(f"{name}: {key}={value[key]!r} is not one of {list(choices)}")
    if "output_dir" in value and not str(value["output_dir"]).startswith("/"):
        raise ConfigError(f"{name}: output_dir={value['output_dir']!r} must be absolute as the service sees it")
    return dict(value)
