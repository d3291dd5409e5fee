"""The stand-in service on its own: OmniRT parity of routes, texts and clips; jobs, events, capacity."""

from __future__ import annotations

from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import soundfile as sf
from omnirt.api import validate as omnirt_validate
from omnirt.core.types import GenerateRequest
from PIL import Image

from opentalking_flashhead.standin.clip import frame_count, render_clip
from opentalking_flashhead.standin.serve import running_standin
from opentalking_flashhead.standin.validation import validate

MODEL = "soulx-flashhead-1.3b"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    Image.new("RGB", (400, 300), (120, 90, 60)).save(root / "face.png")
    t = np.arange(17920) / 16000
    sf.write(root / "a.wav", (np.sin(2 * np.pi * 200 * t) * 9000).astype(np.int16), 16000, subtype="PCM_16")
    (root / "notes.txt").write_text("not audio")
    return {"image": root / "face.png", "audio": root / "a.wav", "text": root / "notes.txt", "root": root}


def body(media: dict[str, Path], **extra: object) -> dict:
    inputs = {"image": str(media["image"]), "audio": str(media["audio"])}
    return {"task": "audio2video", "model": MODEL, "inputs": inputs, **extra}


@pytest.mark.parametrize(
    ("task", "model", "inputs", "config"),
    [
        ("audio2video", "soulx-flashhead-9b", {}, {}),
        ("text2image", MODEL, {}, {}),
        ("audio2video", MODEL, {}, {}),
        ("audio2video", MODEL, {"image": "/nope.png", "audio": "/nope.wav", "video": "x"}, {"fps": 25}),
        ("audio2video", MODEL, {"image": "/nope.png", "audio": "/nope.wav"}, {"preset": "turbo", "width": 1}),
        ("audio2video", MODEL, {"image": "", "audio": "/nope.wav"}, {"repo_path": "/no/checkout"}),
    ],
)
def test_validation_texts_match_omnirt(task: str, model: str, inputs: dict, config: dict) -> None:
    request = GenerateRequest.from_dict({"task": task, "model": model, "inputs": inputs, "config": config})
    theirs = omnirt_validate(request, backend="cpu-stub")
    ours = validate(task, model, inputs, config)
    expected = [issue.message for issue in theirs.errors]
    if model != MODEL:  # OmniRT knows more models to suggest; the sentence is the same
        assert ours[0].startswith(f"Unknown model {model!r}. Nearby models: {MODEL}")
        assert expected[0].startswith(f"Unknown model {model!r}. Nearby models: {MODEL}")
    else:
        assert ours == expected


def test_clip_format_matches_flashhead(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    assert render_clip(media["image"], media["audio"], out) == 28
    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.width, video.height, video.average_rate) == ("h264", 512, 512, 25)
        assert audio.codec_context.name == "aac" and audio.sample_rate == 16000
        packets = [p for p in container.demux(video) if p.size]
    assert len(packets) == 28
    assert all(p.pts == p.dts for p in packets)  # decode order is display order: no B-frames


@pytest.mark.parametrize(("samples", "frames"), [(16000, 25), (17920, 28), (35840, 56), (160000, 250), (100, 1)])
def test_frame_count_rule(samples: int, frames: int) -> None:
    assert frame_count(samples) == frames


def test_failed_render_leaves_no_file(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(Exception, match="cannot identify image"):
        render_clip(media["text"], media["audio"], tmp_path / "clip.mp4")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory):
    with running_standin(tmp_path_factory.mktemp("out"), api_keys={"k1"}, latency=0.3, capacity=2) as url:
        yield httpx.Client(base_url=url, headers={"x-api-key": "k1"}, timeout=30)


def test_discovery_routes(standin: httpx.Client) -> None:
    assert standin.get("/healthz").json() == {"ok": True}
    assert standin.get("/readyz").json()["ok"] is True
    (card,) = standin.get("/v1/models").json()["data"]
    assert card["id"] == MODEL and card["task"] == "audio2video" and "STAND-IN" in card["summary"]


