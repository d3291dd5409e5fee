"""The resident runtime against the fake SoulX-FlashHead checkout (tests/fake_flashhead, a test double).

No HTTP: the runtime as the server room calls it. The double's frames encode its state (face, generator
draws, motion latents, audio window, Lite's global RNG), so pixel equality means the state was carried,
swapped and rolled back exactly.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("torch", reason="the resident runtime needs torch (.ci/run installs the CPU build)")

from opentalking_flashhead.server.resident import state
from opentalking_flashhead.server.resident.identity import session_name, session_of
from opentalking_flashhead.server.resident.model import ResidentModel
from opentalking_flashhead.server.resident.options import SLICES, ModelOptions, StartupError, preflight
from opentalking_flashhead.server.resident.runtime import ChunkGone, ResidentRuntime, SessionLimitReached
from opentalking_flashhead.server.resident.worker import OutOfOrder, SliceWorker

FAKE = Path(__file__).resolve().parent / "fake_flashhead"
CKPT = FAKE / "models" / "SoulX-FlashHead-1_3B"
WAV2VEC = FAKE / "models" / "wav2vec2-base-960h"
PIPELINE_MODULE = "flash_head.src.pipeline.flash_head_pipeline"


def options(model_type: str = "lite", **overrides: object) -> ModelOptions:
    settings: dict[str, object] = {"model_type": model_type, "device": "cpu", "dtype": "fp32", **overrides}
    return ModelOptions(FAKE, CKPT, WAV2VEC, **settings)  # type: ignore[arg-type]


def built() -> int:
    """Pipelines the fake checkout has built in this process."""
    module = sys.modules.get(PIPELINE_MODULE)
    return int(getattr(module, "BUILT", 0))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three different faces (a session is one face)."""
    directory = tmp_path_factory.mktemp("faces")
    paths = []
    for index, colour in enumerate([(200, 60, 40), (40, 160, 90), (70, 80, 210)]):
        image = Image.new("RGB", (560, 600), colour)
        ImageDraw.Draw(image).ellipse((120 + 40 * index, 150, 420, 470), fill=(240, 200, 170))
        paths.append(directory / f"face{index}.png")
        image.save(paths[-1])
    return paths


@pytest.fixture(scope="module", params=["lite", "pro"])
def runtime(request: pytest.FixtureRequest) -> Iterator[ResidentRuntime]:
    """One loaded runtime per model type, shared by the tests that use it (sessions named per test)."""
    loaded = ResidentRuntime(options(request.param, max_sessions=64))
    loaded.load()
    yield loaded
    asyncio.run(loaded.aclose())


@pytest.fixture(scope="module")
def lite(runtime: ResidentRuntime) -> ResidentRuntime:
    if runtime.options.model_type != "lite":
        pytest.skip("Lite only (the global RNG is Lite's)")
    return runtime


