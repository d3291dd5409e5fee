"""The answer behind "flashhead" in OpenTalking's model list, against real local services."""

from __future__ import annotations

import pytest

from opentalking_flashhead import availability
from opentalking_flashhead.plugin import check_availability, create_client
from opentalking_flashhead.server.serve import running_standin

pytestmark = pytest.mark.service


@pytest.fixture(autouse=True)
def fresh_cache():
    availability._cache.clear()
    yield
    availability._cache.clear()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory):
    with running_standin(tmp_path_factory.mktemp("out"), api_keys={"k1"}) as url:
        yield url


@pytest.mark.parametrize(
    ("env", "reason", "connected"),
    [
        ({"API_KEY": "k1"}, "flashhead_ready", True),
        ({}, "unauthorized", False),
        ({"API_KEY": "k1", "MODEL": "soulx-flashhead-9b"}, "model_missing", False),
        ({"API_KEY": "k1", "TIMEOUT_SEC": "soon"}, "not_configured", False),
    ],
)
async def test_reasons(keyed: str, monkeypatch, env: dict[str, str], reason: str, connected: bool) -> None:
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_BASE_URL", keyed)
    for name, value in env.items():
        monkeypatch.setenv(f"OPENTALKING_FLASHHEAD_{name}", value)
    status = await check_availability({})
    assert (status.connected, status.reason) == (connected, reason)


async def test_unreachable_and_cached(monkeypatch, free_port: int) -> None:
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_BASE_URL", f"http://127.0.0.1:{free_port}")
    first = await check_availability({})
    assert (first.connected, first.reason) == (False, "unreachable")
    assert await check_availability({}) is first  # answered from the short cache


async def test_probes_the_service_the_client_uses_when_only_the_ws_url_is_set(keyed: str, monkeypatch) -> None:
    """Without BASE_URL the client takes the host's http(s) ws_url as its base; so must the check."""
    monkeypatch.delenv("OPENTALKING_FLASHHEAD_BASE_URL", raising=False)
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_WS_URL", keyed)  # what OpenTalking passes as ws_url
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_API_KEY", "k1")
    client = create_client({}, ws_url=keyed, model="soulx-flashhead-1.3b", config={})
    assert client.settings.base_url == keyed.rstrip("/")
    status = await check_availability({})
    assert (status.connected, status.reason) == (True, "flashhead_ready")


async def test_reads_the_host_config_it_is_given(keyed: str, monkeypatch) -> None:
    """The host's ws_url and .env key arrive as a mapping, not as environment variables."""
    for name in ("BASE_URL", "WS_URL", "API_KEY"):
        monkeypatch.delenv(f"OPENTALKING_FLASHHEAD_{name}", raising=False)
    status = await check_availability({"ws_url": keyed, "api_key": "k1"})
    assert (status.connected, status.reason) == (True, "flashhead_ready")
    assert (await check_availability({"ws_url": keyed, "api_key": "wrong"})).reason == "unauthorized"
