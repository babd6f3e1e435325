"""Inverting a real image into the diffusion's starting noise.

DDIM inversion runs the deterministic DDIM update backwards (diffusers' ``DDIMInverseScheduler``):
z_{t+1} is predicted from z_t with the noise the UNet sees at z_t. With guidance 1 it reconstructs
the image closely; under classifier-free guidance the small per-step errors grow, which is why
Prompt-to-Prompt uses null-text inversion (a later lesson).
"""
from __future__ import annotations

import torch
from diffusers import DDIMInverseScheduler
from tqdm.auto import tqdm

from .sampling import encode, encode_text, guided_noise


@torch.no_grad()
def ddim_invert(pipe, image, prompt: str = "", num_inference_steps: int = 50, guidance_scale: float = 1.0,
                progress: bool = True) -> list[torch.Tensor]:
    """The DDIM inversion trajectory [z_0, z_1, ..., z_T] of one image (z_0 its VAE latent).

    ``trajectory[-1]`` is the starting latent that regenerates the image with :func:`sampling.sample`
    at the same prompt, step count and guidance.
    """
    z = encode(pipe, image)
    cond = encode_text(pipe, prompt)
    uncond = encode_text(pipe, "") if guidance_scale > 1.0 else None
    inv = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inv.set_timesteps(num_inference_steps, device=z.device)
    traj = [z]
    for t in tqdm(inv.timesteps, desc="DDIM inversion", disable=not progress, leave=False):
        eps = guided_noise(pipe, z, t, cond, uncond, guidance_scale)
        z = inv.step(eps, t, z).prev_sample
        traj.append(z)
    return traj
