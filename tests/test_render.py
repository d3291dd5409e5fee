"""``opentalking-flashhead render``: any audio in, one MP4 out, exact frame count, clean failures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from opentalking_flashhead.cli import main
from opentalking_flashhead.render import render
from opentalking_flashhead.server.serve import running_standin

import servers

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
            outputs.append([f.to_ndarray(format="gray")[250:330, 200:312].mean() for f in container.decode(video=0)])
    assert len(outputs[0]) == len(outputs[1]) == 150
    assert np.allclose(outputs[0], outputs[1], atol=2.0)  # same frames in the same order


def render_args(audio: Path, image: Path, out: Path, *extra: str) -> list[str]:
    """``render AUDIO --image IMAGE -o OUT`` and any further options, as the CLI takes them."""
    return ["render", str(audio), "--image", str(image), "-o", str(out), *extra]


def cli(*args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen[str]:
    """The command as a user runs it, in its own process (signals, exit status, temp dirs)."""
    command = [sys.executable, "-m", "opentalking_flashhead.cli", *args]
    return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def test_cli_starts_a_labelled_standin_in_a_scratch_dir_when_no_service_is_configured(
    avatar_png: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTALKING_FLASHHEAD_")}
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    source = tmp_path / "speech.wav"
    sf.write(source, voice(1.2, 16000), 16000, subtype="PCM_16")
    out = tmp_path / "out.mp4"
    run = cli(*render_args(source, avatar_png, out, "--jobs", "2"), env={**env, "TMPDIR": str(scratch_root)})
    sessions = set()
    while run.poll() is None:  # the session lives in a scratch dir of this run, not in the shared default
        sessions.update(scratch_root.glob("flashhead-standin-*/session-*"))
        time.sleep(0.005)
    stdout, stderr = run.communicate()
    assert run.returncode == 0, stderr
    assert "STAND-IN" in stderr
    assert stdout.strip().startswith(f"{out}: 2 chunks, 30 frames, 1.20 s of audio in ")
    assert "real-time factor" in stdout
    assert streams(out)[0] == 30
    assert sessions
    assert list(scratch_root.iterdir()) == []  # removed afterwards


@pytest.mark.parametrize("service", ["--base-url", "none configured"])
@pytest.mark.parametrize(
    "case", ["missing audio", "not audio", "not an image", "missing dir", "system dir", "directory"]
)
def test_bad_input_is_one_clear_line(
    case: str,
    service: str,
    standin_url: str,
    avatar_png: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good_audio = tmp_path / "speech.wav"
    sf.write(good_audio, voice(1.0, 16000), 16000, subtype="PCM_16")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    audio, image, out = good_audio, avatar_png, tmp_path / "out.mp4"
    if case == "missing audio":
        audio = tmp_path / "nope.wav"
    elif case == "not audio":
        audio = notes
    elif case == "not an image":
        image = notes
    elif case == "missing dir":
        out = tmp_path / "no-such-dir" / "out.mp4"
    elif case == "system dir":
        out = Path("/sys/out.mp4")  # os.access says root may write there; it may not
    else:
        out = tmp_path
    expected = {
        "missing audio": f"audio file not found: {audio}",
        "not audio": f"cannot read audio from {notes}: Invalid data found when processing input; give a WAV,",
        "not an image": f"{notes} is not a readable image (not an image format Pillow reads); give a PNG or JPEG",
        "missing dir": f"cannot write {out}: {out.parent} is not a writable directory",
        "system dir": "cannot write /sys/out.mp4: /sys is not a writable directory",
        "directory": f"output {tmp_path} is a directory",
    }[case]
    args = render_args(audio, image, out, "-q")
    if service == "--base-url":
        args += ["--base-url", standin_url]
    else:
        monkeypatch.delenv("OPENTALKING_FLASHHEAD_BASE_URL", raising=False)
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith(f"error: {expected}"), err
    assert "Errno" not in err[0] and "<_io." not in err[0]
    assert not (tmp_path / "out.mp4").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_a_chunk_that_keeps_failing_fails_the_run(
    failing_standin: str, avatar_png: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    source = tmp_path / "speech.wav"
    sf.write(source, voice(2.0, 16000), 16000, subtype="PCM_16")
    shared = tmp_path / "shared"
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR", str(shared))
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_CHUNK_DEADLINE_SEC", "1")
    started = time.monotonic()
    args = render_args(source, avatar_png, tmp_path / "out.mp4", "-q")
    code = main([*args, "--base-url", failing_standin])
    assert time.monotonic() - started < 15
    assert code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "(--fail-rate)" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared", "speech.wav"]
    assert list(shared.iterdir()) == []


def test_sigterm_cleans_up_like_ctrl_c(avatar_png: Path, tmp_path: Path) -> None:
    slow = servers.standin(tmp_path, extra_args=("--latency", "2")).start()
    shared, out_dir = tmp_path / "shared", tmp_path / "out"
    out_dir.mkdir()
    source = tmp_path / "speech.wav"
    sf.write(source, voice(4.0, 16000), 16000, subtype="PCM_16")
    env = {**os.environ, "OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR": str(shared)}
    try:
        run = cli(*render_args(source, avatar_png, out_dir / "out.mp4", "-q", "--base-url", slow.base_url), env=env)
        deadline = time.monotonic() + 60
        while not (out_dir / ".out.mp4.partial").exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # in the middle of the first chunk's 2 s
        assert list(shared.glob("session-*"))
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=30)
    finally:
        slow.stop()
    assert run.returncode == 130, stderr
    assert list(out_dir.iterdir()) == []
    assert list(shared.iterdir()) == []


def test_failed_run_leaves_no_partial_output(avatar_png: Path, tmp_path: Path, free_port: int) -> None:
    source = tmp_path / "speech.wav"
    sf.write(source, voice(1.0, 16000), 16000, subtype="PCM_16")
    args = render_args(source, avatar_png, tmp_path / "out.mp4")
    code = main([*args, "--base-url", f"http://127.0.0.1:{free_port}", "-q"])
    assert code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]


def test_an_existing_output_is_kept_unless_forced(
    standin_url: str, avatar_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "speech.wav"
    sf.write(source, voice(1.0, 16000), 16000, subtype="PCM_16")
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the user's earlier video")
    args = [*render_args(source, avatar_png, out, "-q"), "--base-url", standin_url]
    assert main(args) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: output {out} already exists; give --force to overwrite it, or another name"
    )
    assert out.read_bytes() == b"the user's earlier video"
    assert main([*args, "--force"]) == 0
    assert streams(out)[0] == 25


def test_an_output_not_named_mp4_is_refused(avatar_png: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "speech.wav"
    sf.write(source, voice(1.0, 16000), 16000, subtype="PCM_16")
    assert main(render_args(source, avatar_png, tmp_path / "out.mov", "-q")) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: output {tmp_path / 'out.mov'} does not end in .mp4, but render writes an MP4; name it out.mp4"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]


def test_ws_url_names_the_service_as_for_the_client(
    standin_url: str, avatar_png: Path, tmp_path: Path, free_port: int, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    source = tmp_path / "speech.wav"
    sf.write(source, voice(1.0, 16000), 16000, subtype="PCM_16")
    monkeypatch.delenv("OPENTALKING_FLASHHEAD_BASE_URL", raising=False)
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_CHUNK_DEADLINE_SEC", "1")
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_SHARED_LOCAL_DIR", str(tmp_path / "shared"))
    # A WS_URL where nothing listens fails the run: no stand-in is started in its place.
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_WS_URL", f"http://127.0.0.1:{free_port}")
    assert main(render_args(source, avatar_png, tmp_path / "dead.mp4", "-q")) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{free_port}" in err and "STAND-IN" not in err
    monkeypatch.setenv("OPENTALKING_FLASHHEAD_WS_URL", standin_url)
    assert main(render_args(source, avatar_png, tmp_path / "out.mp4", "-q")) == 0
    assert "No FlashHead service configured" not in capsys.readouterr().err
    assert streams(tmp_path / "out.mp4")[0] == 25


def test_preview_crop_writes_the_square_the_model_animates_and_warns(tmp_path: Path, capsys) -> None:
    from PIL import Image

    face = tmp_path / "small.png"
    image = Image.new("RGBA", (300, 400), (200, 150, 120, 255))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.save(face)
    crop = tmp_path / "crop.png"
    assert main(["render", "--image", str(face), "--preview-crop", str(crop)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{crop}: the 512×512 square of {face} that the model animates"
    warnings = err.strip().splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith("warning: the face image is 300×400: smaller than 512×512 on its short side")
    assert warnings[1].startswith("warning: the face image has transparent pixels")
    with Image.open(crop) as written:
        assert written.size == (512, 512) and written.mode == "RGB"
        assert written.getpixel((256, 256)) == (200, 150, 120)


def test_a_large_opaque_face_gets_no_warning(tmp_path: Path, capsys) -> None:
    example = Path(__file__).parents[1] / "examples" / "avatar.png"  # 512×512 RGB
    assert main(["render", "--image", str(example), "--preview-crop", str(tmp_path / "crop.png")]) == 0
    assert capsys.readouterr().err == ""
