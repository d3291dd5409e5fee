"""SoulX-FlashHead imported from the user's checkout (never vendored), and adapted to the device at run time.

The checkout is left untouched: everything it assumes about CUDA (shared/flashhead-model.md) is changed
on the imported modules from here.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from opentalking_flashhead.server.resident.options import ModelOptions, StartupError

INFERENCE_MODULE = "flash_head.inference"
PIPELINE_MODULE = "flash_head.src.pipeline.flash_head_pipeline"
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def import_inference(repo: Path) -> ModuleType:
    """``flash_head.inference`` from the checkout: on ``sys.path``, and imported from inside it, since it
    opens ``flash_head/configs/infer_params.yaml`` by a relative path when imported."""
    repo = repo.resolve()
    loaded = sys.modules.get(INFERENCE_MODULE)
    if loaded is not None:
        origin = Path(str(loaded.__file__)).resolve()
        if not origin.is_relative_to(repo):
            raise StartupError(f"--flashhead-repo {repo}: this process already imported {origin} (one checkout each)")
        return loaded
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    previous = os.getcwd()
    os.chdir(repo)
    try:
        return importlib.import_module(INFERENCE_MODULE)
    except ImportError as exc:
        raise StartupError(
            f"--flashhead-repo {repo}: cannot import {INFERENCE_MODULE} ({exc}); "
            f"install SoulX-FlashHead's requirements into {sys.executable}"
        ) from exc
    finally:
        os.chdir(previous)


def adapt(inference: ModuleType, options: ModelOptions) -> None:
    """Make the checkout run on ``--device`` in ``--dtype``: its own ``get_device`` says "cuda" for one
    process, its pipeline calls ``torch.cuda.synchronize()`` unconditionally, compiles by module flags
    and takes its dtype only as a constructor default that ``get_pipeline`` does not expose."""
    pipeline_module = sys.modules[PIPELINE_MODULE]
    inference.get_device = functools.partial(_one_device, options.device)  # type: ignore[attr-defined]
    inference.FlashHeadPipeline = functools.partial(  # type: ignore[attr-defined]
        pipeline_module.FlashHeadPipeline, param_dtype=TORCH_DTYPES[options.dtype]
    )
    if options.device == "cpu" or not options.compile:
        pipeline_module.COMPILE_MODEL = False  # type: ignore[attr-defined]
        pipeline_module.COMPILE_VAE = False  # type: ignore[attr-defined]
    if options.device == "cpu":
        torch.cuda.synchronize = _no_synchronize
    elif ":" in options.device:
        torch.cuda.set_device(options.device)  # bare torch.cuda calls in the checkout mean this GPU


def _one_device(device: str, ulysses_degree: int, ring_degree: int) -> str:
    """``get_device`` for one process on one device (the checkout's asks xfuser for several)."""
    return device


def _no_synchronize(device: Any = None) -> None:
    """``torch.cuda.synchronize`` on a CPU: there is nothing to wait for."""
