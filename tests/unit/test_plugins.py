"""The plugin half: entry point, hook registration, loader isolation, allow/deny lists, import cost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from opentalking_flashhead import plugin
from opentalking_flashhead.host.hookspecs import ModelProvider
from opentalking_flashhead.host.hostconfig import host_config
from opentalking_flashhead.host.manager import load_plugins, new_manager
from opentalking_flashhead.host.seams import SUPPORTED_RANGE


def test_entry_point_is_declared() -> None:
    (ep,) = [ep for ep in entry_points(group="opentalking") if ep.name == "flashhead"]
    assert ep.value == "opentalking_flashhead.plugin"
    assert ep.load() is plugin


def test_registers_on_a_fresh_manager() -> None:
    manager = new_manager()
    manager.register(plugin, name="flashhead")
    manager.check_pending()
    offered: list[ModelProvider] = []
    manager.hook.register_models(register=offered.append)
    (provider,) = offered
    assert provider.id == "flashhead" and "FlashHead" in provider.label
    assert callable(provider.create_client) and callable(provider.check_availability)


def test_factory_builds_the_client_with_host_arguments(tmp_path: Path) -> None:
    client = plugin.create_client({}, ws_url="", model="soulx-flashhead-1.3b", config={"chunk_samples": 16000})
    assert type(client).__name__ == "FlashHeadClient" and client.audio_chunk_samples > 0


def test_factory_takes_the_host_config_under_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's configuration reaches the client as arguments; a real variable still wins; nothing is exported."""
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_TIMEOUT_SEC", "42")
    before = dict(os.environ)
    config = {"api_key": "key-from-dotenv", "timeout_sec": "7", "base_url": "http://yaml:8766", "ws_url": "ignored"}
    client = plugin.create_client(config, ws_url="", model="soulx-flashhead-1.3b", config={})
    assert (client.settings.api_key, client.settings.timeout_sec) == ("key-from-dotenv", 42.0)
    assert client.settings.base_url == "http://yaml:8766"
    assert dict(os.environ) == before


def test_the_opentalking_extra_declares_the_range_the_adapter_knows() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["opentalking"] == [f"opentalking{SUPPORTED_RANGE}"]


