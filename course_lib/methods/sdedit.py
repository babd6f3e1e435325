"""SDEdit (Meng et al., ICLR 2022): the baseline every editing method is compared with first.

Noise the image part of the way, to the step where a fraction ``strength`` of the schedule is left,
and denoise it with the new prompt:

    z_{t0} = sqrt(abar_{t0}) z_0 + sqrt(1 - abar_{t0}) eps,    t0 = the timestep at index (1 - strength) T

then run the ordinary DDIM steps from t0 to 0 (the course's one loop, started late). Small
``strength`` keeps the picture and ignores the prompt; large ``strength`` follows the prompt and loses
the picture: there is no setting that keeps the layout *and* makes the edit, which is what
Prompt-to-Prompt and Plug-and-Play add. ``strength=1`` is nearly plain sampling (the first timestep keeps a trace of the image).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import checks
from ..sampling import decode, denoise, encode, encode_text, to_pil


@torch.no_grad()
def sdedit(pipe, image, prompts: str | Sequence[str], strength: float = 0.6, num_inference_steps: int = 50,
           guidance_scale: float = 7.5, generator: torch.Generator | None = None, output: str = "pil"):
    """Edit ``image`` towards each prompt by noising it to ``strength`` of the schedule and denoising.

    ``strength`` in (0, 1]: the fraction of the ``num_inference_steps`` DDIM steps that are run (the
    image is noised to the timestep where they start). One noise draw (``generator``) is shared by all
    prompts, so they differ by their prompt alone. Returns PIL images (or a tensor with ``output="tensor"``).
    """
    strength = checks.fraction(strength, "strength", open_low=True)
    num_inference_steps = checks.steps(num_inference_steps)
    guidance_scale = checks.guidance(guidance_scale)
    prompts = checks.prompts(pipe.tokenizer, prompts)
    if output not in ("pil", "tensor"):
        raise ValueError(f"output must be 'pil' or 'tensor', got {output!r}")
    n = len(prompts)
    z0 = encode(pipe, checks.pipe_image_tensor(pipe, image))
    pipe.scheduler.set_timesteps(num_inference_steps, device=z0.device)
    start = min(num_inference_steps - 1, int(round((1 - strength) * num_inference_steps)))
    t0 = pipe.scheduler.timesteps[start:start + 1]
    noise = torch.randn(z0.shape, generator=generator, dtype=torch.float32).to(z0.device, z0.dtype)
    zt = pipe.scheduler.add_noise(z0, noise, t0).expand(n, -1, -1, -1)
    cond = encode_text(pipe, prompts)
    uncond = encode_text(pipe, [""] * n) if checks.is_guided(guidance_scale) else None
    z = denoise(pipe, zt, cond, uncond, num_inference_steps, guidance_scale, start_index=start, desc="SDEdit")
    images = decode(pipe, z)
    return images if output == "tensor" else to_pil(images)
