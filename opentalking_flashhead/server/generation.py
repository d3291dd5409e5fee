"""One generation, whichever renderer draws it: inputs staged, audio read, frames rendered, clip written.

The clip goes under the request's ``output_dir`` (OmniRT's transport, ``path``) or, when the
client asked for it inline (our extension), back in the answer as ``data_b64``. Inline inputs
and inline clips live in a scratch dir under ``--output-dir`` only while the job runs.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opentalking_flashhead.server.clip import SIZE, read_mono_16k, write_clip
from opentalking_flashhead.server.inputs import INPUT_KEYS, Roots, inline_bytes, is_inline
from opentalking_flashhead.server.jobs import Job
from opentalking_flashhead.server.renderer import Renderer
from opentalking_flashhead.server.validation import MODEL_ID

SCRATCH_DIR = ".flashhead-inline"


@dataclass(frozen=True)
class Ticket:
    """What the protocol layer decided when it accepted a request."""

    inputs: dict[str, str]
    session: str | None
    chunk: int | None
    inline_output: bool


class Generation:
    """The work of every job: a coroutine that hands all computing to threads or to the renderer."""

    def __init__(self, renderer: Renderer, output_dir: Path, roots: Roots, *, backend: str) -> None:
        self.renderer = renderer
        self.output_dir = output_dir
        self.roots = roots
        self.backend = backend
        self._lock = threading.Lock()
        self._last_ms = 0

    async def __call__(self, job: Job) -> dict[str, Any]:
        ticket: Ticket = job.ticket
        config = job.request.get("config") or {}
        output_dir = Path(str(config.get("output_dir") or self.output_dir))
        if not output_dir.is_absolute():
            raise ValueError(
                f"output_dir {str(output_dir)!r} is relative; the model runs in another working directory, "
                "so give an absolute path both sides can reach"
            )
        scratch_root = self.output_dir / SCRATCH_DIR
        scratch_root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=scratch_root, prefix=f"{job.id}-"))
        try:
            image, audio = await asyncio.to_thread(self._stage, ticket.inputs, scratch)
            pcm = await asyncio.to_thread(read_mono_16k, audio)
            frames = await self.renderer.render(
                image=image, audio=pcm.astype(np.float32) / 32768.0, session=ticket.session, chunk=ticket.chunk
            )
            name = f"{MODEL_ID}-{int(config.get('seed', 9999))}-{self._unique_ms()}.mp4"
            inline = ticket.inline_output
            save_file = scratch / name if inline else await asyncio.to_thread(self._target, output_dir, name)
            count = await asyncio.to_thread(write_clip, save_file, frames, pcm)
            artifact: dict[str, Any] = {
                "kind": "video",
                "path": str(save_file),
                "mime": "video/mp4",
                "width": SIZE,
                "height": SIZE,
                "num_frames": count,
                "transport": "path",
                "data_b64": None,
            }
            if inline:
                data = await asyncio.to_thread(save_file.read_bytes)
                artifact.update(path=None, transport="inline", data_b64=base64.b64encode(data).decode("ascii"))
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        metadata = {"task": job.request["task"], "model": MODEL_ID, "backend": self.backend, **self.renderer.describe()}
        return {"outputs": [artifact], "metadata": metadata}

    def _stage(self, inputs: dict[str, str], scratch: Path) -> tuple[Path, Path]:
        """Paths of the image and the audio: inline ones written to ``scratch``, the others re-checked
        against the roots now, at use (a link swapped in since submission is caught)."""
        paths: list[Path] = []
        for key in INPUT_KEYS:
            value = inputs[key]
            if is_inline(value):
                path = scratch / key
                path.write_bytes(inline_bytes(value))
            else:
                path = Path(value).expanduser().resolve()
                if path not in self.roots:
                    raise ValueError(f"input {key} moved outside the service's directories: {value}")
            paths.append(path)
        return paths[0], paths[1]

    def _target(self, output_dir: Path, name: str) -> Path:
        """The clip's path in ``output_dir``, made now and checked to lie under the roots."""
        for _ in ("before", "after"):  # the dir may be swapped for a link while it is made
            if output_dir not in self.roots:
                raise ValueError(f"output_dir {output_dir} lies outside the service's directories ({self.roots})")
            output_dir.mkdir(parents=True, exist_ok=True)
        return output_dir / name

    def _unique_ms(self) -> int:
        """OmniRT names clips by millisecond; two at once must not share a name here."""
        with self._lock:
            self._last_ms = max(int(time.time() * 1000), self._last_ms + 1)
            return self._last_ms
