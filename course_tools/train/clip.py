"""Train tiny-clip: a transformers CLIPModel (text + vision towers) trained contrastively on Shapes World.

Its text tower becomes tiny-sd's frozen text encoder (as CLIP's is for Stable Diffusion); its vision
tower conditions Paint by Example and scores text alignment in Imagic's curves.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from course_lib.models import CLIP_DIM

from .common import HELD_OUT_SEED_OFFSET, RUNS, Budget, autocast, cosine_lr, load_checkpoint, save_checkpoint, scene_dataset, to_tensor
from .tokenizer import build_tokenizer



def clip_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    text = dict(vocab_size=len(tokenizer), hidden_size=CLIP_DIM, intermediate_size=4 * CLIP_DIM,
                num_hidden_layers=4, num_attention_heads=4,
                max_position_embeddings=tokenizer.model_max_length, hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, projection_dim=CLIP_DIM)
    vision = dict(image_size=64, patch_size=8, num_channels=3, hidden_size=CLIP_DIM,
                  intermediate_size=4 * CLIP_DIM, num_hidden_layers=4, num_attention_heads=4,
                  hidden_act="quick_gelu", projection_dim=CLIP_DIM)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=CLIP_DIM)


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64},
                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
                              do_convert_rgb=True, resample=3)


def train_clip(out: Path | None = None, minutes: float = 12, steps: int = 3000, batch: int = 128,
               lr: float = 5e-4, n_scenes: int = 40000, seed: int = 0, bf16: bool = True) -> Path:
    """Contrastive training within a time budget; resumes from runs/clip/ckpt if present."""
    out = Path(out or RUNS / "clip")
    torch.manual_seed(seed)
    acc = Accelerator()
    tok_dir = build_tokenizer(out / "tokenizer")
    tok = CLIPTokenizer.from_pretrained(tok_dir)
    model = CLIPModel(clip_config(tok))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    state = load_checkpoint(out / "ckpt", model, opt)
    step = state.get("step", 0)
    images, captions = scene_dataset(n_scenes)
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    model, opt = acc.prepare(model, opt)
    g = torch.Generator().manual_seed(seed + step)
    budget, t0 = Budget(minutes), time.time()
    bar = tqdm(total=steps, initial=step, desc="tiny-clip", disable=not acc.is_main_process)
    while step < steps and budget.left():
        idx = torch.randint(len(images), (batch,), generator=g)
        px = to_tensor(images[idx.numpy()]).to(acc.device)
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, steps, lr, warmup=100)
        with autocast(acc.device, bf16):
            outp = model(input_ids=ids[idx].to(acc.device), pixel_values=px, return_loss=True)
        acc.backward(outp.loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{outp.loss.item():.3f}")
        if step % 250 == 0:
            save_checkpoint(out / "ckpt", acc.unwrap_model(model), opt, step)
    save_checkpoint(out / "ckpt", acc.unwrap_model(model), opt, step,
                    extra={"seconds_this_run": time.time() - t0})
    final = acc.unwrap_model(model)
    final.save_pretrained(out / "final")
    tok.save_pretrained(out / "final")
    image_processor().save_pretrained(out / "final")
    return out / "final"


@torch.no_grad()
def clip_retrieval_accuracy(model: CLIPModel, tok: CLIPTokenizer, n: int = 256, seed_offset: int = HELD_OUT_SEED_OFFSET) -> float:
    """Image->caption top-1 accuracy among ``n`` held-out scenes."""
    images, captions = scene_dataset(n, seed_offset=seed_offset, cache=False, workers=1)
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    out = model(input_ids=ids, pixel_values=to_tensor(images))
    return (out.logits_per_image.argmax(1) == torch.arange(n)).float().mean().item()
