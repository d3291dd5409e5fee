"""The host adapter against OpenTalking as its next release might look: one seam moved per fake host.

Each fake host is a tiny package tree with OpenTalking's module names, run in a fresh interpreter
twice: with the plugin's import hook and without it (stock). Where the adapter does not know the
host, the host's answer, its module attributes and their names must equal the stock run's, and
stderr must carry the one line that says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYNTHESIS = "opentalking.providers.synthesis"


@dataclass(frozen=True)
class Host:
    """How one fake OpenTalking differs from 0.1.0."""

    version: str = "0.1.0"
    status: str = "dataclass"  # or "namedtuple", "dict", "dataclass-returning-dicts"
    status_function: str = "resolve_model_statuses"
    client_class: str = "FlashHeadWSClient"
    package: str = SYNTHESIS


_STATUS_TYPES = {
    "dataclass": """
        from dataclasses import dataclass

        @dataclass(frozen=True)
        class ModelStatus:
            id: str
            backend: str
            connected: bool
            reason: str
        """,
    "namedtuple": """
        from typing import NamedTuple

        class ModelStatus(NamedTuple):
            id: str
            backend: str
            connected: bool
            reason: str
        """,
    "dict": """
        def ModelStatus(id, backend, connected, reason):  # noqa: N802 (a dict, under the old name's call)
            return {"id": id, "backend": backend, "connected": connected, "reason": reason}
        """,
}


def write_host(root: Path, host: Host) -> Path:
    """Write the fake host's packages and its distribution metadata under ``root``."""
    files = {
        f"opentalking-{host.version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: opentalking\n"
        f"Version: {host.version}\n",
        "opentalking/__init__.py": "",
        "opentalking/core/__init__.py": "",
        "opentalking/core/config.py": """
            import functools

            class Settings:
                model_config = {"env_file": ".env"}
                model_fields_set = frozenset()

            @functools.lru_cache(maxsize=1)
            def get_settings():
                return Settings()
            """,
        f"{host.package.replace('.', '/')}/flashhead/__init__.py": f"""
            class {host.client_class}:
                def __init__(self, ws_url, model, config):
                    self.stock = True
            """,
        f"{host.package.replace('.', '/')}/__init__.py": f"from {host.package}.flashhead import {host.client_class}\n",
        f"{host.package.replace('.', '/')}/availability.py": textwrap.dedent(_STATUS_TYPES[host.status.split("-")[0]])
        + textwrap.dedent(f"""
            def _plain(status):
                return status if isinstance(status, dict) else dict(zip(("id", "backend", "connected", "reason"),
                    (status.id, status.backend, status.connected, status.reason)))

            async def {host.status_function}(settings):
                statuses = [ModelStatus("mock", "mock", True, "mock_ready"),
                            ModelStatus("flashhead", "direct_ws", False, "not_configured")]
                return [_plain(s) for s in statuses] if {host.status.endswith("dicts")} else statuses
            """),
        "apps/__init__.py": "",
        "apps/api/__init__.py": "",
        "apps/api/routes/__init__.py": "",
        "apps/api/routes/models.py": f"""
            from {host.package}.availability import _plain, {host.status_function}

            async def list_models(settings):
                return [_plain(s) for s in await {host.status_function}(settings)]
            """,
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    for package in {parent for name in files if name.endswith(".py") for parent in Path(name).parents}:
        if package.parts:
            (root / package / "__init__.py").touch()
    return root


_RUN = """
import asyncio, importlib, json, sys
import opentalking_flashhead_autoload as autoload
package, function, client_class, hooked = sys.argv[1:5]
sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, autoload.PluginFinder)]
if hooked == "1":
    autoload.install()
modules = [importlib.import_module(name) for name in ("apps.api.routes.models", package + ".availability",
           package + ".flashhead", package)]
from opentalking.core.config import get_settings
answers = [asyncio.run(modules[0].list_models(get_settings())) for _ in range(2)]
seams = [getattr(modules[0], function), getattr(modules[1], function), getattr(modules[2], client_class)]
print(json.dumps({
    "answers": answers,
    "names": [sorted(vars(m)) for m in modules],
    "ours": [hasattr(s, "__opentalking_plugins__") for s in seams],
    "client": type(seams[2](ws_url="", model="soulx-flashhead-1.3b", config={"chunk_samples": 17920})).__name__,
}))
"""


def run_host(root: Path, host: Host, *, hooked: bool, env: dict[str, str]) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", _RUN, host.package, host.status_function, host.client_class, "1" if hooked else "0"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture
def host_env(tmp_path: Path, free_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENTALKING_", "FLASHHEAD_"))}
    return {
        **env,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "host"), str(ROOT)]),
        "OPENTALKING_LOAD_PLUGINS": "flashhead",
        "OPENTALKING_FLASHHEAD_BASE_URL": f"http://127.0.0.1:{free_port}",  # nothing listens there
    }


STOCK = [
    {"id": "mock", "backend": "mock", "connected": True, "reason": "mock_ready"},
    {"id": "flashhead", "backend": "direct_ws", "connected": False, "reason": "not_configured"},
]


