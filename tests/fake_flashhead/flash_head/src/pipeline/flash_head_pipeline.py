"""Test double of SoulX-FlashHead's ``FlashHeadPipeline``: the real constructor, method names, the 16
per-session attributes ``prepare_params`` sets, the in-place generator and the motion latents that
``generate`` replaces, Lite's use of the global torch RNG, and the CUDA-only habits (a "cuda" default
device, ``torch.cuda.synchronize()`` in ``generate``, the COMPILE flags) a CPU run must adapt.

Its frames are drawn, not generated, and encode the state they came from: the face, every generator draw,
the motion latents carried from the previous slice, the audio window (a stripe per frame) and, for Lite,
the global RNG. A missed state swap or a retry that advanced the state twice shows in the pixels.
"""

import json
import os
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageOps

# compile models to speedup inference
COMPILE_MODEL = True
COMPILE_VAE = True

BUILT = 0  # pipelines this process has built (the resident runtime builds one)
STRIPE_ROWS = 16  # the top rows of every frame show that frame's audio level
_FILES = {
    "lite": ("Model_Lite", ("VAE_LTX/config.json", "VAE_LTX/autoencoder.pth", "VAE_LTX/per_channel_statistics.json")),
    "pro": ("Model_Pro", ("VAE_Wan/Wan2.1_VAE.pth",)),
}


def timestep_transform(t, shift=5.0, num_timesteps=1000):
    t = t / num_timesteps
    return shift * t / (1 + (shift - 1) * t) * num_timesteps


class FakeModel(torch.nn.Module):
    """Predicts the flow towards tanh(face latent + audio level), so the result keeps the face, the audio,
    the motion latents and the generator's draws."""

    def __init__(self, time_stride):
        super().__init__()
        self.time_stride = time_stride
        self.register_buffer("gain", torch.tensor(4.0))  # a weight, so moving to a missing GPU fails as it would

    def forward(self, x, timestep, context, y):
        level = context[0, :, :, 0, 0].float().mean(dim=1)[:: self.time_stride]  # one per latent frame
        target = torch.tanh(y + (self.gain * level).view(1, 1, -1, 1, 1).to(y.dtype))
        return x - target


class FakeVAE:
    """Encodes by taking every ``stride[0]``-th frame and pooling pixels, decodes by repeating them. Lite's
    samples its latents with the global torch RNG, as the LTX VAE does."""

    def __init__(self, stride, samples_latents, dtype, device):
        self.stride = stride
        self.samples_latents = samples_latents
        torch.zeros(1, dtype=dtype, device=device)

    def encode(self, video):
        frames = video[0, :, :: self.stride[0]]
        latent = torch.nn.functional.avg_pool2d(frames.float(), self.stride[1]).to(video.dtype)
        if self.samples_latents:
            latent = latent + 0.05 * torch.randn(latent.shape, dtype=latent.dtype, device=latent.device)
        return latent

    def decode(self, zs):
        channels, frames, height, width = zs.shape
        t, h, w = self.stride
        video = zs[:, :, None, :, None, :, None].expand(channels, frames, t, height, h, width, w)
        return video.reshape(1, channels, frames * t, height * h, width * w)[:, :, : (frames - 1) * t + 1]


def get_cond_image_dict(cond_image_path_or_dir, use_face_crop):
    if os.path.isdir(cond_image_path_or_dir):
        raise NotImplementedError("test double: one condition image, not a directory")
    return {cond_image_path_or_dir.split("/")[-1].split(".")[0]: Image.open(cond_image_path_or_dir).convert("RGB")}


def resize_and_centercrop(image, size):
    height, width = size
    pixels = np.asarray(ImageOps.fit(image, (width, height)), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None, :, None]  # 1 C 1 H W


