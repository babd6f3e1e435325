"""The sampling loop, written out: text encoding, classifier-free guidance in one batched UNet call,
DDIM steps, VAE decoding. It equals ``StableDiffusionPipeline.__call__`` (notebook 00 asserts that),
and it is the loop later lessons attach attention controllers to.
"""
from __future__ import annotations

import contextlib

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm


def _device_dtype(pipe):
    return pipe.unet.device, pipe.unet.dtype


@torch.no_grad()
def encode_text(pipe, prompts: str | Sequence[str]) -> torch.Tensor:
    """Hidden states of the text encoder for each prompt, padded to the tokenizer's max length."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
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
    """PIL image, list of them, or HxWx3 uint8 array(s) -> float N x 3 x H x W in [0, 1]."""
    if torch.is_tensor(images):
        return images if images.ndim == 4 else images[None]
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    arrs = [np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im, dtype=np.float32) for im in images]
    t = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
    return t / 255.0 if t.max() > 1.5 else t


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


def guided_noise(pipe, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor | None,
                 guidance_scale: float) -> torch.Tensor:
    """One UNet call for the unconditional and conditional halves, combined with guidance."""
    if uncond is None or guidance_scale <= 1.0:
        return pipe.unet(latents, t, encoder_hidden_states=cond).sample
    x = torch.cat([latents, latents])
    x = pipe.scheduler.scale_model_input(x, t)
    eps_u, eps_c = pipe.unet(x, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


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
    Returns PIL images (or a [0, 1] tensor with ``output="tensor"``, or latents with ``output="latent"``).
    """
    from .attention import BatchLayout, Controller, attention_control

    ctls = [] if controllers is None else [controllers] if isinstance(controllers, Controller) else list(controllers)
    n = 1 if isinstance(prompt, str) else len(prompt)
    with contextlib.ExitStack() as stack:
        if ctls:
            for c in ctls:
                c.begin(BatchLayout(n, guidance_scale > 1.0), num_inference_steps)
            stack.callback(lambda: [c.end() for c in ctls])  # runs after the processors are restored
            stack.enter_context(attention_control(pipe.unet, ctls))
        return _sample(pipe, prompt, num_inference_steps, guidance_scale, latents, generator, negative_prompt,
                       uncond_embeddings, callback, ctls, progress, output)


def _sample(pipe, prompt, num_inference_steps, guidance_scale, latents, generator, negative_prompt,
            uncond_embeddings, callback, ctls, progress, output):
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    n = len(prompts)
    cond = encode_text(pipe, prompts)
    negs = [negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt)
    uncond = encode_text(pipe, negs) if guidance_scale > 1.0 else None
    if latents is None:
        latents = initial_latents(pipe, n, generator)
    elif latents.shape[0] == 1 and n > 1:
        latents = latents.expand(n, -1, -1, -1)
    latents = latents.to(*_device_dtype(pipe))
    pipe.scheduler.set_timesteps(num_inference_steps, device=latents.device)
    for i, t in enumerate(tqdm(pipe.scheduler.timesteps, desc="DDIM", disable=not progress, leave=False)):
        for c in ctls:
            c.set_step(i, int(t))
        u = uncond if uncond_embeddings is None else uncond_embeddings[i].expand(n, -1, -1).to(cond.dtype)
        eps = guided_noise(pipe, latents, t, cond, u, guidance_scale)
        latents = pipe.scheduler.step(eps, t, latents).prev_sample
        if callback is not None:
            replaced = callback(i, int(t), latents)
            if replaced is not None:
                latents = replaced
    if output == "latent":
        return latents
    images = decode(pipe, latents)
    return images if output == "tensor" else to_pil(images)