def test_the_010_shape_is_adjusted(tmp_path: Path, host_env: dict[str, str]) -> None:
    root = write_host(tmp_path / "host", Host())
    seen, stderr = run_host(root, Host(), hooked=True, env=host_env)
    stock, _ = run_host(root, Host(), hooked=False, env=host_env)
    assert stock["answers"] == [STOCK, STOCK] and stock["client"] == "FlashHeadWSClient"
    unreachable = {"id": "flashhead", "backend": "direct_ws", "connected": False, "reason": "unreachable"}
    assert seen["answers"] == [[STOCK[0], unreachable]] * 2  # our check answers; the mock model keeps its own
    assert seen["ours"] == [True, True, True] and seen["client"] == "FlashHeadClient"
    assert seen["names"] == stock["names"]  # no attribute created
    assert "opentalking plugins: flashhead=loaded" in stderr and "not supported" not in stderr


MOVED = [
    (Host(status="namedtuple"), f"{SYNTHESIS}.availability.ModelStatus is not a dataclass"),
    (Host(status="dict"), f"{SYNTHESIS}.availability.ModelStatus is not a dataclass"),
    (Host(status="dataclass-returning-dicts"), "resolve_model_statuses returned a dict, not a dataclass"),
    (Host(status_function="get_model_statuses"), f"{SYNTHESIS}.availability.resolve_model_statuses missing"),
    (Host(client_class="FlashHeadClient"), f"{SYNTHESIS}.flashhead.FlashHeadWSClient missing"),
    (Host(package="opentalking.synthesis"), f"{SYNTHESIS}.flashhead not found"),
    (Host(version="0.2.0"), "version (this adapter knows >=0.1,<0.2)"),
]


def plugins_command(root: Path, env: dict[str, str], *flags: str) -> str:
    """``opentalking-flashhead plugins`` beside the fake host."""
    command = [sys.executable, "-m", "opentalking_flashhead.cli", "plugins", *flags]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=True).stdout


#: What ``plugins`` can see without running the host (a status function's answer it cannot).
STATIC = [case for case in MOVED if "returned" not in case[1]]


@pytest.mark.parametrize(("host", "seam"), MOVED, ids=[seam for _, seam in MOVED])
def test_an_unknown_host_is_left_stock_with_one_line(
    tmp_path: Path, host_env: dict[str, str], host: Host, seam: str
) -> None:
    root = write_host(tmp_path / "host", host)
    seen, stderr = run_host(root, host, hooked=True, env=host_env)
    stock, _ = run_host(root, host, hooked=False, env=host_env)
    assert seen == stock  # the answers, every attribute and the client class: exactly stock
    assert not any(seen["ours"]) and seen["client"] == host.client_class
    line = f"OpenTalking {host.version} not supported: {seam}; flashhead left stock"
    assert [text for text in stderr.splitlines() if "not supported" in text] == [line]


@pytest.mark.parametrize(("host", "seam"), STATIC, ids=[seam for _, seam in STATIC])
def test_plugins_shows_the_same_verdict(tmp_path: Path, host_env: dict[str, str], host: Host, seam: str) -> None:
    out = plugins_command(write_host(tmp_path / "host", host), host_env, "--json")
    assert json.loads(out)["host"] == {
        "opentalking": host.version,
        "supported": False,
        "verdict": f"OpenTalking {host.version} not supported: {seam}; flashhead left stock",
    }


def test_plugins_accepts_the_010_shape(tmp_path: Path, host_env: dict[str, str]) -> None:
    out = plugins_command(write_host(tmp_path / "host", Host()), host_env)
    assert "host: OpenTalking 0.1.0 supported (adapter for >=0.1,<0.2, contract 1.0)" in out.splitlines()


def test_adapter_errors_give_the_hosts_own_answer(tmp_path: Path, host_env: dict[str, str]) -> None:
    """A host whose settings object the adapter cannot read: the model list is the host's own."""
    root = write_host(tmp_path / "host", Host())
    (root / "opentalking/core/config.py").write_text("def get_settings():\n    return object()\n")
    seen, stderr = run_host(root, Host(), hooked=True, env=host_env)
    assert seen["answers"] == [STOCK, STOCK]
    assert seen["client"] == "FlashHeadWSClient"  # the host's own client, too
    assert "model statuses left as the host has them" in stderr


async def test_a_failing_or_odd_availability_check_keeps_the_hosts_status(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentalking_flashhead.host import opentalking
    from opentalking_flashhead.host.hookspecs import ModelProvider
    from opentalking_flashhead.host.manager import PluginSet, new_manager

    async def broken(host_config: object) -> object:
        raise RuntimeError("plugin bug")

    async def odd(host_config: object) -> object:
        return {"connected": True}

    stock = SimpleNamespace(id="flashhead", backend="direct_ws", connected=False, reason="not_configured")
    for check in (broken, odd):
        provider = ModelProvider("flashhead", "test", dict, check)  # type: ignore[arg-type]
        monkeypatch.setattr(opentalking, "plugins", lambda p=provider: PluginSet(new_manager(), [], {"flashhead": p}))
        assert await opentalking._provider_status(stock, {}) is stock
