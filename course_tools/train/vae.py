"""Train tiny-sd's VAE: a diffusers AutoencoderKL, 64x64x3 images <-> 16x16x4 latents.

Loss: L1 + MSE in pixel space (MSE keeps colours from drifting, which the oracle would read as
another colour) plus a very small KL term, as Stable Diffusion's VAE is nearly an autoencoder.
Trained on random crops first (it is fully convolutional up to its mid-block attention), then on
whole scenes.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from course_lib.models import vae_config

from .common import (HELD_OUT_SEED_OFFSET, MODELS, RUNS, Budget, autocast, cosine_lr, load_checkpoint,
                     refuse_other_settings, save_checkpoint, scene_dataset, to_tensor)




def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image for tensors in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def train_vae(out: Path | None = None, minutes: float = 30, steps: int = 6000, batch: int = 32,
              lr: float = 1e-3, kl_weight: float = 1e-6, crop: int = 32, full_after: float = 0.7,
              n_scenes: int = 40000, seed: int = 0, bf16: bool = True, on_step=None, world: str = "plain",
              init_from: Path | None = None, edge_weight: float = 0.0) -> Path:
    """Train the VAE on ``world``'s scenes. ``init_from`` (a VAE folder, e.g. the shipped
    ``data/models/tiny-sd/vae``): refit that VAE instead of starting afresh, on whole scenes from the
    first step (a refit to a world with new content). ``edge_weight``: weight of :func:`edge_loss`."""
    out = Path(out or RUNS / "vae")
    torch.manual_seed(seed)
    acc = Accelerator()
    vae = (AutoencoderKL.from_pretrained(init_from, torch_dtype=torch.float32) if init_from
           else AutoencoderKL(**vae_config()))
    if init_from:
        full_after = 0.0
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    state = load_checkpoint(out / "ckpt", vae, opt)
    run = {"world": world, "init_from": str(init_from) if init_from else None, "edge_weight": edge_weight,
           "lr": lr, "batch": batch, "steps": steps}
    if state:
        refuse_other_settings(out / "ckpt", {k: str(state.get(k)) for k in ("world", "init_from")},
                              {k: str(run[k]) for k in ("world", "init_from")})
    step, seconds = state.get("step", 0), state.get("seconds_total", 0.0)
    images, _ = scene_dataset(n_scenes, world=world)
    vae, opt = acc.prepare(vae, opt)
    g = torch.Generator().manual_seed(seed + step)
    budget, t0 = Budget(minutes), time.time()
    bar = tqdm(total=steps, initial=step, desc="tiny-sd vae", disable=not acc.is_main_process)
    while step < steps and budget.left():
        full = step >= full_after * steps
        idx = torch.randint(len(images), (batch if not full else batch // 2,), generator=g)
        x = to_tensor(images[idx.numpy()])
        if not full:
            i, j = torch.randint(0, 64 - crop + 1, (2,), generator=g).tolist()
            x = x[:, :, i:i + crop, j:j + crop]
        x = x.to(acc.device)
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, steps, lr, warmup=200)
        with autocast(acc.device, bf16):
            post = acc.unwrap_model(vae).encode(x).latent_dist
            rec = acc.unwrap_model(vae).decode(post.sample()).sample.float()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * post.kl().float().mean()
        if edge_weight:
            loss = loss + edge_weight * edge_loss(rec, x)
        acc.backward(loss)
        acc.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        bar.update(1)
        if on_step is not None:
            on_step(step)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr(rec.detach(), x).mean().item():.1f}")
        if step % 250 == 0:
            save_checkpoint(out / "ckpt", acc.unwrap_model(vae), opt, step,
                            extra={**run, "seconds_total": seconds + time.time() - t0})
    save_checkpoint(out / "ckpt", acc.unwrap_model(vae), opt, step,
                    extra={**run, "seconds_total": seconds + time.time() - t0, "seconds_this_run": time.time() - t0})
    final = acc.unwrap_model(vae)
    final.save_pretrained(out / "final")
    return out / "final"


def edge_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical pixel differences of ``rec`` and ``x``: it grows when
    edges and corners are blurred, which L1 and MSE on the pixels barely notice."""
    return (F.l1_loss(rec.diff(dim=-1), x.diff(dim=-1)) + F.l1_loss(rec.diff(dim=-2), x.diff(dim=-2))) / 2


def decoder_source() -> Path:
    """The VAE a decoder fine-tune starts from: the VAE run's final weights, or the shipped VAE on a
    machine without the runs."""
    run = RUNS / "vae" / "final"
    return run if (run / "config.json").exists() else MODELS / "tiny-sd" / "vae"


