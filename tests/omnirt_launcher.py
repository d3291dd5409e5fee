"""Serve the real OmniRT server on CPU with only FlashHead's compute faked (tests/fake_flashhead).

Routing, validation, error texts, jobs and response JSON are OmniRT's own; the model subprocess
is our fake checkout's generate_video.py, which renders a stand-in clip.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

FAKE_CHECKOUT = Path(__file__).resolve().parent / "fake_flashhead"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--api-key-file")
    parser.add_argument("--max-concurrency", type=int, default=1, help="jobs run at once (omnirt serve's flag)")
    parser.add_argument("--redis-url", help="a Redis job store shared by several fronts (omnirt serve's flag)")
    parser.add_argument("--remote-worker", action="append", default=[], help="omnirt serve's flag, as it parses it")
    args = parser.parse_args()

    os.environ.setdefault("OMNIRT_FLASHHEAD_REPO_PATH", str(FAKE_CHECKOUT))
    os.environ.setdefault("OMNIRT_FLASHHEAD_CKPT_DIR", str(FAKE_CHECKOUT / "models" / "SoulX-FlashHead-1_3B"))
    os.environ.setdefault("OMNIRT_FLASHHEAD_WAV2VEC_DIR", str(FAKE_CHECKOUT / "models" / "wav2vec2-base-960h"))
    os.environ.setdefault("OMNIRT_FLASHHEAD_PYTHON", sys.executable)

    import uvicorn
    from omnirt.models.flashhead.pipeline import FlashHeadPipeline
    from omnirt.server import create_app

    FlashHeadPipeline.allow_cpu_stub_execution = True
    remote_workers = None
    if args.remote_worker:  # only then: OmniRT's CLI module is a heavy import, kept off the common path
        from omnirt.cli.main import parse_remote_worker_specs

        remote_workers = parse_remote_worker_specs(args.remote_worker)
    app = create_app(
        default_backend="cpu-stub",
        default_request_config={"launcher": "python", "output_dir": str(Path(args.output_dir).resolve())},
        api_key_file=args.api_key_file,
        max_concurrency=args.max_concurrency,
        redis_url=args.redis_url,
        remote_workers=remote_workers,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