class FlashHeadPipeline:
    def __init__(
        self,
        checkpoint_dir,
        model_type,
        wav2vec_dir,
        device="cuda",
        param_dtype=torch.bfloat16,
        use_usp=False,
        num_timesteps=1000,
        use_timestep_transform=True,
    ):
        global BUILT
        if model_type not in _FILES:
            raise NotImplementedError(f"test double: model_type {model_type!r}")
        self.param_dtype = param_dtype
        self.device = device
        self.rank = 0
        self.model_type = model_type
        self.use_ltx = model_type == "lite"
        model_dir, vae_files = _FILES[model_type]
        wav2vec_files = [os.path.join(wav2vec_dir, name) for name in ("config.json", "model.safetensors")]
        for path in [os.path.join(checkpoint_dir, name) for name in vae_files] + wav2vec_files:
            if not os.path.isfile(path):
                raise OSError(f"test double: {path} not found")
        with open(os.path.join(checkpoint_dir, model_dir, "config.json")) as f:
            self.config = SimpleNamespace(**json.load(f))
        self.vae = FakeVAE(self.config.vae_stride, self.use_ltx, param_dtype, device)
        self.model = FakeModel(self.config.vae_stride[0]).eval().requires_grad_(False)
        self.model.to(device=self.device, dtype=self.param_dtype)
        self.num_timesteps = num_timesteps
        self.use_timestep_transform = use_timestep_transform
        if COMPILE_MODEL:
            self.model = torch.compile(self.model)
        if COMPILE_VAE:
            self.vae.encode = torch.compile(self.vae.encode)
            self.vae.decode = torch.compile(self.vae.decode)
        BUILT += 1

    @torch.no_grad()
    def prepare_params(
        self,
        cond_image_path_or_dir,
        target_size,
        frame_num,
        motion_frames_num,
        sampling_steps,
        seed=None,
        shift=5.0,
        color_correction_strength=0.0,
        use_face_crop=False,
    ):
        self.cond_image_dict = get_cond_image_dict(cond_image_path_or_dir, use_face_crop)
        self.frame_num = frame_num
        self.motion_frames_num = motion_frames_num
        self.color_correction_strength = color_correction_strength
        self.target_h, self.target_w = target_size
        self.lat_h, self.lat_w = self.target_h // self.config.vae_stride[1], self.target_w // self.config.vae_stride[2]
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        timesteps = [1000, 750, 500, 250] if sampling_steps == 4 else list(np.linspace(1000, 1, sampling_steps))
        timesteps.append(0.0)
        timesteps = [torch.tensor([t], device=self.device) for t in timesteps]
        if self.use_timestep_transform:
            timesteps = [timestep_transform(t, shift=shift, num_timesteps=self.num_timesteps) for t in timesteps]
        self.timesteps = timesteps
        self.cond_image_tensor_dict = {}
        self.ref_img_latent_dict = {}
        for i, (person_name, cond_image_pil) in enumerate(self.cond_image_dict.items()):
            cond_image_tensor = resize_and_centercrop(cond_image_pil, (self.target_h, self.target_w))
            cond_image_tensor = (cond_image_tensor.to(self.device, dtype=self.param_dtype) / 255 - 0.5) * 2
            self.cond_image_tensor_dict[person_name] = cond_image_tensor
            video_frames = cond_image_tensor.repeat(1, 1, self.frame_num, 1, 1)
            self.ref_img_latent_dict[person_name] = self.vae.encode(video_frames)
            if i == 0:
                self.reset_person_name(person_name)

    @torch.no_grad()
    def reset_person_name(self, person_name=None):
        if person_name is not None and person_name in self.cond_image_dict:
            self.person_name = person_name
        self.original_color_reference = self.cond_image_tensor_dict[self.person_name]
        self.ref_img_latent = self.ref_img_latent_dict[self.person_name]
        self.latent_motion_frames = self.ref_img_latent[:, :1].clone()

    @torch.no_grad()
    def preprocess_audio(self, speech_array, sr=16000, fps=25):
        """Per video frame, the audio's RMS plus mean, as (frames, 12 layers, 768) like wav2vec2's states."""
        frames = int(len(speech_array) * fps / sr)
        audio = torch.from_numpy(np.asarray(speech_array, dtype=np.float32))
        per_frame = audio[: frames * (sr // fps)].view(frames, sr // fps)
        level = per_frame.pow(2).mean(dim=1).sqrt() + per_frame.mean(dim=1)
        return level.view(frames, 1, 1).expand(frames, 12, 768).to(self.device)

    @torch.no_grad()
    def generate(self, audio_embedding):
        noise = torch.randn(
            self.config.out_dim,
            (self.frame_num - 1) // self.config.vae_stride[0] + 1,
            self.lat_h,
            self.lat_w,
            dtype=self.param_dtype,
            device=self.device,
            generator=self.generator,
        )
        for i in range(len(self.timesteps) - 1):
            torch.cuda.synchronize()
            noise[:, : self.latent_motion_frames.shape[1]] = self.latent_motion_frames
            flow_pred = self.model(
                x=noise.unsqueeze(0), timestep=self.timesteps[i], context=audio_embedding, y=self.ref_img_latent[None]
            )[0]
            t_i = (self.timesteps[i][:, None, None, None] / self.num_timesteps).to(self.param_dtype)
            t_i_1 = (self.timesteps[i + 1][:, None, None, None] / self.num_timesteps).to(self.param_dtype)
            x_0 = noise - flow_pred * t_i
            draw = torch.randn(x_0.size(), dtype=x_0.dtype, device=self.device, generator=self.generator)
            noise = (1 - t_i_1) * x_0 + t_i_1 * draw
        noise[:, : self.latent_motion_frames.shape[1]] = self.latent_motion_frames
        torch.cuda.synchronize()
        videos = self.vae.decode(noise)
        level = audio_embedding[0, :, :, 0, 0].float().mean(dim=1)
        videos[0, :, :, :STRIPE_ROWS] = torch.tanh(4 * level).view(1, -1, 1, 1).to(videos.dtype)
        if self.color_correction_strength > 0.0:
            videos = videos.mul_(0.9).add_(0.1 * self.original_color_reference)
        cond_frame = videos[:, :, -self.motion_frames_num :]
        torch.cuda.synchronize()
        self.latent_motion_frames = self.vae.encode(cond_frame)
        return videos[0].to(torch.float32)
