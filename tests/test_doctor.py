"""``opentalking-flashhead doctor`` against a real local service: a line per check, fixes, exit status."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from opentalking_flashhead.cli import main
from opentalking_flashhead.server.serve import running_standin

import servers

pytestmark = pytest.mark.service
KEY = "doctor-secret-key"


@pytest.fixture(scope="module")
def keyed_standin(tmp_path_factory: pytest.TempPathFactory):
    with running_standin(tmp_path_factory.mktemp("out"), api_keys={KEY}) as url:
        yield url


#: Answers /healthz like a service, but is no FlashHead service: a web page at /v1/models, and
#: under /slow/ a model list that never comes.
NOT_FLASHHEAD = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow/v1/models":
            time.sleep(60)
        body = b'{"ok": true}' if self.path.endswith("/healthz") else b"<html>a web page</html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def doctor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, **env: str
) -> tuple[int, list[str]]:
    for name, value in env.items():
        monkeypatch.setenv(f"OPENTALKING_FLASHHEAD_{name}", value)
    code = main(["doctor", *args])
    return code, capsys.readouterr().out.splitlines()


def assert_every_line_is_a_check(lines: list[str]) -> None:
    assert lines and all(line[:2] in ("✓ ", "✗ ") or line.startswith("    fix: ") for line in lines), lines


def test_healthy_deployment_passes_every_check(keyed_standin, shared_dir: Path, monkeypatch, capsys) -> None:
    code, lines = doctor(monkeypatch, capsys, BASE_URL=keyed_standin, SHARED_LOCAL_DIR=str(shared_dir), API_KEY=KEY)
    assert code == 0, lines
    assert [line[0] for line in lines] == ["✓"] * 7
    probe = next(line for line in lines if line.startswith("✓ probe generation (1 slice): 28 frames in "))
    assert "inputs sent inline (no shared storage needed)" in probe  # the stand-in offers inline-io
    assert all(KEY not in line for line in lines)
    assert list(shared_dir.iterdir()) == []


def test_output_dir_mapping_is_proven_by_the_probe(
    keyed_standin, shared_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir(), elsewhere.mkdir()
    env = {"BASE_URL": keyed_standin, "SHARED_LOCAL_DIR": str(shared_dir), "API_KEY": KEY}
    code, lines = doctor(monkeypatch, capsys, **env, OUTPUT_REMOTE_DIR=str(out), OUTPUT_LOCAL_DIR=str(out))
    assert code == 0, lines
    assert f"✓ output dir mapping: clips come back from {out} (the service's {out})" in lines[3]
    assert lines[-1].startswith("✓ clip readable and decodable: 28 frames of 28") and str(out) in lines[-1]
    # The service writes into OUTPUT_REMOTE_DIR; a local dir that is not the same place fails the probe.
    code, lines = doctor(monkeypatch, capsys, **env, OUTPUT_REMOTE_DIR=str(out), OUTPUT_LOCAL_DIR=str(elsewhere))
    assert code == 1
    assert lines[-3].startswith("✓ probe generation (1 slice): the service generated a clip")
    assert lines[-2].startswith("✗ clip readable and decodable: ") and "is not readable from this machine" in lines[-2]
    assert lines[-1].startswith("    fix: map the service's output dir")


def test_output_local_dir_without_its_remote_is_caught(
    keyed_standin, shared_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    env = {"BASE_URL": keyed_standin, "SHARED_LOCAL_DIR": str(shared_dir), "API_KEY": KEY}
    code, lines = doctor(monkeypatch, capsys, **env, OUTPUT_LOCAL_DIR=str(tmp_path))
    assert code == 1
    assert lines[3].startswith("✗ output dir mapping: OPENTALKING_FLASHHEAD_OUTPUT_LOCAL_DIR is set but")
    assert (
        lines[4]
        == f"    fix: set OPENTALKING_FLASHHEAD_OUTPUT_REMOTE_DIR to the path under which the service sees {tmp_path}"
    )


def test_a_service_whose_generations_all_fail_fails_the_probe_quickly(
    failing_standin: str, shared_dir: Path, monkeypatch, capsys
) -> None:
    started = time.monotonic()
    code, lines = doctor(
        monkeypatch, capsys, "--timeout", "2", BASE_URL=failing_standin, SHARED_LOCAL_DIR=str(shared_dir)
    )
    assert time.monotonic() - started < 15
    assert code == 1
    assert lines[-2].startswith("✗ probe generation (1 slice): ") and "(--fail-rate)" in lines[-2]
    assert lines[-1].startswith("    fix: it kept failing for 2 s: read the service's log")
    assert list(shared_dir.iterdir()) == []


@pytest.fixture(scope="module")
def not_flashhead(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("web")
    (workdir / "web.py").write_text(NOT_FLASHHEAD)
    port = servers.free_port()
    command = [sys.executable, str(workdir / "web.py"), str(port)]
    service = servers.ServiceProcess("web", command, workdir, workdir / "web.log", port).start()
    yield service.base_url
    service.stop()


@pytest.mark.parametrize("path", ["", "/slow"], ids=["web page", "hanging"])
def test_a_server_that_is_not_flashhead_gets_check_lines(
    not_flashhead: str, path: str, shared_dir: Path, monkeypatch, capsys
) -> None:
    code, lines = doctor(monkeypatch, capsys, BASE_URL=not_flashhead + path, SHARED_LOCAL_DIR=str(shared_dir))
    assert code == 1
    assert_every_line_is_a_check(lines)
    failed = next(i for i, line in enumerate(lines) if line.startswith("✗"))
    expected = "ReadTimeout after 5 s" if path else "answered HTTP 200 text/html, not a model list: '<html>"
    assert lines[failed].startswith(f"✗ model listed: {not_flashhead}{path}/v1/models")
    assert expected in lines[failed]
    assert lines[failed + 1].startswith("    fix: make sure OPENTALKING_FLASHHEAD_BASE_URL points at the FlashHead")
    assert lines[-1] == "✗ probe generation (1 slice): not run: fix the checks above first"


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
    assert not [line for line in lines if line.startswith("✓") and "mapping" in line]  # nothing claims it works
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
