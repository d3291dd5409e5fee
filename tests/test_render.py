"""``opentalking-flashhead render``: any audio in, one MP4 out, exact frame count, clean failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from opentalking_flashhead.cli import main
from opentalking_flashhead.render import render
from opentalking_flashhead.standin.serve import running_standin

pytestmark = pytest.mark.service


def voice(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = np.sin(2 * np.pi * 190 * t) * (0.2 + 0.6 * np.abs(np.sin(2 * np.pi * 2.5 * t)))
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def streams(path: Path) -> tuple[int, list[str]]:
    with av.open(str(path)) as container:
        kinds = sorted(s.codec_context.name for s in container.streams)
        return sum(1 for _ in container.decode(video=0)), kinds


@pytest.fixture(scope="module")
def standin_url(tmp_path_factory: pytest.TempPathFactory):
    with running_standin(tmp_path_factory.mktemp("standin"), latency=0.05, capacity=3) as url:
        yield url


@pytest.mark.parametrize(
    ("name", "rate", "channels", "seconds"),
    [("a.wav", 22050, 2, 3.3), ("a.flac", 44100, 1, 2.0), ("a.ogg", 48000, 2, 1.5), ("a.mp3", 16000, 1, 2.7)],
)
def test_any_audio_renders_to_round_duration_frames(
    standin_url: str, avatar_png: Path, tmp_path: Path, name: str, rate: int, channels: int, seconds: float
) -> None:
    source = tmp_path / name
    sf.write(source, voice(seconds, rate, channels), rate)
    with av.open(str(source)) as container:
        stream = container.streams.audio[0]
        duration = float(stream.duration * stream.time_base) if stream.duration else seconds
    out = tmp_path / "out.mp4"
    summary = asyncio.run(
        render(source, avatar_png, out, progress=False, base_url=standin_url, shared_local_dir=str(tmp_path / "io"))
    )
    frames, kinds = streams(out)
    assert frames == summary.frames == round(summary.audio_sec * 25)
    assert abs(summary.audio_sec - duration) < 0.08  # an MP3 decoder may keep one 1152-sample frame of padding
    assert kinds == ["aac", "h264"]
    assert list((tmp_path / "io").iterdir()) == []


def test_parallel_jobs_give_the_same_video(standin_url: str, avatar_png: Path, tmp_path: Path) -> None:
    source = tmp_path / "speech.wav"
    sf.write(source, voice(6.0, 16000), 16000, subtype="PCM_16")
    outputs = []
    for jobs in (1, 3):
        out = tmp_path / f"out{jobs}.mp4"
        asyncio.run(render(source, avatar_png, out, jobs=jobs, progress=False, base_url=standin_url))
        with av.open(str(out)) as container:
            outputs.append([f.to_ndarray(format="gray")[300:420, 180:330].mean() for f in container.decode(video=0)])
    assert len(outputs[0]) == len(outputs[1]) == 150
    assert np.allclose(outputs[0], outputs[1], atol=2.0)  # same frames in the same order


def test_cli_starts_a_labelled_standin_when_no_service_is_configured(
    avatar_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENTALKING_FLASHHEAD_BASE_URL", raising=False)
    source = tmp_path / "speech.wav"
    sf.write(source, voice(1.2, 16000), 16000, subtype="PCM_16")
    out = tmp_path / "out.mp4"
    args = ["render", str(source), "--image", str(avatar_png), "-o", str(out), "--jobs", "2"]
    run = subprocess.run(
        [sys.executable, "-m", "opentalking_flashhead.cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "STAND-IN" in run.stderr
    assert run.stdout.strip().startswith(f"{out}: 2 chunks, 30 frames, 1.20 s of audio in ")
    assert "real-time factor" in run.stdout
    assert streams(out)[0] == 30


@pytest.mark.parametrize("case", ["missing audio", "not audio", "not an image", "unwritable output", "directory"])
def test_bad_input_is_one_clear_line(
    case: str, standin_url: str, avatar_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good_audio = tmp_path / "speech.wav"
    sf.write(good_audio, voice(1.0, 16000), 16000, subtype="PCM_16")
    (tmp_path / "notes.txt").write_text("hello")
    audio, image, out = good_audio, avatar_png, tmp_path / "out.mp4"
    expected = {
        "missing audio": "audio file not found",
        "not audio": "cannot read audio",
        "not an image": "not a readable image",
        "unwritable output": "not a writable directory",
        "directory": "is a directory",
    }[case]
    if case == "missing audio":
        audio = tmp_path / "nope.wav"
    elif case == "not audio":
        audio = tmp_path / "notes.txt"
    elif case == "not an image":
        image = tmp_path / "notes.txt"
    elif case == "unwritable output":
        out = tmp_path / "no-such-dir" / "out.mp4"
    else:
        out = tmp_path
    code = main(["render", str(audio), "--image", str(image), "-o", str(out), "--base-url", standin_url, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]
    assert not (tmp_path / "out.mp4").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_failed_run_leaves_no_partial_output(avatar_png: Path, tmp_path: Path, free_port: int) -> None:
    source = tmp_path / "speech.wav"
    sf.write(source, voice(1.0, 16000), 16000, subtype="PCM_16")
    args = ["render", str(source), "--image", str(avatar_png), "-o", str(tmp_path / "out.mp4")]
    code = main([*args, "--base-url", f"http://127.0.0.1:{free_port}", "-q"])
    assert code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]