def train_decoder(out: Path | None = None, minutes: float = 30, steps: int = 3000, batch: int = 32,
                  lr: float = 3e-4, edge_weight: float = 1.0, latent_noise: float = 0.1,
                  n_scenes: int = 40000, seed: int = 0, bf16: bool = True, on_step=None) -> Path:
    """Fine-tune the VAE's decoder (and ``post_quant_conv``) with the encoder frozen.

    The latent space does not move, so the UNet and everything trained on its latents (Paint by
    Example, the concepts) stay valid; only what latents are drawn as changes. Loss: L1 + MSE on whole
    scenes plus ``edge_weight`` x :func:`edge_loss` (sharp corners tell a hexagon from a circle and a
    star from a cross). The decoder sees the encoder's posterior mean plus Gaussian noise of up to
    ``latent_noise`` latent standard deviations, as the UNet's latents are never exactly on the
    encoder's manifold."""
    out = Path(out or RUNS / "vae-decoder")
    torch.manual_seed(seed)
    acc = Accelerator()
    src = decoder_source()
    vae = AutoencoderKL.from_pretrained(src, torch_dtype=torch.float32)
    vae.requires_grad_(False)
    trained = [vae.decoder, vae.post_quant_conv]
    for m in trained:
        m.requires_grad_(True)
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    state = load_checkpoint(out / "ckpt", vae, opt)
    step, seconds = state.get("step", 0), state.get("seconds_total", 0.0)
    images, _ = scene_dataset(n_scenes)
    vae, opt = acc.prepare(vae, opt)
    model = acc.unwrap_model(vae)
    model.encoder.eval()
    g = torch.Generator().manual_seed(seed + step)
    run = {"source": str(src), "lr": lr, "batch": batch, "edge_weight": edge_weight, "latent_noise": latent_noise,
           "steps": steps}  # what the card reports, in every checkpoint
    budget, t0 = Budget(minutes), time.time()
    bar = tqdm(total=steps, initial=step, desc="tiny-sd vae decoder", disable=not acc.is_main_process)
    while step < steps and budget.left():
        idx = torch.randint(len(images), (batch,), generator=g)
        x = to_tensor(images[idx.numpy()]).to(acc.device)
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, steps, lr, warmup=100)
        with torch.no_grad(), autocast(acc.device, bf16):
            z = model.encode(x).latent_dist.mean.float()
        scale = latent_noise * z.std() * torch.rand(batch, 1, 1, 1, generator=g).to(z.device)
        z = z + scale * torch.randn(z.shape, generator=g).to(z.device)
        with autocast(acc.device, bf16):
            rec = model.decode(z).sample.float()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + edge_weight * edge_loss(rec, x)
        acc.backward(loss)
        acc.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        bar.update(1)
        if on_step is not None:
            on_step(step)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr(rec.detach(), x).mean().item():.1f}")
        if step % 250 == 0:
            save_checkpoint(out / "ckpt", model, opt, step, extra={**run, "seconds_total": seconds + time.time() - t0})
    save_checkpoint(out / "ckpt", model, opt, step, extra={**run, "seconds_total": seconds + time.time() - t0})
    model.save_pretrained(out / "final")
    return out / "final"


@torch.no_grad()
def round_trip(vae: AutoencoderKL, x: torch.Tensor, chunk: int = 50) -> torch.Tensor:
    """Encode images in [-1, 1] to the posterior mean and decode them again, ``chunk`` at a time."""
    return torch.cat([vae.decode(vae.encode(x[i:i + chunk]).latent_dist.mean).sample.float().clamp(-1, 1)
                      for i in range(0, len(x), chunk)])


@torch.no_grad()
def vae_oracle_accuracy(vae: AutoencoderKL, n: int = 120) -> dict:
    """What share of held-out single-object scenes the oracle still reads right (shape, colour and
    background) after a VAE round trip (encode to the posterior mean, decode): the ceiling of any
    generation measure that decodes latents with this VAE. Also per shape (right, total)."""
    from ..bench.base import held_out_scenes, judge_generation

    scenes = held_out_scenes(n)
    x = to_tensor(np.stack([np.asarray(s.image) for s in scenes])).to(vae.device, vae.dtype)
    imgs = ((round_trip(vae, x, chunk=40).permute(0, 2, 3, 1) + 1) / 2).cpu().numpy()
    per: dict[str, list[int]] = {}
    right = 0
    for im, s in zip(imgs, scenes):
        ok = judge_generation(im, s)["all"]
        right += ok
        r = per.setdefault(s.objects[0].shape, [0, 0])
        r[0] += ok
        r[1] += 1
    return {"all": right / n, "by_shape": per}


@torch.no_grad()
def vae_quality(vae: AutoencoderKL, n: int = 200, seed_offset: int = HELD_OUT_SEED_OFFSET,
                world: str = "plain") -> dict:
    """Reconstruction PSNR (dB) and per-channel mean absolute error (0-255) on held-out scenes."""
    images, _ = scene_dataset(n, seed_offset=seed_offset, cache=False, workers=1, world=world)
    x = to_tensor(images).to(vae.device, vae.dtype)
    rec = round_trip(vae, x, chunk=50)
    err = ((rec - x).abs() * 127.5).mean((0, 2, 3))
    return {"psnr": psnr(rec, x).mean().item(), "channel_mae": err.tolist()}
