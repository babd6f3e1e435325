"""Train tiny-sd's UNet: a diffusers UNet2DConditionModel on 16x16x4 VAE latents of Shapes World,
conditioned on tiny-clip's frozen text tower, with 10% caption dropout for classifier-free guidance.

In stage 1 the VAE and the text encoder are frozen, so both run once: every scene is encoded to a latent and
every caption to its hidden states before the loop (the caption set is finite). The loop then only
runs the UNet: epsilon prediction on Stable Diffusion's noise schedule, min-SNR-5 loss weighting,
AdamW with warm-up and cosine decay, EMA weights (the ones shipped).

``train_text=True`` (``--train-text``) also fine-tunes the text encoder, initialised from
tiny-clip's text tower, with the UNet: the contrastively trained tower maps shape words to nearly
the same hidden states (cosine 0.99 between "triangle" and "star" in the same caption, measured by
:func:`word_similarity`), which leaves the UNet almost no signal about shape. The captions then go
through the text encoder in the loop (it is small); the checkpoint holds both models.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from .common import (EMA, MODELS, RUNS, Budget, autocast, check_oversample, cosine_lr, load_checkpoint, min_snr_weights,
                     oversample_setting, record_beside, refuse_other_settings, save_checkpoint, scene_dataset,
                     shipped_records, to_tensor)
from course_lib.models import noise_scheduler_config, unet_config  # noqa: F401 (the stages import them from here too)






@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, images, batch: int = 200) -> torch.Tensor:
    """Posterior means of ``images`` (on the VAE's device; returned on the CPU)."""
    out = []
    for i in tqdm(range(0, len(images), batch), desc="encode latents"):
        out.append(vae.encode(to_tensor(images[i:i + batch]).to(vae.device)).latent_dist.mean.cpu())
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


class UNetAndText(torch.nn.Module):
    """The UNet and the text encoder trained together (one state dict: ``unet.*``, ``text.*``)."""

    def __init__(self, unet: UNet2DConditionModel, text: CLIPTextModel):
        super().__init__()
        self.unet, self.text = unet, text

    def forward(self, sample, timestep, input_ids):
        return self.unet(sample, timestep, self.text(input_ids)[0])


@torch.no_grad()
def word_similarity(text_encoder: CLIPTextModel, tok: CLIPTokenizer, words: list[str],
                    template: str = "a red {} on a white background") -> torch.Tensor:
    """Cosine similarity of the hidden states at the position of each word in the same caption."""
    ids = tok([template.format(w) for w in words], padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    pos = tok(template.split("{}")[0].strip(), add_special_tokens=False, return_tensors="pt").input_ids.shape[1] + 1
    h = F.normalize(text_encoder(ids)[0][:, pos].float(), dim=-1)
    return h @ h.T


def text_fingerprint(text_encoder: CLIPTextModel) -> torch.Tensor:
    """A cheap signature of the text encoder's weights, to notice when cached hidden states are stale."""
    return torch.stack([p.detach().float().abs().sum() for p in text_encoder.parameters()]).double().sum().reshape(1)


def prepare_cache(clip_dir: Path, vae_dir: Path, n_scenes: int, cache: Path, world: str = "plain",
                  device: str | torch.device = "cpu") -> dict:
    """Latents of every scene and hidden states of every distinct caption, computed once (the VAE runs
    on ``device``). When the text encoder has changed since the cache was written (e.g. after
    ``clip-text``), only the captions are encoded again."""
    text = CLIPTextModel.from_pretrained(clip_dir, torch_dtype=torch.float32).eval()
    fp = text_fingerprint(text)
    d = load_file(cache) if cache.exists() else {}
    if d and "text_fingerprint" in d and torch.allclose(d["text_fingerprint"], fp, rtol=1e-9):
        return d
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    images, captions = scene_dataset(n_scenes, world=world)
    if "latents" not in d:
        vae = AutoencoderKL.from_pretrained(vae_dir).to(device).eval()
        lat = encode_dataset(vae, images)
        d = {"latents": lat.half().contiguous(), "scaling": 1.0 / lat.std()}
    else:
        print(f"{cache}: the text encoder in {clip_dir} changed; encoding the captions again")
    embs, index, null = encode_captions(text, tok, captions)
    d.update({"embeddings": embs.contiguous(), "index": index, "null": torch.tensor(null), "text_fingerprint": fp})
    save_file(d, cache)
    return d


def text_source() -> Path:
    """The text tower tiny-sd is conditioned on: the refined one (``clip-text``) when it exists."""
    for d in (RUNS / "clip-text" / "final", RUNS / "clip" / "final"):
        if d.exists():
            return d
    return MODELS / "tiny-clip"


def text_record() -> str:
    """Where the text tower a UNet run is conditioned on came from, for its record: the run folder, or,
    for the shipped tiny-clip, the folder its text tower was trained in (from the shipped UNet's record)."""
    src = text_source()
    if RUNS in src.parents:
        return str(src)
    return shipped_records().get("unet", {}).get("text") or str(src)


def scene_weights(captions, oversample: dict[str, float]) -> torch.Tensor:
    """One drawing weight per scene: the largest ``oversample`` factor among the shape words its
    caption names (1 for a caption naming none of them)."""
    check_oversample(oversample)
    return torch.tensor([max([oversample.get(w, 1.0) for w in re.findall(r"[a-z]+", c.lower())] or [1.0])
                         for c in captions],
                        dtype=torch.float64)


def earlier_runs(state: dict) -> list[dict]:
    """The runs a UNet run started from (``--init-from``), oldest first: dicts with ``from``, ``step``,
    ``seconds_total`` and ``text`` (the text tower it was conditioned on, when recorded). Follows the
    chain recorded in ``state["init"]``, and the ``state.json`` beside an ``init["from"]`` file where a
    record has no chain of its own."""
    chain, init = [], state.get("init")
    while init and (init.get("step") or init.get("from")) and len(chain) < 100:  # 100: a record naming itself
        if not init.get("step") or "init" not in init or "text" not in init:
            prior = record_beside(init.get("from", ""))
            init = {**init, "step": init.get("step") or prior.get("step"),
                    "seconds_total": init.get("seconds_total") or prior.get("seconds_total"),
                    "init": init.get("init") or prior.get("init"), "text": init.get("text") or prior.get("text")}
            if not init["step"]:
                break
        chain.append(init)
        init = init.get("init")
    return chain[::-1]


def train_unet(out: Path | None = None, minutes: float = 100, steps: int = 12000, batch: int = 48,
               lr: float = 5e-4, n_scenes: int = 40000, seed: int = 0, bf16: bool = True,
               cond_dropout: float = 0.1, snr_gamma: float = 5.0, init_from: Path | None = None,
               train_text: bool = False, text_lr_scale: float = 0.5,
               oversample: dict[str, float] | None = None, on_step=None, world: str = "plain") -> Path:
    """``world``: the scenes' free content (:data:`course_lib.shapes.scenery.WORLDS`); the latents come
    from runs/vae/final when that run exists (a VAE refit to the world), else the shipped VAE.
    ``oversample``: shape word -> how many times as often scenes whose caption names that shape
    are drawn (e.g. ``{"hexagon": 2}`` when hexagons are the shape the model gets wrong most often);
    a scene naming several takes the largest. None draws every scene equally often."""
    if oversample:
        check_oversample(oversample)  # before minutes of encoding, not after
    out = Path(out or RUNS / ("unet-text" if train_text else "unet"))
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    acc = Accelerator()
    clip_dir = text_source()
    vae_dir = RUNS / "vae" / "final" if (RUNS / "vae" / "final").exists() else MODELS / "tiny-sd" / "vae"
    cache_dir = RUNS / "unet" if train_text else out
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / ("cache.safetensors" if world == "plain" else f"cache-{world}.safetensors")  # one per world
    d = prepare_cache(clip_dir, vae_dir, n_scenes, cache, world, acc.device)
    latents = d["latents"].float() * d["scaling"]
    embs, index, null = d["embeddings"], d["index"], int(d["null"])
    draw = scene_weights(scene_dataset(n_scenes, world=world)[1], oversample) if oversample else None
    unet = UNet2DConditionModel(**unet_config())
    text = ids = None
    if train_text:  # the caption ids in the cache's order (sorted distinct captions and "")
        tok = CLIPTokenizer.from_pretrained(clip_dir)
        uniq = sorted(set(scene_dataset(n_scenes, world=world)[1]) | {""})
        ids = tok(uniq, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        text = CLIPTextModel.from_pretrained(clip_dir, torch_dtype=torch.float32)
        model = UNetAndText(unet, text)
        groups = [{"params": unet.parameters(), "scale": 1.0}, {"params": text.parameters(), "scale": text_lr_scale}]
    else:
        model = unet
        groups = [{"params": unet.parameters(), "scale": 1.0}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)
    ema = EMA(model, decay=0.999)
    state = load_checkpoint(out / "ckpt", model, opt, ema)
    if state:  # the card reports one oversampling and one world for the run
        refuse_other_settings(out / "ckpt", {"oversample": oversample_setting(state.get("oversample")),
                                             "world": f"--world {state.get('world') or 'plain'}"},
                              {"oversample": oversample_setting(oversample), "world": f"--world {world}"})
    else:
        start = init_from
        if start is None and train_text and (RUNS / "unet" / "ckpt" / "ema.safetensors").exists():
            start = RUNS / "unet" / "ckpt" / "ema.safetensors"  # continue from the frozen-text run
        if start is not None:
            start = Path(start)
            w = (load_file(start) if start.suffix == ".safetensors"
                 else UNet2DConditionModel.from_pretrained(start).state_dict())
            unet.load_state_dict({k: v.float() for k, v in w.items()})
            ema = EMA(model, decay=0.999)
            prior = record_beside(start)  # the run those weights came from, for the model card
            state = {"init": {"from": str(start), "step": prior.get("step"),
                              "seconds_total": prior.get("seconds_total"), "text": prior.get("text"),
                              "init": prior.get("init")}}  # the whole chain of earlier runs
            print(f"no checkpoint in {out / 'ckpt'}: starting the UNet from {start} with a new optimiser")
    step, prev_seconds = state.get("step", 0), state.get("seconds_total", 0.0)
    sched = DDPMScheduler.from_config(noise_scheduler_config())
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    model, opt = acc.prepare(model, opt)
    g = torch.Generator().manual_seed(seed + step)
    budget, t0 = Budget(minutes), time.time()
    bar = tqdm(total=steps, initial=step, desc="tiny-sd unet", disable=not acc.is_main_process)
    avg = None
    while step < steps and budget.left():
        idx = (torch.randint(len(latents), (batch,), generator=g) if draw is None
               else torch.multinomial(draw, batch, replacement=True, generator=g))
        x0 = latents[idx]
        e_idx = index[idx].clone()
        e_idx[torch.rand(batch, generator=g) < cond_dropout] = null
        cond = None if train_text else embs[e_idx].float()
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        xt = sched.add_noise(x0, noise, t)
        for pg in opt.param_groups:
            pg["lr"] = pg["scale"] * cosine_lr(step, steps, lr, warmup=500)
        with autocast(acc.device, bf16):
            c = ids[e_idx] if train_text else cond  # caption ids, or the cached hidden states
            pred = model(xt.to(acc.device), t.to(acc.device), c.to(acc.device)).sample.float()
        w = min_snr_weights(snr, t, snr_gamma).to(acc.device)
        loss = (w * F.mse_loss(pred, noise.to(acc.device), reduction="none").mean((1, 2, 3))).mean()
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        ema.update(acc.unwrap_model(model), step)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        bar.update(1)
        if on_step is not None:
            on_step(step)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{avg:.4f}")
        if step % 500 == 0 or step == steps or not budget.left():
            save_checkpoint(out / "ckpt", acc.unwrap_model(model), opt, step, ema, extra={
                "scaling_factor": float(d["scaling"]), "batch": batch, "lr": lr, "steps_planned": steps,
                "train_text": train_text, "text_lr_scale": text_lr_scale if train_text else None,
                "seconds_total": prev_seconds + time.time() - t0, "threads": torch.get_num_threads(),
                "text": None if train_text else text_record(), "init": state.get("init"),
                "oversample": oversample or None, "world": world, "vae": str(vae_dir)})
    return out / "ckpt"
