"""The stand-in service on its own: OmniRT parity of routes, texts and clips; jobs, events, capacity."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import av
import httpx
import pytest
from media import data_uri, write_face, write_tone
from omnirt.api import validate as omnirt_validate
from omnirt.core.types import GenerateRequest

from opentalking_flashhead.server.clip import frame_count
from opentalking_flashhead.server.serve import running_standin
from opentalking_flashhead.server.standin import render_clip
from opentalking_flashhead.server.validation import validate

MODEL = "soulx-flashhead-1.3b"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    write_face(root / "face.png")
    write_tone(root / "a.wav", 17920)
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


# The stand-in as an exposed server (issue 9): what a request may read and write, how much it may send,
# how long jobs are kept; and the protocol extensions (examples/protocol-extensions.md).


@pytest.fixture
def fenced(tmp_path: Path, media: dict[str, Path]):
    """A stand-in reading and writing only under ``out`` and ``shared``; the media copied into ``shared``."""
    shared = tmp_path / "shared"
    shared.mkdir()
    for key in ("image", "audio"):
        (shared / media[key].name).write_bytes(media[key].read_bytes())
    with running_standin(tmp_path / "out", shared_roots=[shared]) as url:
        yield httpx.Client(base_url=url, timeout=30), shared


def fenced_body(shared: Path, **inputs: str) -> dict:
    return {"task": "audio2video", "model": MODEL, "inputs": {"image": str(shared / "face.png"), **inputs}}


def test_inputs_outside_the_roots_are_refused(fenced, tmp_path: Path) -> None:
    client, shared = fenced
    passwd = client.post("/v1/generate", json=fenced_body(shared, audio="/etc/passwd"))
    assert passwd.status_code == 400
    assert passwd.json()["detail"].startswith("- Input audio is outside the service's directories: /etc/passwd")
    assert "--shared-root" in passwd.json()["detail"]
    (shared / "link.wav").symlink_to("/etc/passwd")  # a link inside a root does not lead out of it
    linked = client.post("/v1/generate", json=fenced_body(shared, audio=str(shared / "link.wav")))
    assert linked.status_code == 400 and "outside the service's directories" in linked.json()["detail"]
    (shared / "dir.wav").mkdir()
    directory = client.post("/v1/generate", json=fenced_body(shared, audio=str(shared / "dir.wav")))
    assert directory.status_code == 400 and "not a regular file" in directory.json()["detail"]
    inside = client.post("/v1/generate", json=fenced_body(shared, audio=str(shared / "a.wav")))
    assert inside.status_code == 200 and inside.json()["outputs"][0]["num_frames"] == 28


def test_output_dirs_outside_the_roots_are_refused(fenced, tmp_path: Path) -> None:
    client, shared = fenced
    elsewhere = tmp_path / "elsewhere" / "chunk"
    body = {**fenced_body(shared, audio=str(shared / "a.wav")), "config": {"output_dir": str(elsewhere)}}
    refused = client.post("/v1/generate", json=body)
    assert refused.status_code == 400 and "output_dir is outside the service's directories" in refused.text
    assert not (tmp_path / "elsewhere").exists()
    (shared / "escape").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    body["config"]["output_dir"] = str(shared / "escape" / "chunk")
    assert client.post("/v1/generate", json=body).status_code == 400
    body["config"]["output_dir"] = str(shared / "session" / "000001")
    clip = client.post("/v1/generate", json=body).json()["outputs"][0]["path"]
    assert Path(clip).parent == shared / "session" / "000001" and Path(clip).is_file()


def test_bodies_over_the_cap_get_413_and_are_not_logged(
    media: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    marker = "SECRET-BODY-MARKER"
    with running_standin(tmp_path / "out", max_body_bytes=4096) as url:
        client = httpx.Client(base_url=url, timeout=30)
        big = body(media, config={"output_dir": f"{tmp_path}/{marker * 300}"})
        refused = client.post("/v1/generate", json=big)
        assert refused.status_code == 413 and "over 4096 bytes" in refused.json()["detail"]
        chunked = client.post("/v1/generate", content=iter([json.dumps(big).encode()]))  # no Content-Length
        assert chunked.status_code == 413
        assert client.post("/v1/generate", json=body(media)).status_code == 200  # the connection lives on
    assert marker not in caplog.text


def test_finished_jobs_are_forgotten(media: dict[str, Path], tmp_path: Path) -> None:
    with running_standin(tmp_path / "out", job_keep_sec=0.0) as url:
        client = httpx.Client(base_url=url, timeout=30)
        first = client.post("/v1/generate", json=body(media, async_run=True)).json()["id"]
        client.get(f"/v1/jobs/{first}/events")  # returns once the job has ended
        assert client.get(f"/v1/jobs/{first}").json()["state"] == "succeeded"
        client.post("/v1/generate", json=body(media, async_run=True))
        assert client.get(f"/v1/jobs/{first}").status_code == 404


async def test_at_most_keep_max_finished_jobs_are_kept() -> None:
    from opentalking_flashhead.server.jobs import JobRunner

    async def work(job: object) -> dict:
        return {"outputs": []}

    runner = JobRunner(work, backend="standin", capacity=4, keep_max=3)
    jobs = [runner.submit({"task": "audio2video"}, None)[0] for _ in range(10)]
    await asyncio.gather(*(job.task for job in jobs if job.task))
    runner.submit({"task": "audio2video"}, None)
    assert len(runner.jobs) == 4 and jobs[-1].id in runner.jobs and jobs[0].id not in runner.jobs
    await runner.shutdown()


def test_inline_inputs_and_clip(standin: httpx.Client, media: dict[str, Path], tmp_path: Path) -> None:
    (card,) = standin.get("/v1/models").json()["data"]
    assert {"inline-io", "session-headers", "close-session"} <= set(card["extensions"])
    assert card["resident"] is False and card["ready"] is True
    inputs = {"image": data_uri(media["image"], "image/png"), "audio": data_uri(media["audio"], "audio/wav")}
    request = {"task": "audio2video", "model": MODEL, "inputs": inputs}
    answer = standin.post("/v1/generate", json=request, headers={"X-FlashHead-Output": "inline"})
    (clip,) = answer.json()["outputs"]
    assert (clip["transport"], clip["path"], clip["num_frames"]) == ("inline", None, 28)
    (tmp_path / "clip.mp4").write_bytes(base64.b64decode(clip["data_b64"]))
    with av.open(str(tmp_path / "clip.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 28 and container.streams.audio
    path_clip = standin.post("/v1/generate", json=request).json()["outputs"][0]  # inline inputs, clip by path
    assert path_clip["transport"] == "path" and Path(path_clip["path"]).is_file()
    broken = {**request, "inputs": {**inputs, "audio": "data:audio/wav;base64,@@not base64@@"}}
    refused = standin.post("/v1/generate", json=broken)
    assert refused.status_code == 400 and "Input audio is inline but not valid base64 data" in refused.text


def test_inline_scratch_is_removed(media: dict[str, Path], tmp_path: Path) -> None:
    inputs = {"image": data_uri(media["image"], "image/png"), "audio": data_uri(media["audio"], "audio/wav")}
    with running_standin(tmp_path / "out") as url:
        client = httpx.Client(base_url=url, timeout=30, headers={"X-FlashHead-Output": "inline"})
        answer = client.post("/v1/generate", json={"task": "audio2video", "model": MODEL, "inputs": inputs})
        assert answer.json()["outputs"][0]["data_b64"]
    assert [p.name for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_close_route(standin: httpx.Client) -> None:
    assert standin.delete("/v1/sessions/session-0123456789ab").json() == {
        "session": "session-0123456789ab",
        "closed": False,
    }
    anonymous = httpx.Client(base_url=str(standin.base_url))
    assert anonymous.delete("/v1/sessions/session-0123456789ab").status_code == 401
