"""The sampling loop, written out: text encoding, classifier-free guidance in one batched UNet call,
DDIM steps, VAE decoding. :func:`sample` equals ``StableDiffusionPipeline.__call__`` (notebook 00
asserts that).

:func:`denoise` is the one denoising loop of the course. Plain sampling, Prompt-to-Prompt, Photoswap,
Plug-and-Play, Imagic's sampling, DragDiffusion's denoising and Paint by Example's inpainting all run
it: the methods differ in what they do at a step (swap a map, inject a feature, add input channels,
keep a region), which controllers and a callback say, not in how the timesteps are walked.
Inversion (:mod:`course_lib.inversion`) walks them the other way, with its own loop.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import checks


def _device_dtype(pipe):
    return pipe.unet.device, pipe.unet.dtype


@torch.no_grad()
def encode_text(pipe, prompts: str | Sequence[str]) -> torch.Tensor:
    """Hidden states of the text encoder for each prompt, padded to the tokenizer's max length. A
    prompt longer than the encoder's window is an error (:func:`course_lib.checks.prompt`), not cut off."""
    prompts = checks.prompts(pipe.tokenizer, prompts)
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt")
    device, dtype = _device_dtype(pipe)
    mask = None
    if getattr(pipe.text_encoder.config, "use_attention_mask", False):
        mask = tok.attention_mask.to(device)
    return pipe.text_encoder(tok.input_ids.to(device), attention_mask=mask)[0].to(dtype)