def test_api_key_is_required_except_for_health(standin: httpx.Client) -> None:
    anonymous = httpx.Client(base_url=str(standin.base_url))
    assert anonymous.get("/healthz").status_code == 200
    denied = anonymous.get("/v1/models")
    assert (denied.status_code, denied.json()) == (401, {"detail": "Unauthorized"})
    assert anonymous.get("/v1/models", headers={"authorization": "Bearer k1"}).status_code == 200


def test_shape_errors(standin: httpx.Client, media: dict[str, Path]) -> None:
    missing = standin.post("/v1/generate", json={"model": MODEL})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "task"]
    bad = standin.post("/v1/generate", json=body(media, config={"fps": 25}))
    assert bad.status_code == 400 and bad.json()["detail"].startswith("- Unsupported config keys")
    assert standin.get("/v1/jobs/nope").json() == {"detail": "Job not found"}


def test_sync_generation(standin: httpx.Client, media: dict[str, Path]) -> None:
    answer = standin.post("/v1/generate", json=body(media)).json()
    (clip,) = answer["outputs"]
    assert {k: clip[k] for k in ("kind", "mime", "width", "height", "num_frames", "transport", "data_b64")} == {
        "kind": "video",
        "mime": "video/mp4",
        "width": 512,
        "height": 512,
        "num_frames": 28,
        "transport": "path",
        "data_b64": None,
    }
    assert Path(clip["path"]).name.startswith(f"{MODEL}-9999-") and Path(clip["path"]).is_file()


def test_relative_output_dir_fails_the_run(standin: httpx.Client, media: dict[str, Path]) -> None:
    sync = standin.post("/v1/generate", json=body(media, config={"output_dir": "rel/out"}))
    assert (sync.status_code, sync.text) == (500, "Internal Server Error")
    job = standin.post("/v1/generate", json=body(media, config={"output_dir": "rel/out"}, async_run=True)).json()
    events = standin.get(f"/v1/jobs/{job['id']}/events").text
    assert "event: job_failed" in events
    assert "absolute" in standin.get(f"/v1/jobs/{job['id']}").json()["error"]


def test_async_jobs_respect_capacity_and_can_be_cancelled(standin: httpx.Client, media: dict[str, Path]) -> None:
    jobs = [standin.post("/v1/generate", json=body(media, async_run=True)).json() for _ in range(4)]
    assert all(job["state"] == "queued" for job in jobs)
    cancelled = standin.delete(f"/v1/jobs/{jobs[-1]['id']}").json()
    assert cancelled["state"] == "cancelled"
    for job in jobs[:3]:
        stream = standin.get(f"/v1/jobs/{job['id']}/events").text
        assert stream.rstrip().splitlines()[0] == "event: job_enqueued"
        assert "event: job_finished" in stream
    records = [standin.get(f"/v1/jobs/{job['id']}").json() for job in jobs]
    assert [r["state"] for r in records] == ["succeeded", "succeeded", "succeeded", "cancelled"]
    assert records[0]["result"]["outputs"][0]["num_frames"] == 28
    # Two slots: the third job started only when one of the first two had finished.
    first_done = min(r["finished_at_ms"] for r in records[:2])
    assert records[2]["started_at_ms"] >= first_done
    # A stream opened after the end replays the events and ends instead of hanging.
    late = standin.get(f"/v1/jobs/{jobs[0]['id']}/events").text
    assert late.count("event: ") == 3


def test_fail_rate_one_fails_every_generation_half_each_way(media: dict[str, Path], tmp_path: Path) -> None:
    with running_standin(tmp_path / "out", fail_rate=1.0) as url:
        client = httpx.Client(base_url=url, timeout=30)
        outcomes = []
        for _ in range(24):
            answer = client.post("/v1/generate", json=body(media, async_run=True))
            if answer.status_code == 503:
                outcomes.append("503")
                continue
            job_id = answer.json()["id"]
            client.get(f"/v1/jobs/{job_id}/events")  # returns once the job has ended
            outcomes.append(client.get(f"/v1/jobs/{job_id}").json()["state"])
    assert set(outcomes) == {"503", "failed"}
    assert list((tmp_path / "out").iterdir()) == []