def tone(seed: int, samples: int) -> np.ndarray:
    """A distinct, deterministic piece of speech-like audio in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    envelope = 0.2 + 0.6 * rng.random() * (1 + np.sin(2 * np.pi * rng.uniform(1, 4) * t)) / 2
    return (envelope * np.sin(2 * np.pi * rng.uniform(120, 400) * t)).astype(np.float32)


def key(name: str, face: Path) -> str:
    found, _ = session_of(f"/out/{name}/000000", str(face), None, None)
    assert found is not None
    return found


async def stream(runtime: ResidentRuntime, name: str, face: Path, chunks: list[np.ndarray]) -> list[np.ndarray]:
    """One session's chunks in order, each awaited before the next (as our client's stream is)."""
    return [
        await runtime.render(image=face, audio=audio, session=key(name, face), chunk=index)
        for index, audio in enumerate(chunks)
    ]


def chunks_of(runtime: ResidentRuntime, session: int) -> list[np.ndarray]:
    """Four chunks: whole slices and a partial one (padded, its frames cut to the audio)."""
    samples = runtime.spec.samples
    lengths = (
        [samples, samples // 2, samples, samples + samples // 3]
        if runtime.options.model_type == "lite"
        else [samples] * 4
    )
    return [tone(100 * session + index, length) for index, length in enumerate(lengths)]


def frames_expected(audio: np.ndarray) -> int:
    return max(1, round(audio.size * 25 / 16000))


async def test_three_sessions_interleaved_equal_each_alone(runtime: ResidentRuntime, faces: list[Path]) -> None:
    audio = [chunks_of(runtime, session) for session in range(3)]
    stateless_audio = tone(999, runtime.spec.samples)
    together, _ = await asyncio.gather(
        asyncio.gather(*(stream(runtime, f"session-mixed{s}", faces[s], audio[s]) for s in range(3))),
        runtime.render(image=faces[0], audio=stateless_audio, session=None, chunk=None),  # a stateless one between
    )
    alone = [await stream(runtime, f"session-alone{s}", faces[s], audio[s]) for s in range(3)]
    for session in range(3):
        for index, frames in enumerate(together[session]):
            assert frames.shape == (frames_expected(audio[session][index]), 512, 512, 3)
            assert frames.dtype == np.uint8
            assert np.array_equal(frames, alone[session][index]), f"session {session} chunk {index}"
    # the sessions really differ from each other, so equality above is not a coincidence
    assert not np.array_equal(alone[0][1], alone[1][1])


@pytest.mark.parametrize("slices", [1, 0.5, 1.75, 0])
async def test_frame_counts_follow_the_audio(runtime: ResidentRuntime, faces: list[Path], slices: float) -> None:
    """Pro emits 28 frames a slice, Lite 24; other lengths are padded and cut to round(samples·25/16000)."""
    samples = int(runtime.spec.samples * slices)
    frames = await runtime.render(image=faces[0], audio=tone(7, samples), session=None, chunk=None)
    assert len(frames) == max(1, round(samples * 25 / 16000))
    if slices == 1:
        assert len(frames) == {"lite": 24, "pro": 28}[runtime.options.model_type]


async def test_retried_chunk_gives_the_same_frames_and_advances_once(
    runtime: ResidentRuntime, faces: list[Path]
) -> None:
    audio = [tone(200 + index, runtime.spec.samples) for index in range(3)]
    reference = await stream(runtime, "session-noretry", faces[1], audio)
    retried = key("session-retry", faces[1])
    first = await runtime.render(image=faces[1], audio=audio[0], session=retried, chunk=0)
    second, again = await asyncio.gather(  # a retry while the chunk is still being rendered
        runtime.render(image=faces[1], audio=audio[1], session=retried, chunk=1),
        runtime.render(image=faces[1], audio=audio[1], session=retried, chunk=1),
    )
    later = await runtime.render(image=faces[1], audio=audio[1], session=retried, chunk=1)  # a retry after it
    third = await runtime.render(image=faces[1], audio=audio[2], session=retried, chunk=2)
    for got, want in [(first, reference[0]), (second, reference[1]), (again, reference[1]), (later, reference[1])]:
        assert np.array_equal(got, want)
    assert np.array_equal(third, reference[2]), "a retry advanced the stream"
    with pytest.raises(ChunkGone, match="chunk 1 of session session-retry"):
        await runtime.render(image=faces[1], audio=audio[1], session=retried, chunk=1)


async def test_skipped_chunk_index_continues_the_stream(runtime: ResidentRuntime, faces: list[Path]) -> None:
    audio = [tone(300 + index, runtime.spec.samples) for index in range(2)]
    reference = await stream(runtime, "session-noskip", faces[2], audio)
    skipping = key("session-skip", faces[2])
    await runtime.render(image=faces[2], audio=audio[0], session=skipping, chunk=0)
    after_gap = await runtime.render(image=faces[2], audio=audio[1], session=skipping, chunk=2)
    assert np.array_equal(after_gap, reference[1])


async def test_a_failed_chunk_leaves_the_stream_as_it_was(
    runtime: ResidentRuntime, faces: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk failing in its second slice rolls back what its first slice advanced (generator, motion,
    RNG, audio window): the retry renders it from the state saved before it."""
    audio = [tone(800, runtime.spec.samples), tone(801, 2 * runtime.spec.samples)]
    reference = await stream(runtime, "session-nofail", faces[0], audio)
    failing = key("session-fail", faces[0])
    await runtime.render(image=faces[0], audio=audio[0], session=failing, chunk=0)
    real_slice, calls = ResidentModel.run_slice, []

    def flaky(self: ResidentModel, stream: state.StreamState, samples: np.ndarray) -> np.ndarray:
        calls.append(samples)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (test)")
        return real_slice(self, stream, samples)

    monkeypatch.setattr(ResidentModel, "run_slice", flaky)
    with pytest.raises(RuntimeError, match="out of memory"):
        await runtime.render(image=faces[0], audio=audio[1], session=failing, chunk=1)
    assert np.array_equal(await runtime.render(image=faces[0], audio=audio[1], session=failing, chunk=1), reference[1])


