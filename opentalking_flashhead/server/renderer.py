"""What the protocol layer needs from whatever draws the frames: the stand-in or the resident model.

``ResidentRuntime`` (``server/resident/runtime.py``) and ``StandinRenderer`` both satisfy it, so
one protocol layer (routes, validation, jobs, events, auth, clip writing) serves either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Renderer(Protocol):
    @property
    def ready(self) -> bool:
        """True once generations can run (the resident model: after its warm-up slice)."""
        ...

    async def render(self, *, image: Path, audio: np.ndarray, session: str | None, chunk: int | None) -> np.ndarray:
        """Frames for ``audio`` (float32 mono 16 kHz in [-1, 1]) with this face: uint8 RGB (n, 512, 512, 3),
        n = max(1, round(len(audio) * 25 / 16000)). Never blocks the event loop."""
        ...

    def close_session(self, session: str) -> bool:
        """Forget a session's state; False when there was none."""
        ...

    def describe(self) -> dict[str, Any]:
        """Fields the model card in ``/v1/models`` gains (``resident``, ``model_type``, ``slice_samples`` …)."""
        ...

    async def aclose(self) -> None:
        """Stop worker threads and drop state, at shutdown."""
        ...
