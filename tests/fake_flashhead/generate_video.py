"""Test double: the fake SoulX-FlashHead checkout's entry script, same flags as the real one; the stand-in
renders (the resident runtime imports this checkout's ``flash_head.inference`` instead).

OmniRT launches this as the model subprocess; everything around it (routing, validation, jobs,
response JSON) is OmniRT's own. FAKE_FLASHHEAD_FAIL makes the run fail with that text;
FAKE_FLASHHEAD_SLEEP delays it (seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from opentalking_flashhead.server.standin import render_clip


def main() -> int:
    parser = argparse.ArgumentParser()
    for flag in ("ckpt_dir", "wav2vec_dir", "save_file", "base_seed", "cond_image", "cond_image_dir", "audio_path"):
        parser.add_argument(f"--{flag}")
    parser.add_argument("--model_type", default="pro")
    parser.add_argument("--audio_encode_mode", default="stream")
    parser.add_argument("--use_face_crop", default=None)
    args, _ = parser.parse_known_args()
    time.sleep(float(os.environ.get("FAKE_FLASHHEAD_SLEEP", "0") or 0))
    failure = os.environ.get("FAKE_FLASHHEAD_FAIL")
    if failure:
        print(failure)
        return 1
    render_clip(Path(args.cond_image), Path(args.audio_path), Path(args.save_file), model_type=args.model_type)
    return 0


if __name__ == "__main__":
    sys.exit(main())
