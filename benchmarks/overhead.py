"""Benchmark 1: overhead per chunk against the stand-in with zero added latency.

Median wall time per generate() over N chunks of 17,920 samples, measured round-robin so noise
hits every contender alike:
  (a) FlashHeadClient, async jobs and sync
  (b) OpenTalking 0.1.0's FlashHeadHTTPClient (PyPI), with its rejected ``fps`` key removed from
      the payload, the smallest fix that lets it run (it decodes with OpenCV)
  (c) the floor: a bare httpx POST of the same request, then one decode of the clip to BGR arrays
Targets: (a)/(c) <= 1.2 and (a)/(b) < 1.0 in both modes. Needs ``opentalking`` importable (run it
with the host environment's python: .venv-host/bin/python benchmarks/overhead.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opentalking_flashhead import FlashHeadClient
from opentalking_flashhead.video import decode_bgr

import common


def upstream_client(url: str, io_dir: Path):  # type: ignore[no-untyped-def]
    from opentalking.providers.synthesis.flashhead.http_client import FlashHeadHTTPClient

    client = FlashHeadHTTPClient(base_url=url, shared_local_dir=str(io_dir), chunk_samples=common.SLICE)
    build = client._build_generate_payload

    def without_fps(remote_audio_path: str) -> dict:
        payload = build(remote_audio_path)
        payload["config"].pop("fps", None)
        return payload

    client._build_generate_payload = without_fps
    return client


class Floor:
    """The unavoidable work: one POST of a ready request, one decode of the clip it names."""

    def __init__(self, url: str, io_dir: Path, face: bytes) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=60)
        (io_dir / "face.png").write_bytes(face)
        self.wav = io_dir / "chunk.wav"
        sf.write(self.wav, common.speech(common.SLICE), 16000, subtype="PCM_16")
        self.body = {
            "task": "audio2video",
            "model": "soulx-flashhead-1.3b",
            "inputs": {"image": str(io_dir / "face.png"), "audio": str(self.wav)},
            "config": {"output_dir": str(io_dir / "out")},
        }

    async def generate(self, _pcm: object) -> list:
        answer = (await self.http.post("/v1/generate", json=self.body)).json()
        clip = Path(answer["outputs"][0]["path"])
        frames = await asyncio.to_thread(decode_bgr, clip, size=(512, 512))
        clip.unlink()
        return frames


async def measure(url: str, chunks: int) -> dict[str, float]:
    face = common.face_png()
    contenders = {
        "ours_async": FlashHeadClient(base_url=url, shared_local_dir=str(common.scratch_dir()), async_jobs=True),
        "ours_sync": FlashHeadClient(base_url=url, shared_local_dir=str(common.scratch_dir()), async_jobs=False),
        "upstream": upstream_client(url, common.scratch_dir()),
        "floor": Floor(url, common.scratch_dir(), face),
    }
    for name, client in contenders.items():
        if name != "floor":
            await client.init_session(ref_image=face)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    pcm = [common.speech(common.SLICE, seed=i) for i in range(chunks)]
    order = list(contenders)
    for i in range(-3, chunks):  # three warm-up rounds
        order = order[1:] + order[:1]  # every contender takes every position in turn
        for name in order:
            client = contenders[name]
            started = time.perf_counter()
            frames = await client.generate(pcm[max(i, 0)])
            elapsed = time.perf_counter() - started
            assert len(frames) >= 28, (name, len(frames))
            if i >= 0:
                times[name].append(elapsed)
    for name, client in contenders.items():
        if name != "floor":
            await client.close()
    return {name: common.median_ms(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=60)
    args = parser.parse_args()
    with common.standin() as url:
        ms = asyncio.run(measure(url, args.chunks))
    ratios = {
        "async/floor": ms["ours_async"] / ms["floor"],
        "sync/floor": ms["ours_sync"] / ms["floor"],
        "async/upstream": ms["ours_async"] / ms["upstream"],
        "sync/upstream": ms["ours_sync"] / ms["upstream"],
    }
    figures = (
        " ".join(f"{k}={v:.1f}ms" for k, v in ms.items()) + " | " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items())
    )
    return common.verdict(
        f"overhead per chunk ({args.chunks} chunks, {common.machine()})",
        figures,
        {
            "async/floor<=1.2": ratios["async/floor"] <= 1.2,
            "sync/floor<=1.2": ratios["sync/floor"] <= 1.2,
            "async/upstream<1.0": ratios["async/upstream"] < 1.0,
            "sync/upstream<1.0": ratios["sync/upstream"] < 1.0,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
