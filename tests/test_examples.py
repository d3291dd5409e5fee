"""The examples a new user copies run as written: README's client snippet, examples/client.py, the env file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import servers

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def standin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in as the examples tell users to start it: ``opentalking-flashhead serve-standin``."""
    service = servers.standin(tmp_path_factory.mktemp("standin")).start()
    try:
        yield service.base_url
    finally:
        service.stop()


def client_env(shared: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTALKING_FLASHHEAD_")}
    return {**env, "OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR": str(shared), **more}


def readme_snippet() -> str:
    section = (ROOT / "README.md").read_text().split("## Use the client directly", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's client section has no python block"
    return match.group(1)


@pytest.mark.service
def test_readme_client_snippet_runs(standin_url: str, tmp_path: Path) -> None:
    env = client_env(tmp_path / "shared", OPENTALKING_FLASHHEAD_BASE_URL=standin_url)
    run = subprocess.run(
        [sys.executable, "-c", readme_snippet()], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")[:-1]
    assert lines == ["28 (512, 512, 3)"] * 3 + ["20 (512, 512, 3)"]  # 4.15 s: 104 frames
    assert list((tmp_path / "shared").iterdir()) == []


@pytest.mark.service
def test_example_client_feeds_a_wav_chunk_by_chunk(standin_url: str, tmp_path: Path) -> None:
    last = tmp_path / "last.png"
    command = [sys.executable, "examples/client.py", "examples/hello.wav", "--image", "examples/avatar.png"]
    run = subprocess.run(
        [*command, "--base-url", standin_url, "--last-frame", str(last)],
        cwd=ROOT,
        env=client_env(tmp_path / "shared"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "chunk 0: 28 frames of 512×512 BGR, 0–1080 ms"
    assert lines[3] == "chunk 3: 20 frames of 512×512 BGR, 3360–4120 ms"
    assert lines[4] == "104 frames for 4.15 s of audio"
    with Image.open(last) as frame:
        assert frame.size == (512, 512)


def test_example_client_without_a_service_says_so(tmp_path: Path, free_port: int) -> None:
    command = [sys.executable, "examples/client.py", "examples/hello.wav", "--image", "examples/avatar.png"]
    run = subprocess.run(
        [*command, "--base-url", f"http://127.0.0.1:{free_port}"],
        cwd=ROOT,
        env=client_env(tmp_path / "shared"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error: FlashHead service not connected")


def test_env_file_sources_with_every_line_uncommented_and_lists_every_variable(tmp_path: Path) -> None:
    from dataclasses import fields

    from opentalking_flashhead.settings import Settings, env_name

    text = (ROOT / "examples" / "flashhead.env.example").read_text()
    uncommented = re.sub(r"^# (?=OPENTALKING_\w+=)", "", text, flags=re.M)
    env_file = tmp_path / "flashhead.env"
    env_file.write_text(uncommented)
    script = f"set -eu; set -a; . {env_file}; set +a; env -0"
    run = subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"]}, capture_output=True, timeout=30)
    assert run.returncode == 0 and run.stderr == b"", run.stderr.decode()
    sourced = dict(item.split("=", 1) for item in run.stdout.decode().split("\0") if item.startswith("OPENTALKING_"))
    expected = {env_name(f.name) for f in fields(Settings) if not f.metadata.get("derived")}
    expected |= {env_name("ws_url"), env_name("parameters_json")}
    expected |= {"OPENTALKING_DISABLED_PLUGINS", "OPENTALKING_LOAD_PLUGINS", "OPENTALKING_STRICT_PLUGINS"}
    assert sorted(expected - set(sourced)) == []
    assert sourced[env_name("config_json")] == '{"model_type": "lite"}'
    Settings.load(environ=sourced)  # every example value is one the client accepts
