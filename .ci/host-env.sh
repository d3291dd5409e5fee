#!/usr/bin/env bash
# Build OpenTalking 0.1.0's environment without its 7 GB of model dependencies: the host itself
# (no deps) plus what its API, worker and synthesis modules import, in the host's own pins.
# Usage: .ci/host-env.sh VENV_DIR
set -euo pipefail
venv=${1:?usage: host-env.sh VENV_DIR}
here=$(cd "$(dirname "$0")" && pwd)
python3 -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "Location .* is ignored" >&2); }
pip install -U pip
pip install -c "$here/host-constraints.txt" --no-deps opentalking==0.1.0
pip install -c "$here/host-constraints.txt" \
  fastapi 'uvicorn[standard]' pydantic pydantic-settings python-dotenv redis httpx aiortc python-multipart \
  pillow websockets loguru PyYAML edge-tts openai dashscope opencv-python-headless numpy av
"$venv/bin/python" - <<'PY'
import importlib.metadata as m
print("host env:", ", ".join(f"{p} {m.version(p)}" for p in ("opentalking", "numpy", "av", "httpx")))
PY
