"""The pipeline built once, and the two things the worker thread does with it: open a stream, run a slice."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

from opentalking_flashhead.server.resident import checkout, slicing, state
from opentalking_flashhead.server.resident.options import SLICES, ModelOptions, SliceSpec, StartupError

SIZE = 512


class ResidentModel:
    """SoulX-FlashHead's pipeline from the user's checkout. Not thread-safe: one thread uses it."""

    def __init__(self, options: ModelOptions, inference: ModuleType, pipeline: Any) -> None:
        self.options = options
        self.spec: SliceSpec = SLICES[options.model_type]
        self._inference = inference
        self._pipeline = pipeline
        self._embed = slicing.embed_range(self.spec)

    @classmethod
    def build(cls, options: ModelOptions) -> ResidentModel:
        """Import the checkout, adapt it to the device, build the pipeline (once: it is the slow part)."""
        inference = checkout.import_inference(options.flashhead_repo)
        checkout.adapt(inference, options)
        pipeline = inference.get_pipeline(
            world_size=1,
            ckpt_dir=str(options.ckpt_dir.resolve()),
            model_type=options.model_type,
            wav2vec_dir=str(options.wav2vec_dir.resolve()),
        )
        model = cls(options, inference, pipeline)
        model._check_params()
        return model

    def open_stream(self, image: Path) -> state.StreamState:
        """A new stream on ``image``: the face prepared (resized, VAE-encoded) with every RNG seeded, so a
        stream's frames do not depend on what ran before it."""
        torch.manual_seed(self.options.seed)
        self._inference.get_base_data(
            self._pipeline, cond_image_path_or_dir=str(image), base_seed=self.options.seed, use_face_crop=False
        )
        if self._pipeline.motion_frames_num != self.spec.motion_frames:
            raise RuntimeError(
                f"the checkout's infer_params now say {self._pipeline.motion_frames_num} motion frames, not "
                f"{self.spec.motion_frames}: another model type was loaded in this process (one type a process)"
            )
        return state.StreamState.take(self._pipeline, self.options.device, slicing.silent_window())

    def run_slice(self, stream: state.StreamState, samples: np.ndarray) -> np.ndarray:
        """One slice of ``stream``: its new frames, uint8 RGB (frames, 512, 512, 3), the stream advanced."""
        window = slicing.advance(stream.window, samples)
        state.swap_in(self._pipeline, stream)
        embedding = self._inference.get_audio_embedding(self._pipeline, window, *self._embed)
        video = self._inference.run_pipeline(self._pipeline, embedding)
        frames = video[self.spec.motion_frames :].to(torch.uint8).cpu().numpy()
        state.swap_out(self._pipeline, stream)
        stream.window = window
        return frames

    def warm_up(self) -> None:
        """One silent slice on a grey face, so compilation and allocation happen before traffic."""
        with tempfile.TemporaryDirectory(prefix="flashhead-warmup-") as directory:
            face = Path(directory) / "warmup.png"
            Image.new("RGB", (SIZE, SIZE), (128, 128, 128)).save(face)
            frames = self.run_slice(self.open_stream(face), np.zeros(self.spec.samples, dtype=np.float32))
        if frames.shape != (self.spec.frames, SIZE, SIZE, 3):
            raise StartupError(
                f"--flashhead-repo {self.options.flashhead_repo}: a warm-up slice gave frames of shape "
                f"{frames.shape}, not {(self.spec.frames, SIZE, SIZE, 3)}; is this SoulX-FlashHead?"
            )

    def _check_params(self) -> None:
        """The checkout's own stream parameters must be the ones this runtime slices by."""
        params = self._inference.get_infer_params()
        window = params["sample_rate"] * params["cached_audio_duration"]
        found = (params["frame_num"], params["motion_frames_num"], window)
        expected = (self.spec.frames_per_call, self.spec.motion_frames, slicing.WINDOW_SAMPLES)
        if found != expected:
            raise StartupError(
                f"--flashhead-repo {self.options.flashhead_repo}: its {self.options.model_type} stream is "
                f"(frames, motion frames, window samples) = {found}, this server slices by {expected}"
            )
