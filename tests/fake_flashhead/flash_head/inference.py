"""Test double of SoulX-FlashHead's ``flash_head/inference.py``: the same functions, signatures and
module-level ``infer_params`` (read by a relative path, so it must be imported from inside the checkout).

Everything else in this fake checkout is labelled the same way: it imitates the real code's interface
and habits (CUDA-only calls, the global RNG, per-session attributes), never its model.
"""

import copy
import os
import time

import torch
import yaml
from flash_head.src.distributed.usp_device import get_device, get_parallel_degree
from flash_head.src.pipeline.flash_head_pipeline import FlashHeadPipeline

with open("flash_head/configs/infer_params.yaml") as f:
    infer_params = yaml.safe_load(f)


def get_pipeline(world_size, ckpt_dir, model_type, wav2vec_dir):
    ulysses_degree, ring_degree = get_parallel_degree(world_size, infer_params["num_heads"])
    device = get_device(ulysses_degree, ring_degree)
    pipeline = FlashHeadPipeline(
        checkpoint_dir=ckpt_dir, model_type=model_type, wav2vec_dir=wav2vec_dir, device=device, use_usp=world_size > 1
    )
    motion_frames_latent_num = infer_params["motion_frames_latent_num"]
    infer_params["motion_frames_num"] = (motion_frames_latent_num - 1) * pipeline.config.vae_stride[0] + 1
    infer_params["sample_steps"] = 4
    return pipeline


def get_base_data(pipeline, cond_image_path_or_dir, base_seed, use_face_crop):
    pipeline.prepare_params(
        cond_image_path_or_dir=cond_image_path_or_dir,
        target_size=(infer_params["height"], infer_params["width"]),
        frame_num=infer_params["frame_num"],
        motion_frames_num=infer_params["motion_frames_num"],
        sampling_steps=infer_params["sample_steps"],
        seed=base_seed,
        shift=infer_params["sample_shift"],
        color_correction_strength=infer_params["color_correction_strength"],
        use_face_crop=use_face_crop,
    )


def get_infer_params():
    return copy.deepcopy(infer_params)


def get_audio_embedding(pipeline, audio_array, audio_start_idx=-1, audio_end_idx=-1):
    sample_rate, fps = infer_params["sample_rate"], infer_params["tgt_fps"]
    audio_embedding = pipeline.preprocess_audio(audio_array, sr=sample_rate, fps=fps)
    if audio_start_idx == -1 or audio_end_idx == -1:
        audio_start_idx, audio_end_idx = 0, audio_embedding.shape[0]
    indices = torch.arange(5) - 2
    center_indices = torch.arange(audio_start_idx, audio_end_idx).unsqueeze(1) + indices.unsqueeze(0)
    center_indices = torch.clamp(center_indices, min=0, max=audio_end_idx - 1)
    return audio_embedding[center_indices][None, ...].contiguous()


def run_pipeline(pipeline, audio_embedding):
    """33 frames, float32 in [0, 255], (33, 512, 512, 3) RGB. FAKE_FLASHHEAD_SLICE_SEC adds a fixed compute
    time per call (benchmarks, event-loop tests)."""
    time.sleep(float(os.environ.get("FAKE_FLASHHEAD_SLICE_SEC", "0") or 0))
    audio_embedding = audio_embedding.to(pipeline.device)
    sample = pipeline.generate(audio_embedding)
    return sample.add_(1).div_(2).clip_(0, 1).mul_(255).permute(1, 2, 3, 0).contiguous()  # in place: less memory
