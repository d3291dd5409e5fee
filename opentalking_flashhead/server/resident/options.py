"""What the resident model is started with, and the checks that fail fast before anything listens.

No heavy imports: ``preflight`` imports torch only to ask it about the GPU.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

MODEL_TYPES = ("lite", "pro")
DTYPES = ("bf16", "fp16", "fp32")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class SliceSpec:
    """One stream-mode slice: the audio it consumes, the frames it emits, the motion frames it drops."""

    samples: int
    frames: int
    motion_frames: int

    @property
    def frames_per_call(self) -> int:
        """Frames one ``run_pipeline`` call renders (33 for both models)."""
        return self.frames + self.motion_frames


SLICES = {"pro": SliceSpec(samples=17920, frames=28, motion_frames=5), "lite": SliceSpec(15360, 24, 9)}


@dataclass(frozen=True)
class ModelOptions:
    """How ``serve`` was started: where the user's checkout and weights are, and the runtime's limits."""

    flashhead_repo: Path
    ckpt_dir: Path
    wav2vec_dir: Path
    model_type: str = "lite"  # "lite" | "pro"
    device: str = "cuda"  # "cuda" | "cuda:N" | "cpu"
    dtype: str = "bf16"  # "bf16" | "fp16" | "fp32"
    compile: bool = True  # --no-compile sets False
    max_sessions: int = 8
    session_ttl_sec: float = 300.0
    seed: int = 9999  # base seed; each session's RNG seeded explicitly from it


class StartupError(Exception):
    """One line naming the flag to fix (e.g. '--ckpt-dir /x: Model_Lite/config.json is missing')."""


# What get_pipeline reads, per model type, under --ckpt-dir and --wav2vec-dir.
CHECKPOINT_FILES = {
    "lite": (
        "Model_Lite/config.json",
        "Model_Lite/diffusion_pytorch_model.safetensors",
        "VAE_LTX/config.json",
        "VAE_LTX/autoencoder.pth",
        "VAE_LTX/per_channel_statistics.json",
    ),
    "pro": (
        "Model_Pro/config.json",
        "Model_Pro/diffusion_pytorch_model.safetensors",
        "VAE_Wan/Wan2.1_VAE.pth",
    ),
}
WAV2VEC_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
CHECKOUT_FILES = ("flash_head/inference.py", "flash_head/configs/infer_params.yaml")


def preflight(options: ModelOptions) -> None:
    """Fail fast, before anything listens: checkout, checkpoints, wav2vec dir, torch, GPU for cuda*."""
    _check_values(options)
    _check_files("--flashhead-repo", options.flashhead_repo, CHECKOUT_FILES, "a SoulX-FlashHead checkout")
    _check_files("--ckpt-dir", options.ckpt_dir, CHECKPOINT_FILES[options.model_type], "SoulX-FlashHead's weights")
    _check_files("--wav2vec-dir", options.wav2vec_dir, WAV2VEC_FILES, "wav2vec2-base-960h")
    if importlib.util.find_spec("torch") is None:
        raise StartupError(
            f"--device {options.device}: torch is not installed in {sys.executable}; "
            "install the PyTorch build for your GPU (and SoulX-FlashHead's requirements) into this environment"
        )
    if options.device != "cpu":
        _check_gpu(options.device)


def _check_values(options: ModelOptions) -> None:
    if options.model_type not in MODEL_TYPES:
        raise StartupError(f"--model-type {options.model_type}: must be one of {', '.join(MODEL_TYPES)}")
    if not _DEVICE.fullmatch(options.device):
        raise StartupError(f"--device {options.device}: must be cuda, cuda:N or cpu")
    if options.dtype not in DTYPES:
        raise StartupError(f"--dtype {options.dtype}: must be one of {', '.join(DTYPES)}")
    if options.max_sessions < 1:
        raise StartupError(f"--max-sessions {options.max_sessions}: must be at least 1")
    if not options.session_ttl_sec > 0:
        raise StartupError(f"--session-ttl {options.session_ttl_sec:g}: must be a positive number of seconds")


def _check_files(flag: str, directory: Path, names: tuple[str, ...], what: str) -> None:
    if not directory.is_dir():
        raise StartupError(f"{flag} {directory}: no such directory (it should hold {what})")
    for name in names:
        if not (directory / name).is_file():
            raise StartupError(f"{flag} {directory}: {name} is missing (is this {what}?)")


def _check_gpu(device: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise StartupError(
            f"--device {device}: torch {torch.__version__} sees no CUDA GPU; "
            "check the driver and the torch build, or use --device cpu (slow: tests and tiny weights only)"
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise StartupError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