def latent_shape(pipe, batch: int = 1, height: int | None = None, width: int | None = None):
    f = pipe.vae_scale_factor
    height = height or pipe.unet.config.sample_size * f
    width = width or pipe.unet.config.sample_size * f
    return (batch, pipe.unet.config.in_channels, height // f, width // f)


def initial_latents(pipe, batch: int = 1, generator: torch.Generator | None = None, height=None, width=None):
    """Gaussian starting latents, drawn on the CPU so that a seed gives the same image on any device."""
    device, dtype = _device_dtype(pipe)
    z = torch.randn(latent_shape(pipe, batch, height, width), generator=generator, dtype=torch.float32)
    return (z * pipe.scheduler.init_noise_sigma).to(device, dtype)


@torch.no_grad()
def decode(pipe, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> images as a float tensor in [0, 1], N x 3 x H x W."""
    x = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return (x.float() / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def encode(pipe, images, generator=None) -> torch.Tensor:
    """PIL image(s) or a [0, 1] tensor -> scaled VAE latents (the posterior mean)."""
    x = to_tensor(images).to(pipe.vae.device, pipe.vae.dtype)
    return pipe.vae.encode(x * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor


def to_tensor(images) -> torch.Tensor:
    """PIL image, list of them, or H x W x 3 array(s) (N x H x W x 3 for a batch) -> float N x 3 x H x W
    in [0, 1]. The dtype decides the range (:mod:`course_lib.checks`): uint8 is 0..255, float 0..1; a
    tensor is taken as N x 3 x H x W (or 3 x H x W) already in 0..1 (uint8 tensors are divided by 255)."""
    if torch.is_tensor(images):
        t = images if images.ndim == 4 else images[None]
        return t.float() / 255.0 if t.dtype == torch.uint8 else t
    if isinstance(images, (Image.Image, np.ndarray)):
        images = images if isinstance(images, np.ndarray) and images.ndim == 4 else [images]
    arrs = [np.asarray(im.convert("RGB")) if isinstance(im, Image.Image) else np.asarray(im) for im in images]
    a = np.stack(arrs)
    if a.dtype == bool:
        raise TypeError("a bool array is a mask, not an image")
    integer = np.issubdtype(a.dtype, np.integer)
    t = torch.from_numpy(a.astype(np.float32)).permute(0, 3, 1, 2)
    return t / 255.0 if integer else t


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def guided_noise(pipe, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor | None,
                 guidance_scale: float, extra_channels: torch.Tensor | None = None) -> torch.Tensor:
    """The noise prediction for one step: one UNet call for the unconditional and conditional halves,
    combined with classifier-free guidance, eps_u + s (eps_c - eps_u) (without guidance: eps_c).

    ``extra_channels`` (n x c x h x w) are concatenated to the latents as further input channels
    (Paint by Example's masked-image latent and mask)."""
    guided = uncond is not None and checks.is_guided(guidance_scale)
    x = torch.cat([latents, latents]) if guided else latents
    x = pipe.scheduler.scale_model_input(x, t)
    if extra_channels is not None:
        x = torch.cat([x, torch.cat([extra_channels, extra_channels]) if guided else extra_channels], 1)
    emb = torch.cat([uncond, cond]) if guided else cond
    eps = pipe.unet(x, t, encoder_hidden_states=emb).sample
    if not guided:
        return eps
    eps_u, eps_c = eps.chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


@torch.no_grad()
def denoise(pipe, latents: torch.Tensor, cond: torch.Tensor, uncond=None, num_inference_steps: int = 50,
            guidance_scale: float = 7.5, *, start_index: int = 0, extra_channels: torch.Tensor | None = None,
            controllers=None, callback: Callable[[int, int, torch.Tensor], torch.Tensor | None] | None = None,
            progress: bool = False, desc: str = "DDIM") -> torch.Tensor:
    """The denoising loop every method of the course runs: DDIM steps from ``latents`` to z_0.

    ``latents``: n starting latents, at ``timesteps[start_index]`` (0: pure noise z_T; DragDiffusion
    starts later). ``cond``: n condition embeddings (text, or Paint by Example's image token).
    ``uncond``: the unconditional embedding for classifier-free guidance, or one per step (null-text
    inversion); ``None`` or ``guidance_scale == 1``: no guidance (s < 1 mixes towards the unconditional
    prediction by the same formula; s = 0 is the unconditional model). ``extra_channels``: more UNet input
    channels (see :func:`guided_noise`). ``controllers``: attention or feature controllers
    (:mod:`course_lib.attention`), installed for this loop only. ``callback(i, t, latents)`` runs
    after step ``i``; a tensor it returns becomes the latents (LocalBlend, Plug-and-Play's source
    branch, Paint by Example's kept region). Returns the final latents.
    """
    from .attention import BatchLayout, controlling

    n = latents.shape[0]
    num_inference_steps = checks.steps(num_inference_steps)
    guidance_scale = checks.guidance(guidance_scale)
    if not 0 <= start_index < num_inference_steps:
        raise ValueError(f"start_index must be in 0..{num_inference_steps - 1}, got {start_index}")
    guided = uncond is not None and checks.is_guided(guidance_scale)
    # 1. the timesteps (all of them; the loop walks them from start_index)
    pipe.scheduler.set_timesteps(num_inference_steps, device=latents.device)
    timesteps = pipe.scheduler.timesteps
    # 2. the controllers: told the batch layout and the step count, installed; restored after the loop
    with controlling(pipe.unet, controllers, BatchLayout(n, guided), num_inference_steps) as ctls:
        # 3. the denoising loop
        for i in tqdm(range(start_index, len(timesteps)), desc=desc, disable=not progress, leave=False):
            t = timesteps[i]
            for c in ctls:  # 3a. which step it is
                c.set_step(i)
            u = None
            if guided:  # 3b. this step's unconditional embedding
                u = uncond[i] if isinstance(uncond, (list, tuple)) else uncond
                u = u.expand(n, -1, -1).to(cond.dtype)
            eps = guided_noise(pipe, latents, t, cond, u, guidance_scale, extra_channels)  # 3c. predict the noise
            latents = pipe.scheduler.step(eps, t, latents).prev_sample  # 3d. z_t -> z_{t-1}
            if callback is not None:  # 3e. the method's change to the latents
                replaced = callback(i, int(t), latents)
                if replaced is not None:
                    latents = replaced
    return latents


@torch.no_grad()
def sample(pipe, prompt: str | Sequence[str], num_inference_steps: int = 50, guidance_scale: float = 7.5,
           latents: torch.Tensor | None = None, generator: torch.Generator | None = None,
           negative_prompt: str | Sequence[str] = "", uncond_embeddings: Sequence[torch.Tensor] | None = None,
           callback: Callable[[int, int, torch.Tensor], None] | None = None,
           controllers=None, progress: bool = True, output: str = "pil"):
    """Deterministic DDIM sampling with classifier-free guidance.

    ``latents``: the starting z_T (random from ``generator`` if None; an inverted latent for real
    images). ``uncond_embeddings``: one unconditional embedding per step (null-text inversion).
    ``callback(step_index, t, latents)`` runs after each step; if it returns a tensor, that becomes
    the latents (LocalBlend and Plug-and-Play's source branch use this). ``controllers``: attention
    controllers (:mod:`course_lib.attention`) installed for this call and told the step index.
    ``guidance_scale``: 1 samples the conditional model, 0 the unconditional one, above 1 guides
    (eps_u + s (eps_c - eps_u)); diffusers' pipeline skips guidance for every s <= 1, this loop only at 1.
    Returns PIL images (or a [0, 1] tensor with ``output="tensor"``, or latents with ``output="latent"``).
    """
    # 1. the prompts' embeddings, and the negative prompts' for guidance
    num_inference_steps = checks.steps(num_inference_steps)
    guidance_scale = checks.guidance(guidance_scale)
    if output not in ("pil", "tensor", "latent"):
        raise ValueError(f"output must be 'pil', 'tensor' or 'latent', got {output!r}")
    prompts = checks.prompts(pipe.tokenizer, prompt)
    n = len(prompts)
    cond = encode_text(pipe, prompts)
    uncond = None
    if checks.is_guided(guidance_scale):
        negs = [negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt)
        uncond = encode_text(pipe, negs) if uncond_embeddings is None else list(uncond_embeddings)
    # 2. the starting latents z_T
    if latents is None:
        latents = initial_latents(pipe, n, generator)
    elif latents.shape[0] == 1 and n > 1:
        latents = latents.expand(n, -1, -1, -1)
    latents = latents.to(*_device_dtype(pipe))
    # 3. the denoising loop
    latents = denoise(pipe, latents, cond, uncond, num_inference_steps, guidance_scale, controllers=controllers,
                      callback=callback, progress=progress)
    # 4. the VAE decodes z_0
    if output == "latent":
        return latents
    images = decode(pipe, latents)
    return images if output == "tensor" else to_pil(images)
