"""Is a FlashHead service there? ``/healthz``, then ``/v1/models``, asked one way for everyone.

The host's availability check and ``doctor`` ask the same two questions: with the key, health
first, the model list only from a healthy service. Each words the answers its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from opentalking_flashhead.settings import Settings

HEALTH_PATH = "/healthz"
MODELS_PATH = "/v1/models"


@dataclass
class Answers:
    """What the service answered; ``unanswered`` names the route that got no answer, ``error`` why."""

    health: httpx.Response | None = None
    models: httpx.Response | None = None
    unanswered: str | None = None
    error: httpx.HTTPError | None = None


async def ask(settings: Settings, timeout: float) -> Answers:
    """Health, then (when it answered 200) the model list, each within ``timeout`` seconds."""
    async with httpx.AsyncClient(base_url=settings.base_url, headers=settings.auth_headers, timeout=timeout) as http:
        try:
            health = await http.get(HEALTH_PATH)
        except httpx.HTTPError as exc:
            return Answers(unanswered=HEALTH_PATH, error=exc)
        if health.status_code != 200:
            return Answers(health)
        try:
            return Answers(health, await http.get(MODELS_PATH))
        except httpx.HTTPError as exc:
            return Answers(health, unanswered=MODELS_PATH, error=exc)


def model_ids(response: httpx.Response) -> list[str] | None:
    """The model ids of an OpenAI-style model list, sorted, or None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return sorted(str(m.get("id")) for m in data if isinstance(m, dict))
