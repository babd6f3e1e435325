"""Train tiny-sd's VAE: a diffusers AutoencoderKL, 64x64x3 images <-> 16x16x4 latents.

Loss: L1 + MSE in pixel space (MSE keeps colours from drifting, which the oracle would read as
another colour) plus a very small KL term, as Stable Diffusion's VAE is nearly an autoencoder.
Trained on random crops first (it is fully convolutional up to its mid-block attention), then on
whole scenes.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from .common import HELD_OUT_SEED_OFFSET, RUNS, Budget, autocast, cosine_lr, load_checkpoint, save_checkpoint, scene_dataset, to_tensor


def vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
                down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                block_out_channels=[32, 64, 128], layers_per_block=1, norm_num_groups=16)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image for tensors in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def train_vae(out: Path | None = None, minutes: float = 30, steps: int = 6000, batch: int = 32,
              lr: float = 1e-3, kl_weight: float = 1e-6, crop: int = 32, full_after: float = 0.7,
              n_scenes: int = 40000, seed: int = 0, bf16: bool = True, on_step=None) -> Path:
    out = Path(out or RUNS / "vae")
    torch.manual_seed(seed)
    acc = Accelerator()
    vae = AutoencoderKL(**vae_config())
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    state = load_checkpoint(out / "ckpt", vae, opt)
    step = state.get("step", 0)
    images, _ = scene_dataset(n_scenes)
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
            save_checkpoint(out / "ckpt", acc.unwrap_model(vae), opt, step)
    save_checkpoint(out / "ckpt", acc.unwrap_model(vae), opt, step, extra={"seconds_this_run": time.time() - t0})
    final = acc.unwrap_model(vae)
    final.save_pretrained(out / "final")
    return out / "final"


@torch.no_grad()
def vae_quality(vae: AutoencoderKL, n: int = 200, seed_offset: int = HELD_OUT_SEED_OFFSET) -> dict:
    """Reconstruction PSNR (dB) and per-channel mean absolute error (0-255) on held-out scenes."""
    images, _ = scene_dataset(n, seed_offset=seed_offset, cache=False, workers=1)
    x = to_tensor(images)
    recs = []
    for i in range(0, n, 50):
        recs.append(vae.decode(vae.encode(x[i:i + 50]).latent_dist.mode()).sample.clamp(-1, 1))
    rec = torch.cat(recs)
    err = ((rec - x).abs() * 127.5).mean((0, 2, 3))
    return {"psnr": psnr(rec, x).mean().item(), "channel_mae": err.tolist()}
