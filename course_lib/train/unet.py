"""Train tiny-sd's UNet: a diffusers UNet2DConditionModel on 16x16x4 VAE latents of Shapes World,
conditioned on tiny-clip's frozen text tower, with 10% caption dropout for classifier-free guidance.

The VAE and the text encoder are frozen, so both run once: every scene is encoded to a latent and
every caption to its hidden states before the loop (the caption set is finite). The loop then only
runs the UNet: epsilon prediction on Stable Diffusion's noise schedule, min-SNR-5 loss weighting,
AdamW with warm-up and cosine decay, EMA weights (the ones shipped).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from .common import EMA, RUNS, Budget, autocast, cosine_lr, load_checkpoint, save_checkpoint, scene_dataset, to_tensor
from .clip import CLIP_DIM


def unet_config() -> dict:
    return dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
                block_out_channels=[64, 128, 128], cross_attention_dim=CLIP_DIM, attention_head_dim=4,
                norm_num_groups=32)


def noise_scheduler_config() -> dict:
    """Stable Diffusion's training schedule."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, images, batch: int = 200) -> torch.Tensor:
    out = []
    for i in tqdm(range(0, len(images), batch), desc="encode latents"):
        out.append(vae.encode(to_tensor(images[i:i + batch])).latent_dist.mean)
    return torch.cat(out)


@torch.no_grad()
def encode_captions(text_encoder: CLIPTextModel, tok: CLIPTokenizer, captions: list[str], batch: int = 512):
    """Hidden states of every distinct caption (and of "" for guidance); index per sample."""
    uniq = sorted(set(captions) | {""})
    where = {c: i for i, c in enumerate(uniq)}
    embs = []
    for i in tqdm(range(0, len(uniq), batch), desc="encode captions"):
        ids = tok(uniq[i:i + batch], padding="max_length", max_length=tok.model_max_length,
                  truncation=True, return_tensors="pt").input_ids
        embs.append(text_encoder(ids)[0].half())
    return torch.cat(embs), torch.tensor([where[c] for c in captions]), where[""]


def prepare_cache(clip_dir: Path, vae_dir: Path, n_scenes: int, cache: Path) -> dict:
    if cache.exists():
        return load_file(cache)
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    text = CLIPTextModel.from_pretrained(clip_dir).eval()
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    images, captions = scene_dataset(n_scenes)
    lat = encode_dataset(vae, images)
    embs, index, null = encode_captions(text, tok, captions)
    d = {"latents": lat.half().contiguous(), "embeddings": embs.contiguous(), "index": index,
         "null": torch.tensor(null), "scaling": 1.0 / lat.std()}
    save_file(d, cache)
    return d


def train_unet(out: Path | None = None, minutes: float = 100, steps: int = 12000, batch: int = 48,
               lr: float = 5e-4, n_scenes: int = 40000, seed: int = 0, bf16: bool = True,
               cond_dropout: float = 0.1, snr_gamma: float = 5.0, init_from: Path | None = None) -> Path:
    out = Path(out or RUNS / "unet")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    acc = Accelerator()
    shipped = Path(__file__).resolve().parents[2] / "data" / "models"
    clip_dir = RUNS / "clip" / "final" if (RUNS / "clip" / "final").exists() else shipped / "tiny-clip"
    vae_dir = RUNS / "vae" / "final" if (RUNS / "vae" / "final").exists() else shipped / "tiny-sd" / "vae"
    d = prepare_cache(clip_dir, vae_dir, n_scenes, out / "cache.safetensors")
    latents = d["latents"].float() * d["scaling"]
    embs, index, null = d["embeddings"], d["index"], int(d["null"])
    unet = UNet2DConditionModel(**unet_config())
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    ema = EMA(unet, decay=0.999)
    state = load_checkpoint(out / "ckpt", unet, opt, ema)
    if not state and init_from is not None:  # e.g. continue from the shipped fp16 weights on a new machine
        unet.load_state_dict({k: v.float() for k, v in UNet2DConditionModel.from_pretrained(init_from).state_dict().items()})
        ema = EMA(unet, decay=0.999)
        print(f"no checkpoint in {out / 'ckpt'}: starting from the weights in {init_from} with a new optimiser")
    step, prev_seconds = state.get("step", 0), state.get("seconds_total", 0.0)
    sched = DDPMScheduler.from_config(noise_scheduler_config())
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    unet, opt = acc.prepare(unet, opt)
    g = torch.Generator().manual_seed(seed + step)
    budget, t0 = Budget(minutes), time.time()
    bar = tqdm(total=steps, initial=step, desc="tiny-sd unet", disable=not acc.is_main_process)
    avg = None
    while step < steps and budget.left():
        idx = torch.randint(len(latents), (batch,), generator=g)
        x0 = latents[idx]
        e_idx = index[idx].clone()
        e_idx[torch.rand(batch, generator=g) < cond_dropout] = null
        cond = embs[e_idx].float()
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        xt = sched.add_noise(x0, noise, t)
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, steps, lr, warmup=500)
        with autocast(acc.device, bf16):
            pred = unet(xt.to(acc.device), t.to(acc.device), cond.to(acc.device)).sample.float()
        w = (torch.clamp(snr[t], max=snr_gamma) / snr[t]).to(acc.device)  # min-SNR weighting
        loss = (w * F.mse_loss(pred, noise.to(acc.device), reduction="none").mean((1, 2, 3))).mean()
        acc.backward(loss)
        acc.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        ema.update(acc.unwrap_model(unet), step)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{avg:.4f}")
        if step % 500 == 0 or step == steps or not budget.left():
            save_checkpoint(out / "ckpt", acc.unwrap_model(unet), opt, step, ema, extra={
                "scaling_factor": float(d["scaling"]), "batch": batch, "lr": lr, "steps_planned": steps,
                "seconds_total": prev_seconds + time.time() - t0, "threads": torch.get_num_threads()})
    return out / "ckpt"