async def test_the_face_comes_from_the_request_that_opens_the_stream(
    runtime: ResidentRuntime, faces: list[Path]
) -> None:
    """An inline reference is a file only while its request lasts: a session whose first request could
    not read its face takes it from the retry's own file."""
    audio = tone(900, runtime.spec.samples)
    fresh = await runtime.render(image=faces[2], audio=audio, session=key("session-face", faces[2]), chunk=0)
    session = key("session-faceretry", faces[2])
    with pytest.raises(FileNotFoundError):
        await runtime.render(image=faces[2].with_name("gone.png"), audio=audio, session=session, chunk=0)
    assert np.array_equal(await runtime.render(image=faces[2], audio=audio, session=session, chunk=0), fresh)


async def test_stateless_requests_start_fresh_each_time(runtime: ResidentRuntime, faces: list[Path]) -> None:
    audio = tone(400, runtime.spec.samples)
    once = await runtime.render(image=faces[0], audio=audio, session=None, chunk=None)
    twice = await runtime.render(image=faces[0], audio=audio, session=None, chunk=None)
    first_chunk = await runtime.render(image=faces[0], audio=audio, session=key("session-fresh", faces[0]), chunk=0)
    assert np.array_equal(once, twice)
    assert np.array_equal(once, first_chunk)


async def test_another_face_is_another_session(runtime: ResidentRuntime, faces: list[Path]) -> None:
    audio = tone(500, runtime.spec.samples)
    a = await runtime.render(image=faces[0], audio=audio, session=key("session-twofaces", faces[0]), chunk=0)
    b = await runtime.render(image=faces[1], audio=audio, session=key("session-twofaces", faces[1]), chunk=0)
    assert not np.array_equal(a, b)
    assert runtime.close_session("session-twofaces") is True
    assert runtime.close_session("session-twofaces") is False


