"""``opentalking-flashhead doctor`` against a real local service: a line per check, fixes, exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from opentalking_flashhead.cli import main
from opentalking_flashhead.standin.serve import running_standin

pytestmark = pytest.mark.service
KEY = "doctor-secret-key"


@pytest.fixture(scope="module")
def keyed_standin(tmp_path_factory: pytest.TempPathFactory):
    with running_standin(tmp_path_factory.mktemp("out"), api_keys={KEY}) as url:
        yield url


def doctor(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], **env: str) -> tuple[int, list[str]]:
    for name, value in env.items():
        monkeypatch.setenv(f"OPENTALKING_FLASHHEAD_{name}", value)
    code = main(["doctor"])
    return code, capsys.readouterr().out.splitlines()


def test_healthy_deployment_passes_every_check(keyed_standin, shared_dir: Path, monkeypatch, capsys) -> None:
    code, lines = doctor(monkeypatch, capsys, BASE_URL=keyed_standin, SHARED_LOCAL_DIR=str(shared_dir), API_KEY=KEY)
    assert code == 0, lines
    assert [line[0] for line in lines] == ["✓"] * 8
    assert any(line.startswith("✓ probe generation (1 slice): 28 frames in ") for line in lines)
    assert all(KEY not in line for line in lines)
    assert list(shared_dir.iterdir()) == []


def test_missing_key_is_named_with_its_fix(keyed_standin, shared_dir: Path, monkeypatch, capsys) -> None:
    code, lines = doctor(monkeypatch, capsys, BASE_URL=keyed_standin, SHARED_LOCAL_DIR=str(shared_dir))
    assert code == 1
    failed = [line for line in lines if line.startswith("✗")]
    assert failed[0].startswith("✗ API key accepted: /v1/models answered HTTP 401")
    assert "fix: set OPENTALKING_FLASHHEAD_API_KEY" in lines[lines.index(failed[0]) + 1]
    assert failed[-1] == "✗ probe generation (1 slice): not run: fix the checks above first"


def test_wrong_remote_prefix_is_caught_by_the_probe(keyed_standin, shared_dir: Path, monkeypatch, capsys) -> None:
    code, lines = doctor(
        monkeypatch,
        capsys,
        BASE_URL=keyed_standin,
        SHARED_LOCAL_DIR=str(shared_dir),
        API_KEY=KEY,
        SHARED_REMOTE_DIR="/not/where/the/service/looks",
    )
    assert code == 1
    probe = next(i for i, line in enumerate(lines) if line.startswith("✗ probe generation"))
    assert "does not exist locally" in lines[probe]
    assert "OPENTALKING_FLASHHEAD_SHARED_REMOTE_DIR" in lines[probe + 1]
    assert list(shared_dir.iterdir()) == []


def test_unreachable_service_and_bad_variables(free_port: int, shared_dir: Path, monkeypatch, capsys) -> None:
    url = f"http://127.0.0.1:{free_port}"
    code, lines = doctor(monkeypatch, capsys, BASE_URL=url, SHARED_LOCAL_DIR=str(shared_dir))
    assert code == 1
    assert any(line.startswith(f"✗ service health: http://127.0.0.1:{free_port}/healthz") for line in lines)
    code, lines = doctor(monkeypatch, capsys, TIMEOUT_SEC="soon")
    assert code == 1
    assert lines[0].startswith("✗ settings parse: OPENTALKING_FLASHHEAD_TIMEOUT_SEC='soon'")


def test_unwritable_shared_dir(tmp_path: Path, keyed_standin, monkeypatch, capsys) -> None:
    code, lines = doctor(monkeypatch, capsys, BASE_URL=keyed_standin, SHARED_LOCAL_DIR=str(tmp_path / "missing"))
    assert code == 1
    assert lines[1].startswith("✗ OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR writable")
    assert "mkdir -p" in lines[2]
