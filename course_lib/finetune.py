"""Fitting a diffusion model to one image: the denoising loss, a LoRA copy of the UNet, and a way to
sample with a fine-tuned UNet without changing the shared pipeline.

Imagic (text-embedding optimisation and model fine-tuning) and DragDiffusion (identity-preserving
LoRA) both minimise the same loss on the single input image x (its VAE latent z_0):

    L(z_0, e, theta) = E_{t, eps} || eps - eps_theta(sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps, t, e) ||^2

Fine-tuning never touches ``pipe.unet``: :func:`trainable_copy` and :func:`lora_copy` return a new
UNet, and :func:`use_unet` puts it into the pipeline only inside a ``with`` block (and always puts the
original back). On Stable Diffusion the copy costs one more UNet in memory (1.7 GB in fp16).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Sequence

import torch
from PIL import Image

from . import checks

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def image_size(pipe) -> int:
    """The side in pixels of the images the pipeline's UNet is trained for (64 for tiny-sd, 512 for SD 1.5)."""
    return checks.model_size(pipe)


def check_image(pipe, image) -> Image.Image:
    """The input image as RGB PIL at the pipeline's size, or a clear error (:func:`course_lib.checks.image`:
    PIL of any mode, uint8 0..255 or float 0..1 arrays and tensors; transparent pixels laid over white).
    A wrong size is an error, not a silent resize: a drag's points are given in the image's pixels, so
    resize (or crop) the image yourself, e.g. ``image.resize((size, size))``."""
    return checks.pipe_image(pipe, image)


def add_noise(pipe, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """q(z_t | z_0) with the pipeline's noise schedule."""
    return pipe.scheduler.add_noise(z0, noise, t)


def diffusion_loss(pipe, unet, z0: torch.Tensor, cond: torch.Tensor, batch: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte-Carlo estimate of the denoising loss with ``batch`` draws of (t, eps); t ~ U{0..T-1}.

    ``cond`` is the text embedding (1 x tokens x width), repeated over the batch; gradients flow to
    whatever in ``unet`` or ``cond`` requires them.
    """
    T = pipe.scheduler.config.num_train_timesteps
    t = torch.randint(0, T, (batch,), generator=generator).to(z0.device)
    noise = torch.randn((batch, *z0.shape[1:]), generator=generator).to(z0.device, z0.dtype)
    zt = add_noise(pipe, z0.expand(batch, -1, -1, -1), noise, t)
    eps = unet(zt, t, encoder_hidden_states=cond.expand(batch, -1, -1)).sample
    return torch.nn.functional.mse_loss(eps.float(), noise.float())


def trainable_copy(unet) -> torch.nn.Module:
    """A deep copy of the UNet with every weight trainable, in float32 for the optimiser."""
    tuned = copy.deepcopy(unet)
    if tuned.dtype != torch.float32:
        tuned = tuned.to(torch.float32)
    tuned.requires_grad_(True)
    tuned.train()
    return tuned


def lora_copy(unet, rank: int = 16, alpha: float | None = None, targets: Sequence[str] = LORA_TARGETS,
              adapter_name: str = "default", seed: int = 0) -> torch.nn.Module:
    """A deep copy of the UNet with a ``peft`` LoRA adapter on the attention projections ``targets``.

    Only the adapter's A and B matrices require gradients (and are kept in float32); the base
    weights are frozen. LoRA's B starts at zero, so the copy starts equal to the original. A is
    drawn from ``seed``: torch seeds its global generator differently in every process, so
    an unseeded draw would make the same fit give another adapter on every run. The global
    generator's state is left as it was.
    """
    from peft import LoraConfig

    tuned = copy.deepcopy(unet)
    tuned.requires_grad_(False)
    device = next(unet.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        tuned.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                     target_modules=list(targets)), adapter_name=adapter_name)
    for p in tuned.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    tuned.train()
    return tuned


def trainable_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """The adapter weights only (save them with ``safetensors.torch.save_file``)."""
    from peft.utils import get_peft_model_state_dict
    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


@contextlib.contextmanager
def use_unet(pipe, unet):
    """Sample with ``unet`` in place of ``pipe.unet`` inside the block; the original is always put back."""
    original = pipe.unet
    was_training = unet.training
    unet.eval()
    pipe.unet = unet
    try:
        yield pipe
    finally:
        pipe.unet = original
        unet.train(was_training)


def fit_unet(pipe, unet, z0: torch.Tensor, cond: torch.Tensor, steps: int, lr: float, batch: int = 1,
             generator: torch.Generator | None = None, desc: str = "fine-tuning", progress: bool = True) -> list[float]:
    """Adam on the trainable parameters of ``unet`` (a copy) with the denoising loss; returns the losses."""
    from tqdm.auto import tqdm

    params = trainable_parameters(unet)
    if not params:
        raise ValueError("the UNet has no trainable parameters; pass trainable_copy(...) or lora_copy(...)")
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    dtype = unet.dtype  # the base weights' dtype (a LoRA copy keeps only its adapter in float32)
    with torch.enable_grad():
        for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
            loss = diffusion_loss(pipe, unet, z0.to(dtype), cond.detach().to(dtype), batch, generator)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    unet.eval()
    return losses
