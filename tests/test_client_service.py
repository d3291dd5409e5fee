"""FlashHeadClient against real local services: the real OmniRT server and our stand-in.

Every test runs once per service kind (the ``flashhead_service`` fixture is parametrised): the
same client, the same assertions, on both sides of the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest
from media import speech

from opentalking_flashhead import FlashHeadClient
from opentalking_flashhead.errors import FlashHeadError, RequestRejected, ServiceUnavailable

pytestmark = pytest.mark.service


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., FlashHeadClient]]:
    """Makes clients of a service; closes them all at the end, the test failing or not."""
    made: list[FlashHeadClient] = []

    def make(service, shared: Path, **overrides: object) -> FlashHeadClient:
        made.append(FlashHeadClient(base_url=service.base_url, shared_local_dir=str(shared), **overrides))
        return made[-1]

    yield make
    for client in made:
        await client.close()


def assert_frames(frames: list, count: int) -> None:
    assert len(frames) == count
    for frame in frames:
        assert frame.data.shape == (512, 512, 3) and frame.data.dtype == np.uint8
        assert frame.data.flags["C_CONTIGUOUS"]
        assert (frame.width, frame.height) == (512, 512)


@pytest.mark.parametrize("async_jobs", [True, False], ids=["async", "sync"])
async def test_three_pro_slices_give_28_frames_each(
    make_client, flashhead_service, shared_dir, avatar_png, async_jobs
) -> None:
    client = make_client(flashhead_service, shared_dir, async_jobs=async_jobs)
    info = await client.init_session(ref_image=avatar_png, wav2lip_postprocess_mode=None, mouth_metadata=None)
    assert info["fps"] == 25 and info["sample_rate"] == 16000 and info["slice_len"] == 28
    stamps = []
    for i in range(3):
        frames = await client.generate(speech(17920, seed=i))
        assert_frames(frames, 28)
        stamps += [f.timestamp_ms for f in frames]
    assert stamps == [i * 40.0 for i in range(84)]
    await client.close()
    assert list(shared_dir.iterdir()) == []


async def test_16000_sample_chunks_hold_the_cumulative_rule(
    make_client, flashhead_service, shared_dir, avatar_png
) -> None:
    client = make_client(flashhead_service, shared_dir, chunk_samples=16000)
    await client.init_session(ref_image=str(avatar_png))
    total = 0
    for i in range(1, 4):
        total += len(await client.generate(speech(16000, seed=i)))
        assert total == round(i * 16000 * 25 / 16000)
    await client.close()


async def test_float_audio_and_odd_lengths(make_client, flashhead_service, shared_dir, avatar_png) -> None:
    client = make_client(flashhead_service, shared_dir)
    await client.init_session(ref_image=avatar_png.read_bytes())
    frames = await client.generate(speech(10000).astype(np.float32) / 32768)
    more = await client.generate(speech(7000))
    assert len(frames) + len(more) == round(17000 * 25 / 16000)
    await client.close()


async def test_server_sees_shared_storage_under_another_prefix(
    make_client, flashhead_service, tmp_path, avatar_png
) -> None:
    real = tmp_path / "mount"
    real.mkdir()
    alias = tmp_path / "server-view"
    alias.symlink_to(real)
    client = make_client(flashhead_service, real, shared_remote_dir=str(alias))
    await client.init_session(ref_image=avatar_png)
    assert_frames(await client.generate(speech(17920)), 28)
    await client.close()
    assert list(real.iterdir()) == []


async def test_session_is_reusable_after_close(make_client, flashhead_service, shared_dir, avatar_png) -> None:
    client = make_client(flashhead_service, shared_dir)
    for _ in range(2):
        await client.init_session(ref_image=avatar_png)
        assert len(await client.generate(speech(17920))) == 28
        await client.close()
    assert list(shared_dir.iterdir()) == []


async def test_save_dir_keeps_each_clip_with_its_audio(
    make_client, flashhead_service, shared_dir, tmp_path, avatar_png
) -> None:
    import av

    saved = tmp_path / "saved"
    client = make_client(flashhead_service, shared_dir, save_dir=str(saved))
    await client.init_session(ref_image=avatar_png)
    await client.generate(speech(17920))
    await client.generate(speech(17920))
    await client.close()
    clips = sorted(saved.iterdir())
    assert [p.name[-10:] for p in clips] == ["000001.mp4", "000002.mp4"]
    with av.open(str(clips[0])) as container:
        assert container.streams.video and container.streams.audio
    assert list(shared_dir.iterdir()) == []


async def test_unknown_model_is_rejected_with_the_services_message(
    make_client, flashhead_service, shared_dir, avatar_png
) -> None:
    client = make_client(flashhead_service, shared_dir, model="soulx-flashhead-9b")
    await client.init_session(ref_image=avatar_png)
    with pytest.raises(RequestRejected) as err:
        await client.generate(speech(17920))
    assert err.value.status_code == 400 and "Unknown model 'soulx-flashhead-9b'" in err.value.detail
    assert "OPENTALKING_FLASHHEAD_MODEL" in str(err.value)
    await client.close()
    assert list(shared_dir.iterdir()) == []


async def test_api_key(make_client, flashhead_service_with_key, shared_dir, avatar_png) -> None:
    service = flashhead_service_with_key
    anonymous = make_client(service, shared_dir)
    await anonymous.init_session(ref_image=avatar_png)
    with pytest.raises(RequestRejected, match=r"Unauthorized.*OPENTALKING_FLASHHEAD_API_KEY"):
        await anonymous.generate(speech(17920))
    await anonymous.close()
    keyed = make_client(service, shared_dir, api_key=service.api_key)
    await keyed.init_session(ref_image=avatar_png)
    assert len(await keyed.generate(speech(17920))) == 28
    await keyed.close()
    assert list(shared_dir.iterdir()) == []


async def test_wrong_api_key_is_rejected_naming_the_variable(
    make_client, flashhead_service_with_key, shared_dir, avatar_png
) -> None:
    """Row "wrong API key": HTTP 401 raised at once, never retried, naming OPENTALKING_FLASHHEAD_API_KEY."""
    service = flashhead_service_with_key
    client = make_client(service, shared_dir, api_key=f"not-{service.api_key}")
    await client.init_session(ref_image=avatar_png)
    with pytest.raises(RequestRejected, match=r"HTTP 401.*Set OPENTALKING_FLASHHEAD_API_KEY") as err:
        await client.generate(speech(17920))
    assert err.value.status_code == 401 and "Unauthorized" in err.value.detail
    assert client.stats.requests == 1 and client.stats.retries == 0 and client.stats.still_chunks == 0
    await client.close()
    assert list(shared_dir.iterdir()) == []


async def test_service_down_fails_fast_naming_the_url(shared_dir, avatar_png, free_port) -> None:
    client = FlashHeadClient(base_url=f"http://127.0.0.1:{free_port}", shared_local_dir=str(shared_dir))
    with pytest.raises(ServiceUnavailable, match=rf"not connected.*127\.0\.0\.1:{free_port}/healthz"):
        await client.init_session(ref_image=avatar_png)
    await client.close()


async def test_bad_reference_image(make_client, flashhead_service, shared_dir, tmp_path) -> None:
    client = make_client(flashhead_service, shared_dir)
    (tmp_path / "notes.txt").write_text("not a face")
    with pytest.raises(ValueError, match="not a readable image"):
        await client.init_session(ref_image=tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="cannot read the reference image"):
        await client.init_session(ref_image=tmp_path / "missing.png")
    with pytest.raises(FlashHeadError, match="init_session"):
        await client.generate(speech(100))
    await client.close()
    assert list(shared_dir.iterdir()) == []


def omnirt_with(tmp_path_factory: pytest.TempPathFactory, **env: str):
    """A real OmniRT whose fake model is steered by ``FAKE_FLASHHEAD_*`` variables, for one module."""
    import servers

    service = servers.omnirt(tmp_path_factory.mktemp("omnirt"), env=env)
    yield service.start()
    service.stop()


@pytest.fixture(scope="module")
def failing_omnirt(tmp_path_factory: pytest.TempPathFactory):
    """Real OmniRT whose model run fails, printing a message like a crashing model would."""
    yield from omnirt_with(tmp_path_factory, FAKE_FLASHHEAD_FAIL="CUDA out of memory")


async def test_failed_generation_carries_the_jobs_error(make_client, failing_omnirt, shared_dir, avatar_png) -> None:
    from opentalking_flashhead.errors import GenerationFailed

    # The model's failure is transient by policy; with stills off, its message reaches the caller.
    client = make_client(failing_omnirt, shared_dir, on_error="raise", chunk_deadline_sec=3.0)
    await client.init_session(ref_image=avatar_png)
    with pytest.raises(GenerationFailed, match="CUDA out of memory") as err:
        await client.generate(speech(17920))
    assert err.value.job_id
    await client.close()
    sync = make_client(failing_omnirt, shared_dir, async_jobs=False, on_error="raise", chunk_deadline_sec=3.0)
    await sync.init_session(ref_image=avatar_png)
    with pytest.raises(GenerationFailed, match=r"Internal Server Error.*OPENTALKING_FLASHHEAD_ASYNC=1"):
        await sync.generate(speech(17920))
    await sync.close()
    assert list(shared_dir.iterdir()) == []


@pytest.fixture(scope="module")
def slow_omnirt(tmp_path_factory: pytest.TempPathFactory):
    """Real OmniRT whose model takes two seconds per clip."""
    yield from omnirt_with(tmp_path_factory, FAKE_FLASHHEAD_SLEEP="2")


async def test_close_cancels_the_chunk_in_flight(make_client, slow_omnirt, shared_dir, avatar_png) -> None:
    import asyncio

    client = make_client(slow_omnirt, shared_dir)
    await client.init_session(ref_image=avatar_png)
    pending = asyncio.ensure_future(client.generate(speech(17920)))
    await asyncio.sleep(0.5)
    await client.close()
    with pytest.raises(FlashHeadError, match="closed while this chunk was generating"):
        await pending
    assert list(shared_dir.iterdir()) == []
    await client.init_session(ref_image=avatar_png)  # and the object is reusable
    await client.close()
