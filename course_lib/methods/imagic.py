"""Imagic (Kawar et al., CVPR 2023): text-based, also non-rigid, editing of one real image.

The algorithm, as in the paper (Sec. 3, Fig. 3):

1. **Text-embedding optimisation.** e_tgt = the target text's embedding. Freeze the model and
   minimise the denoising loss of the input image over the embedding: e_opt = argmin_e L(x, e, theta),
   with few steps so that e_opt stays near e_tgt (Eq. 2).
2. **Model fine-tuning.** Freeze e_opt and minimise the same loss over the model: theta* such that
   e_opt reconstructs x (Eq. 3). Fully, or with a LoRA adapter (``finetune="lora"``) that fits a
   small GPU; the shared pipeline is never modified (:mod:`course_lib.finetune`).
3. **Interpolation.** e_bar = eta * e_tgt + (1 - eta) * e_opt (Eq. 4), then sample with the
   fine-tuned model, deterministic DDIM from a seeded z_T.

Settings (:class:`ImagicConfig`): the paper's Stable Diffusion settings are Adam, 1000 embedding
steps at lr 2e-3, 1500 fine-tuning steps at lr 5e-7 (7 minutes on an A100); the diffusers community
pipeline uses 500 + 1000 steps. tiny-sd has 150 times fewer UNet weights, was trained at lr 6e-4,
and a step costs a 2-core CPU about 0.15 s, so its defaults are 100 + 100 steps at lr 1e-2 and
1e-4: the same pattern (embedding steps few enough to stay near e_tgt; fine-tuning at a small
fraction of the pre-training learning rate) at a tenth of the steps. :meth:`ImagicConfig.paper` gives the
paper's numbers for Stable Diffusion.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .. import checks
from ..finetune import check_image, fit_unet, lora_copy, trainable_copy, use_unet
from ..sampling import decode, denoise, encode, encode_text, initial_latents, to_pil

ETA_RANGE = (0.0, 1.5)


@dataclass
class ImagicConfig:
    """Imagic's hyper-parameters (defaults: scaled for tiny-sd, see the module docstring)."""

    embedding_steps: int = 100  # paper (SD): 1000
    embedding_lr: float = 1e-2  # paper (SD): 2e-3
    finetune: str = "full"  # "full" | "lora" | "none" (the pretrained model: the paper's ablation)
    finetune_steps: int = 100  # paper (SD): 1500
    finetune_lr: float = 1e-4  # paper (SD): 5e-7 (full fine-tuning)
    lora_rank: int = 8
    lora_lr: float = 1e-3  # LoRA learns a low-rank change: a much larger step than full fine-tuning
    batch: int = 2  # (t, eps) draws per optimisation step
    eta: float = 0.7  # the paper's usual choice lies between 0.6 and 0.8
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    seed: int = 0  # for the (t, eps) draws of both optimisations

    def __post_init__(self):
        if self.finetune not in ("full", "lora", "none"):
            raise ValueError(f"finetune must be 'full', 'lora' or 'none', got {self.finetune!r}")
        for name in ("embedding_steps", "finetune_steps", "batch", "num_inference_steps", "lora_rank"):
            if getattr(self, name) < (1 if name in ("batch", "num_inference_steps", "lora_rank") else 0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        check_eta(self.eta)
        checks.guidance(self.guidance_scale)
        checks.steps(self.num_inference_steps)
        for name in ("embedding_lr", "finetune_lr", "lora_lr"):
            if not checks.non_negative(getattr(self, name), name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @classmethod
    def paper(cls, **kw) -> "ImagicConfig":
        """The paper's Stable Diffusion settings (Sec. 4.1 and appendix)."""
        return cls(**{**dict(embedding_steps=1000, embedding_lr=2e-3, finetune_steps=1500, finetune_lr=5e-7,
                             batch=1), **kw})

    def smaller(self, factor: float) -> "ImagicConfig":
        """The same settings with the step counts scaled by ``factor`` (for a quick run)."""
        return replace(self, embedding_steps=max(1, int(self.embedding_steps * factor)),
                       finetune_steps=max(1, int(self.finetune_steps * factor)))


def check_eta(eta: float) -> float:
    lo, hi = ETA_RANGE
    if not (lo <= float(eta) <= hi):
        raise ValueError(f"eta={eta} makes no sense: eta=0 is the optimised embedding (the input image), "
                         f"eta=1 the target text; values in [{lo}, {hi}] are accepted (above 1 extrapolates "
                         "past the target text)")
    return float(eta)


def interpolate(e_tgt: torch.Tensor, e_opt: torch.Tensor, eta: float) -> torch.Tensor:
    """e_bar = eta * e_tgt + (1 - eta) * e_opt (Eq. 4)."""
    eta = check_eta(eta)
    if e_tgt.shape != e_opt.shape:
        raise ValueError(f"embeddings differ in shape: {tuple(e_tgt.shape)} vs {tuple(e_opt.shape)}")
    return eta * e_tgt + (1.0 - eta) * e_opt


@dataclass
class ImagicResult:
    """What Imagic learns from one image: e_tgt, e_opt and the fine-tuned UNet (a copy, or None)."""

    target_prompt: str
    target_embedding: torch.Tensor  # e_tgt, 1 x tokens x width
    optimized_embedding: torch.Tensor  # e_opt
    unet: torch.nn.Module | None = field(repr=False)  # the fine-tuned copy; None for finetune="none"
    config: ImagicConfig
    embedding_losses: list[float] = field(default_factory=list)
    finetune_losses: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def embedding(self, eta: float) -> torch.Tensor:
        return interpolate(self.target_embedding, self.optimized_embedding, eta)


def optimize_embedding(pipe, z0: torch.Tensor, e_tgt: torch.Tensor, steps: int, lr: float, batch: int = 1,
                       generator: torch.Generator | None = None, progress: bool = True) -> tuple[torch.Tensor, list[float]]:
    """Step 1: Adam on the embedding with the model frozen; returns (e_opt, losses)."""
    from ..finetune import diffusion_loss

    e = e_tgt.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([e], lr=lr)
    unet = pipe.unet
    requires = [p.requires_grad for p in unet.parameters()]
    unet.requires_grad_(False)
    losses = []
    try:
        with torch.enable_grad():
            for _ in tqdm(range(steps), desc="Imagic: embedding", disable=not progress, leave=False):
                loss = diffusion_loss(pipe, unet, z0, e.to(z0.dtype), batch, generator)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
    finally:
        for p, r in zip(unet.parameters(), requires):
            p.requires_grad_(r)
    return e.detach().to(e_tgt.dtype), losses


def imagic_fit(pipe, image, target_prompt: str, config: ImagicConfig | None = None,
               progress: bool = True) -> ImagicResult:
    """Steps 1 and 2 on ``image`` (PIL at the model's size) for ``target_prompt``."""
    config = config or ImagicConfig()
    image = check_image(pipe, image)
    if not isinstance(target_prompt, str) or not target_prompt.strip():
        raise ValueError("Imagic needs a non-empty target text")
    g = torch.Generator().manual_seed(config.seed)
    z0 = encode(pipe, image)
    e_tgt = encode_text(pipe, target_prompt)
    t0 = time.perf_counter()
    e_opt, emb_losses = optimize_embedding(pipe, z0, e_tgt, config.embedding_steps, config.embedding_lr,
                                           config.batch, g, progress)
    t1 = time.perf_counter()
    unet, ft_losses = None, []
    if config.finetune != "none" and config.finetune_steps > 0:
        if config.finetune == "full":
            unet, lr = trainable_copy(pipe.unet), config.finetune_lr
        else:
            unet, lr = lora_copy(pipe.unet, rank=config.lora_rank, seed=config.seed), config.lora_lr
        ft_losses = fit_unet(pipe, unet, z0, e_opt, config.finetune_steps, lr, config.batch, g,
                             desc=f"Imagic: {config.finetune} fine-tuning", progress=progress)
        if config.finetune == "full" and pipe.unet.dtype != torch.float32:
            unet = unet.to(pipe.unet.dtype)
        unet.requires_grad_(False)
    t2 = time.perf_counter()
    return ImagicResult(target_prompt, e_tgt, e_opt, unet, config, emb_losses, ft_losses,
                        {"embedding": t1 - t0, "finetune": t2 - t1})


@torch.no_grad()
def sample_embeddings(pipe, cond: torch.Tensor, latents: torch.Tensor, num_inference_steps: int = 50,
                      guidance_scale: float = 7.5, progress: bool = False) -> torch.Tensor:
    """Deterministic DDIM sampling conditioned on text *embeddings* (n x tokens x width) rather than
    prompts; the unconditional embedding is the empty text's. Returns [0, 1] images."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    n = cond.shape[0]
    cond = cond.to(device, dtype)
    uncond = encode_text(pipe, [""] * n).to(dtype) if checks.is_guided(guidance_scale) else None
    z = latents.expand(n, -1, -1, -1).to(device, dtype) if latents.shape[0] == 1 else latents.to(device, dtype)
    z = denoise(pipe, z, cond, uncond, num_inference_steps, guidance_scale, progress=progress)
    return decode(pipe, z.to(pipe.vae.dtype))


def imagic_sample(pipe, result: ImagicResult, etas: float | Sequence[float] | None = None, seed: int = 0,
                  latents: torch.Tensor | None = None, use_finetuned: bool = True,
                  num_inference_steps: int | None = None, guidance_scale: float | None = None,
                  output: str = "pil", progress: bool = False):
    """Step 3: one image per eta, all from the same z_T (``latents``, or drawn from ``seed``).

    ``use_finetuned=False`` samples with the pretrained model (the paper's ablation, Fig. 8).
    """
    cfg = result.config
    etas = [cfg.eta] if etas is None else [etas] if isinstance(etas, (int, float)) else list(etas)
    cond = torch.cat([result.embedding(eta) for eta in etas])
    if latents is None:
        latents = initial_latents(pipe, 1, torch.Generator().manual_seed(seed))
    steps = num_inference_steps or cfg.num_inference_steps
    guidance = cfg.guidance_scale if guidance_scale is None else guidance_scale
    if use_finetuned and result.unet is not None:
        with use_unet(pipe, result.unet):
            images = sample_embeddings(pipe, cond, latents, steps, guidance, progress)
    else:
        images = sample_embeddings(pipe, cond, latents, steps, guidance, progress)
    return images if output == "tensor" else to_pil(images)


def imagic_edit(pipe, image, target_prompt: str, config: ImagicConfig | None = None,
                etas: float | Sequence[float] | None = None, seed: int = 0, progress: bool = True):
    """The whole method: returns (edited images, one per eta; the :class:`ImagicResult` to sample more)."""
    result = imagic_fit(pipe, image, target_prompt, config, progress)
    t = time.perf_counter()
    images = imagic_sample(pipe, result, etas, seed=seed, progress=progress)
    result.seconds["sample"] = time.perf_counter() - t
    return images, result
