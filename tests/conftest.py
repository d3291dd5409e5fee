"""Fixtures: real local FlashHead services, shared storage, a face to animate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import servers

SERVICE_KINDS = ["omnirt", "standin", "serve"]


def _started(service: servers.ServiceProcess) -> Iterator[servers.ServiceProcess]:
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session", params=SERVICE_KINDS)
def flashhead_service(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A running FlashHead service of each kind: the real OmniRT server, our stand-in, our resident ``serve``."""
    factory = getattr(servers, request.param)
    yield from _started(factory(tmp_path_factory.mktemp(request.param)))


@pytest.fixture(scope="session", params=SERVICE_KINDS)
def flashhead_service_with_key(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The same, started with an API key file holding one key."""
    factory = getattr(servers, request.param)
    yield from _started(factory(tmp_path_factory.mktemp(f"{request.param}-key"), api_key="test-key-123"))


@pytest.fixture(scope="session")
def failing_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in with every generation failing transiently (``--fail-rate 1.0``); its base URL."""
    service = servers.standin(tmp_path_factory.mktemp("failing"), extra_args=("--fail-rate", "1.0"))
    for started in _started(service):
        yield started.base_url


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    """A fresh shared-storage directory (as both sides see it)."""
    path = tmp_path / "shared"
    path.mkdir()
    return path


@pytest.fixture
def free_port() -> int:
    return servers.free_port()


@pytest.fixture(scope="session")
def avatar_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simple drawn face, 640×480 so the service has to crop it."""
    path = tmp_path_factory.mktemp("avatar") / "face.png"
    image = Image.new("RGB", (640, 480), (70, 110, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((200, 60, 440, 400), fill=(230, 190, 160))
    draw.ellipse((260, 170, 290, 200), fill=(40, 40, 40))
    draw.ellipse((350, 170, 380, 200), fill=(40, 40, 40))
    image.save(path)
    return path
