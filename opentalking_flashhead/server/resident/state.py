"""One stream's model state, swapped onto the shared pipeline around every slice and off again after it.

What a stream carries (shared/flashhead-model.md): the 16 attributes ``prepare_params`` sets (the face,
the motion latents, the generator, ...), the global torch RNG (Lite's VAE samples with it; on a GPU the
CUDA RNG too) and the 8 s audio window. ``generate()`` replaces ``latent_motion_frames`` and advances
``generator`` in place; nothing else is modified in place, so keeping references is enough, except for
the generator's position, which a snapshot copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PIPELINE_STATE = (
    "cond_image_dict",
    "cond_image_tensor_dict",
    "ref_img_latent_dict",
    "ref_img_latent",
    "original_color_reference",
    "latent_motion_frames",
    "generator",
    "timesteps",
    "frame_num",
    "motion_frames_num",
    "color_correction_strength",
    "target_h",
    "target_w",
    "lat_h",
    "lat_w",
    "person_name",
)


@dataclass(frozen=True)
class Snapshot:
    """A stream as it was before a chunk, to go back to if the chunk fails half way."""

    attributes: dict[str, Any]
    generator_state: torch.Tensor
    rng: torch.Tensor
    cuda_rng: torch.Tensor | None
    window: np.ndarray


@dataclass
class StreamState:
    """The state of one stream while it is off the pipeline."""

    device: str
    attributes: dict[str, Any]
    rng: torch.Tensor
    cuda_rng: torch.Tensor | None
    window: np.ndarray

    @classmethod
    def take(cls, pipeline: Any, device: str, window: np.ndarray) -> StreamState:
        """The stream the pipeline holds now (just after ``get_base_data`` for a new one)."""
        state = cls(device, {}, torch.get_rng_state(), None, window)
        swap_out(pipeline, state)
        return state

    def snapshot(self) -> Snapshot:
        return Snapshot(
            dict(self.attributes), self.attributes["generator"].get_state(), self.rng, self.cuda_rng, self.window
        )

    def restore(self, snapshot: Snapshot) -> None:
        self.attributes = dict(snapshot.attributes)
        self.attributes["generator"].set_state(snapshot.generator_state)
        self.rng, self.cuda_rng, self.window = snapshot.rng, snapshot.cuda_rng, snapshot.window


def swap_in(pipeline: Any, state: StreamState) -> None:
    """Put the stream on the pipeline: its attributes, then its RNG state."""
    for name in PIPELINE_STATE:
        setattr(pipeline, name, state.attributes[name])
    restore_rng(state)


def swap_out(pipeline: Any, state: StreamState) -> None:
    """Take the stream back off the pipeline after a slice has advanced it."""
    state.attributes = {name: getattr(pipeline, name) for name in PIPELINE_STATE}
    state.rng = torch.get_rng_state()
    if state.device.startswith("cuda"):
        state.cuda_rng = torch.cuda.get_rng_state(state.device)


def restore_rng(state: StreamState) -> None:
    torch.set_rng_state(state.rng)
    if state.cuda_rng is not None:
        torch.cuda.set_rng_state(state.cuda_rng, state.device)