async def test_a_missed_rng_swap_shows_in_the_pixels(
    lite: ResidentRuntime, faces: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proof that the double can tell: without the global RNG swap, interleaved Lite sessions diverge."""
    monkeypatch.setattr(state, "restore_rng", lambda stream: None)
    await _interleaved_differs_from_alone(lite, faces, "rng")


async def test_a_missed_attribute_swap_shows_in_the_pixels(
    runtime: ResidentRuntime, faces: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the motion latents in the swapped state, one session's motion leaks into the other's."""
    kept = tuple(name for name in state.PIPELINE_STATE if name != "latent_motion_frames")
    monkeypatch.setattr(state, "PIPELINE_STATE", kept)
    await _interleaved_differs_from_alone(runtime, faces, "latents")


async def _interleaved_differs_from_alone(runtime: ResidentRuntime, faces: list[Path], tag: str) -> None:
    # three chunks: Lite's global RNG is drawn when a slice encodes its motion frames, so shows a slice later
    audio = [[tone(600 + 10 * s + index, runtime.spec.samples) for index in range(3)] for s in range(2)]
    together = await asyncio.gather(*(stream(runtime, f"session-{tag}mix{s}", faces[s], audio[s]) for s in range(2)))
    alone = await stream(runtime, f"session-{tag}alone", faces[0], audio[0])
    assert not all(np.array_equal(mixed, single) for mixed, single in zip(together[0], alone, strict=True))


async def test_sessions_expire_after_the_ttl_and_are_bounded(lite: ResidentRuntime, faces: list[Path]) -> None:
    """(Run beside the Lite runtime: the checkout's module-level parameters hold one model type at a time.)"""
    clock = Clock()
    before = built()
    runtime = ResidentRuntime(options(max_sessions=2, session_ttl_sec=60), clock=clock)
    assert not runtime.ready and runtime.describe()["sessions"] == 0
    runtime.load()
    runtime.load()
    try:
        audio = [tone(700 + index, runtime.spec.samples) for index in range(2)]
        fresh = await stream(runtime, "session-ttl0", faces[0], audio[:1])
        await stream(runtime, "session-ttl1", faces[1], audio[:1])
        with pytest.raises(SessionLimitReached, match=r"2 sessions open \(--max-sessions 2\)"):
            await runtime.render(image=faces[2], audio=audio[0], session=key("session-ttl2", faces[2]), chunk=0)
        await runtime.render(image=faces[2], audio=audio[0], session=None, chunk=None)  # stateless: not bounded
        clock.now += 30
        await runtime.render(image=faces[1], audio=audio[1], session=key("session-ttl1", faces[1]), chunk=1)
        clock.now += 45  # session-ttl0 idle 75 s: gone; session-ttl1 idle 45 s: kept
        assert runtime.describe()["sessions"] == 1
        again = await runtime.render(image=faces[0], audio=audio[0], session=key("session-ttl0", faces[0]), chunk=5)
        assert np.array_equal(again, fresh[0]), "an expired session must start afresh"
        assert runtime.describe() == {
            "resident": True,
            "model_type": "lite",
            "slice_samples": 15360,
            "frames_per_slice": 24,
            "sessions": 2,
            "max_sessions": 2,
            "session_ttl_sec": 60,
            "device": "cpu",
            "dtype": "fp32",
        }
        assert built() - before == 1, "the pipeline must be built exactly once"
    finally:
        await runtime.aclose()
    assert not runtime.ready


def test_cpu_adaptations_are_made_from_outside_the_checkout(runtime: ResidentRuntime) -> None:
    import torch

    inference = sys.modules["flash_head.inference"]
    pipeline_module = sys.modules[PIPELINE_MODULE]
    untouched = importlib.util.spec_from_file_location("fake_usp", FAKE / "flash_head/src/distributed/usp_device.py")
    assert untouched is not None and untouched.loader is not None
    usp = importlib.util.module_from_spec(untouched)
    untouched.loader.exec_module(usp)
    assert usp.get_device(1, 1) == "cuda"  # what the checkout itself says ...
    assert inference.get_device(1, 1) == "cpu"  # ... and what the runtime made of it
    assert (pipeline_module.COMPILE_MODEL, pipeline_module.COMPILE_VAE) == (False, False)
    torch.cuda.synchronize()  # a no-op now, though this torch has no CUDA
    assert inference.get_infer_params()["motion_frames_num"] == SLICES[runtime.options.model_type].motion_frames


def test_one_worker_takes_turns_across_streams() -> None:
    """Slices of different streams alternate; a stream's own chunks stay in order."""
    order: list[str] = []
    started, gate = threading.Event(), threading.Event()

    def job(name: str, steps: int, wait: bool = False):  # type: ignore[no-untyped-def]
        for step in range(steps):
            if wait and step == 0:
                started.set()
                gate.wait(30)
            order.append(f"{name}{step}")
            if step < steps - 1:
                yield
        return np.zeros(0)

    worker = SliceWorker()
    try:
        a = worker.submit("a", 0, job("a", 3, wait=True))
        assert started.wait(30)
        b = worker.submit("b", 0, job("b", 3))
        with pytest.raises(OutOfOrder):
            worker.submit("a", -1, job("late", 1))
        a_next = worker.submit("a", 1, job("A", 1))
        gate.set()
        for future in (a, b, a_next):
            future.result(30)
    finally:
        worker.close()
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2", "A0"]


def test_session_identity() -> None:
    face = "/shared/session-abc/reference.png"
    by_dir, chunk = session_of("/out/session-abc/000012", face, None, None)
    assert by_dir is not None and chunk == 12 and session_name(by_dir) == "session-abc"
    assert session_of("/shared/session-abc/out/000012", face, None, None) == (by_dir, 12)  # the default layout
    assert session_of(None, face, "session-abc", "000012") == (by_dir, 12)
    assert session_of("/out/session-abc/000012", "/other/face.png", None, None)[0] != by_dir
    for stateless in [
        ("/out/run/000012", None, None),  # not our client's session dir
        ("/out/session-abc/final", None, None),
        (None, "session-abc", None),
        (None, None, None),
        ("/out/session-abc/0001²", None, None),
    ]:
        assert session_of(stateless[0], face, stateless[1], stateless[2]) == (None, None)


def _without(tmp_path: Path, relative: str) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(FAKE / "models", copy)
    (copy / relative).unlink()
    return copy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda tmp: {"flashhead_repo": tmp / "nowhere"}, "--flashhead-repo {tmp}/nowhere: no such directory"),
        (lambda tmp: {"flashhead_repo": tmp}, "--flashhead-repo {tmp}: flash_head/inference.py is missing"),
        (
            lambda tmp: {"ckpt_dir": _without(tmp, "SoulX-FlashHead-1_3B/Model_Lite/config.json") / CKPT.name},
            "--ckpt-dir {tmp}/models/SoulX-FlashHead-1_3B: Model_Lite/config.json is missing",
        ),
        (
            lambda tmp: {
                "model_type": "pro",
                "ckpt_dir": _without(tmp, "SoulX-FlashHead-1_3B/VAE_Wan/Wan2.1_VAE.pth") / CKPT.name,
            },
            "--ckpt-dir {tmp}/models/SoulX-FlashHead-1_3B: VAE_Wan/Wan2.1_VAE.pth is missing",
        ),
        (
            lambda tmp: {"wav2vec_dir": _without(tmp, "wav2vec2-base-960h/model.safetensors") / WAV2VEC.name},
            "--wav2vec-dir {tmp}/models/wav2vec2-base-960h: model.safetensors is missing",
        ),
        (lambda tmp: {"model_type": "max"}, "--model-type max: must be one of lite, pro"),
        (lambda tmp: {"device": "gpu"}, "--device gpu: must be cuda, cuda:N or cpu"),
        (lambda tmp: {"dtype": "int8"}, "--dtype int8: must be one of bf16, fp16, fp32"),
        (lambda tmp: {"max_sessions": 0}, "--max-sessions 0: must be at least 1"),
        (lambda tmp: {"session_ttl_sec": 0}, "--session-ttl 0: must be a positive number of seconds"),
    ],
)
def test_preflight_names_the_flag_to_fix(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    defaults = {"flashhead_repo": FAKE, "ckpt_dir": CKPT, "wav2vec_dir": WAV2VEC, "device": "cpu"}
    with pytest.raises(StartupError) as caught:
        preflight(ModelOptions(**{**defaults, **change(tmp_path)}))
    assert str(caught.value).startswith(message.format(tmp=tmp_path))
    assert "\n" not in str(caught.value)


def test_preflight_needs_torch_and_a_gpu_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    preflight(options())
    if not torch.cuda.is_available():
        with pytest.raises(StartupError, match=r"^--device cuda: torch .* sees no CUDA GPU"):
            preflight(options(device="cuda"))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "torch" else real_find_spec(name))
    with pytest.raises(StartupError, match=r"^--device cpu: torch is not installed in "):
        preflight(options())
