"""The command line as a new user meets it: ``--version``, help for every flag, a busy port."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from opentalking_flashhead import __version__
from opentalking_flashhead.cli import build_parser, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"opentalking-flashhead {__version__}"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_flag_of_every_subcommand_has_help(name: str) -> None:
    parser = subcommands()[name]
    undocumented = [a.dest for a in parser._actions if not a.help]
    assert undocumented == []
    text = parser.format_help()
    assert "``" not in text and ":class:" not in text


def test_busy_port_is_named_before_listening(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = [sys.executable, "-m", "opentalking_flashhead.cli", "serve-standin", "--port", str(port)]
        run = subprocess.run(
            [*command, "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
        )
    assert run.returncode == 1
    assert "listening" not in run.stdout
    assert run.stderr.strip() == (
        f"error: port {port} on 127.0.0.1 is already in use (another service, or an earlier run still going); "
        "stop what holds it, or choose another port with --port"
    )


def test_render_without_audio_names_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--image", "examples/avatar.png"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: render needs AUDIO and -o OUT.mp4 (or --preview-crop PNG to see only the face's crop)"
    )