def fake_distribution(root: Path, dist: str, entry: str, module: str, source: str) -> None:
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[opentalking]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def extra_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake_distribution(tmp_path, "broken-plugin", "broken", "broken_plugin", "raise ImportError('no GPU today')\n")
    fake_distribution(
        tmp_path,
        "other-plugin",
        "other",
        "other_plugin",
        """
        from opentalking_flashhead.host.hookspecs import ModelProvider, ProviderStatus, hookimpl

        async def ready():
            return ProviderStatus(True, "ok")

        @hookimpl
        def register_models(register):
            register(ModelProvider("othermodel", "Other", dict, ready))
            register(ModelProvider("flashhead", "Impostor", dict, ready))
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_broken_plugin_is_recorded_and_skipped(extra_plugins: Path) -> None:
    loaded = load_plugins({})
    records = {r.name: r for r in loaded.records}
    assert records["broken"].status == "failed"
    assert "ImportError: no GPU today" in (records["broken"].error or "")
    assert (records["broken"].distribution, records["broken"].version) == ("broken-plugin", "1.2.3")
    assert records["flashhead"].status == "loaded" and records["other"].status == "loaded"
    assert loaded.providers["flashhead"].label.startswith("FlashHead")  # first owner keeps the id
    assert set(loaded.providers) == {"flashhead", "othermodel"}


def test_two_distributions_with_one_entry_point_name_keep_each_other(
    extra_plugins: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second "other" (from another distribution) that fails must not unregister the first."""
    fork = extra_plugins / "second"
    fake_distribution(fork, "other-plugin-fork", "other", "other_fork", "raise ImportError('fork')\n")
    monkeypatch.syspath_prepend(str(fork))
    loaded = load_plugins({})
    others = {r.distribution: r for r in loaded.records if r.name == "other"}
    assert others["other-plugin"].status == "loaded" and others["other-plugin-fork"].status == "failed"
    assert loaded.manager.has_plugin("other-plugin:other") and "othermodel" in loaded.providers
    assert [impl.plugin_name for impl in loaded.manager.hook.register_models.get_hookimpls()].count(
        "other-plugin:other"
    ) == 1


def test_strict_mode_reraises(extra_plugins: Path) -> None:
    with pytest.raises(ImportError, match="no GPU today"):
        load_plugins({"OPENTALKING_STRICT_PLUGINS": "1"})


@pytest.mark.parametrize(
    ("env", "loaded_names"),
    [
        ({"OPENTALKING_LOAD_PLUGINS": ""}, set()),
        ({"OPENTALKING_LOAD_PLUGINS": "flashhead"}, {"flashhead"}),
        ({"OPENTALKING_LOAD_PLUGINS": "other-plugin, flashhead"}, {"flashhead", "other"}),
        ({"OPENTALKING_DISABLED_PLUGINS": "broken,other"}, {"flashhead"}),
        ({"OPENTALKING_DISABLED_PLUGINS": "opentalking-flashhead,broken"}, {"other"}),
    ],
)
def test_allow_and_deny_lists(extra_plugins: Path, env: dict[str, str], loaded_names: set[str]) -> None:
    records = load_plugins(env).records
    assert {r.name for r in records if r.status == "loaded"} == loaded_names
    assert {r.name for r in records if r.status == "disabled"} == {"broken", "flashhead", "other"} - loaded_names


def run_python(code: str, *flags: str) -> str:
    return subprocess.run([sys.executable, *flags, "-c", code], check=True, capture_output=True, text=True).stdout


def test_plugin_import_is_light() -> None:
    out = run_python(
        "import sys, json; import opentalking_flashhead.plugin; "
        "print(json.dumps([m for m in ('numpy', 'av', 'httpx', 'opentalking', 'PIL') if m in sys.modules]))"
    )
    assert json.loads(out) == []


def test_autoload_imports_nothing_else_and_hooks_only_its_targets() -> None:
    # -S: no site processing, so the installed .pth has not already imported it.
    root = Path(__file__).resolve().parents[2]
    out = run_python(
        f"import sys, json; sys.path.insert(0, {str(root)!r}); before = set(sys.modules); "
        "import opentalking_flashhead_autoload as a; a.install(); new = sorted(set(sys.modules) - before); "
        "print(json.dumps([new, sum(isinstance(f, a.PluginFinder) for f in sys.meta_path)]))",
        "-S",
    )
    new, finders = json.loads(out)
    assert new == ["opentalking_flashhead_autoload"]
    assert finders == 1


def test_cli_lists_plugins_as_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "opentalking_flashhead.cli", "plugins", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report = json.loads(out)
    assert report["interpreter"] == sys.executable
    (mine,) = [p for p in report["plugins"] if p["name"] == "flashhead"]
    assert mine["status"] == "loaded" and mine["providers"] == ["flashhead"]
    assert mine["distribution"] == "opentalking-flashhead"


class FakeHostSettings:
    """What host_config reads of OpenTalking's settings: the values and which ones a source set."""

    flashhead_base_url = "http://yaml:8766"
    flashhead_model = "soulx-flashhead-1.3b"
    flashhead_timeout_sec = 30.0
    flashhead_fps = 30
    flashhead_output_base_url = ""
    model_fields_set = frozenset(
        {"flashhead_base_url", "flashhead_timeout_sec", "flashhead_fps", "flashhead_output_base_url", "api_port"}
    )


def test_host_config_takes_only_what_the_user_set_and_the_model_allows() -> None:
    dotenv = {
        "OPENTALKING_FLASHHEAD_BASE_URL": "http://dotenv:8766",  # the host resolved it to the YAML one
        "OPENTALKING_FLASHHEAD_API_KEY": "k1",  # no host field: read from .env itself
        "OPENTALKING_FLASHHEAD_PRESET": "fast",
        "OPENTALKING_FLASHHEAD_WIDTH": "256",  # fixed by the model
        "OPENTALKING_FLASHHEAD_SAVE_DIR": None,  # "NAME" without a value
        "OPENTALKING_LLM_MODEL": "qwen",
    }
    assert host_config(FakeHostSettings(), dotenv) == {
        "base_url": "http://yaml:8766",
        "timeout_sec": "30.0",
        "api_key": "k1",
        "preset": "fast",
    }


def test_plugin_summary_shows_without_logging_set_up() -> None:
    """OpenTalking's api and worker never configure logging: the one-line summary must still show."""
    out = subprocess.run(
        [sys.executable, "-c", "from opentalking_flashhead.host.opentalking import plugins; plugins()"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OPENTALKING_DISABLED_PLUGINS": ""},
    )
    assert "opentalking plugins: flashhead=loaded" in out.stderr
