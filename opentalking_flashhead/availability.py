"""Is a FlashHead service really there? The answer behind "flashhead" in the host's model list.

Asks ``/healthz`` then ``/v1/models`` with a short timeout, and caches the answer briefly: every
``GET /models`` (the WebUI reads it once per page load) and every session start consults it. It
asks the service the client would use: both read the host's configuration (``host_config``) under
the environment, and without a base URL both take the host's http(s) ``ws_url``, which is what the
host passes the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from opentalking_flashhead.errors import ConfigError
from opentalking_flashhead.host.hookspecs import ProviderStatus
from opentalking_flashhead.plugin import settings_overrides
from opentalking_flashhead.settings import Settings

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SEC = 1.5
CACHE_SEC = 3.0
READY = "flashhead_ready"

_cache: dict[tuple[str, str, str | None], tuple[float, ProviderStatus]] = {}


async def check_service(host_config: Mapping[str, Any]) -> ProviderStatus:
    """Connected with reason ``flashhead_ready``, or not, with ``not_configured``, ``unreachable``,
    ``unauthorized`` or ``model_missing`` (the details go to the log)."""
    try:
        settings = Settings.load(
            host_config.get("ws_url"), host_config.get("model"), overrides=settings_overrides(host_config)
        )
    except ConfigError as exc:
        log.warning("FlashHead is not configured: %s", exc)
        return ProviderStatus(False, "not_configured")
    key = (settings.base_url, settings.model, settings.api_key)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and now - cached[0] < CACHE_SEC:
        return cached[1]
    status, detail = await _probe(settings)
    previous = cached[1] if cached else None
    if not status.connected and status != previous:
        log.warning("FlashHead service at %s is not available (%s): %s", settings.base_url, status.reason, detail)
    _cache[key] = (now, status)
    return status


async def _probe(settings: Settings) -> tuple[ProviderStatus, str]:
    from opentalking_flashhead import probes  # httpx loads when the host first asks, not with the plugin

    answers = await probes.ask(settings, PROBE_TIMEOUT_SEC)
    if answers.error is not None:
        return ProviderStatus(False, "unreachable"), f"{type(answers.error).__name__}: {answers.error}"
    health, models = answers.health, answers.models
    if models is None:
        assert health is not None
        return ProviderStatus(False, "unreachable"), f"/healthz answered HTTP {health.status_code}"
    if models.status_code in (401, 403):
        return ProviderStatus(False, "unauthorized"), "set OPENTALKING_FLASHHEAD_API_KEY to a key the service accepts"
    listed = set(probes.model_ids(models) or [])
    if settings.model not in listed:
        return ProviderStatus(False, "model_missing"), f"{settings.model!r} is not among {sorted(listed)}"
    return ProviderStatus(True, READY), ""
