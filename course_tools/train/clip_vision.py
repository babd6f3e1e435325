"""Refine tiny-clip's vision tower so that its class token holds the shape of what it sees.

Why: Paint by Example conditions the UNet on the vision tower's class token alone. After contrastive
training against random in-batch captions, that token told colours apart perfectly but shapes only in
part (a linear probe on rendered exemplars read the shape in 61% of cases, the colour in 100%): in a
random batch the colour, the background and the position already pick the right caption, so the
tower never needed the outline. A Paint by Example model trained on it painted the exemplar's colour
in a blob of the wrong shape.

The refinement mirrors the text tower's (:mod:`course_tools.train.clip_text`), with the sides swapped:
the text tower (tiny-sd's text encoder) and its projection stay frozen, and the vision tower is trained
with two terms:

- the contrastive loss with **hard negative captions**: each image must score its own caption above
  the same caption with one shape word, one colour word, or two objects' colours swapped, as well as
  above the other captions of the batch;
- an **attribute read-out** term: two linear heads (discarded afterwards) must recover from the
  class token which shapes and which colours the caption names (multi-label), so that the token the
  Paint by Example mapper reads carries both, not only what the contrastive loss happens to need.

``python -m course_tools.train clip-vision`` writes ``runs/clip-vision/final`` (a full CLIPModel: the
refined vision tower beside the unchanged text tower); ``assemble`` ships it as tiny-clip.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTokenizer

from course_lib.shapes.vocab import COLOR_NAMES, SHAPES
from .clip import image_processor
from .clip_text import hard_negative_wins, hard_negatives
from .common import RUNS, Budget, cosine_lr, load_checkpoint, save_checkpoint, scene_dataset, to_tensor


def attribute_targets(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-hot (N, 6) of the shape words and (N, 6) of the colour words each caption names."""
    shapes = torch.zeros(len(captions), len(SHAPES))
    colors = torch.zeros(len(captions), len(COLOR_NAMES))
    for i, c in enumerate(captions):
        for w in c.replace(",", " ").split():
            if w in SHAPES:
                shapes[i, SHAPES.index(w)] = 1
            elif w in COLOR_NAMES:
                colors[i, COLOR_NAMES.index(w)] = 1
    return shapes, colors


def vision_source() -> Path:
    """The CLIP model tiny-clip is written from: the refined vision tower (``clip-vision``) when it
    exists, else the text-refined model (:func:`course_tools.train.unet.text_source`)."""
    from .unet import text_source
    d = RUNS / "clip-vision" / "final"
    return d if d.exists() else text_source()


@torch.no_grad()
def _text_embeddings(model: CLIPModel, tok: CLIPTokenizer, texts: list[str], batch: int = 1000) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt")
        e = model.text_projection(model.text_model(input_ids=enc.input_ids,
                                                   attention_mask=enc.attention_mask).pooler_output)
        out.append(F.normalize(e.float(), dim=-1))
    return torch.cat(out)


def refine_vision(out: Path | None = None, minutes: float | None = 15, steps: int = 600, batch: int = 128,
                  lr: float = 3e-4, n_scenes: int = 40000, seed: int = 0, attribute_weight: float = 1.0,
                  progress: bool = True) -> Path:
    """Train the vision tower (text frozen) with hard negative captions and the attribute read-out."""
    from .unet import text_source
    out = Path(out or RUNS / "clip-vision")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    src = text_source()
    model = CLIPModel.from_pretrained(src, torch_dtype=torch.float32)
    tok = CLIPTokenizer.from_pretrained(src)
    images, captions = scene_dataset(n_scenes)
    for p in [*model.text_model.parameters(), *model.text_projection.parameters(), model.logit_scale]:
        p.requires_grad_(False)
    model.text_model.eval()
    shape_t, color_t = attribute_targets(captions)
    hidden = model.config.vision_config.hidden_size
    heads = torch.nn.ModuleDict({"shape": torch.nn.Linear(hidden, len(SHAPES)),
                                 "color": torch.nn.Linear(hidden, len(COLOR_NAMES))})

    class Trained(torch.nn.Module):  # what the optimiser and the checkpoint hold
        def __init__(self):
            super().__init__()
            self.vision_model, self.visual_projection, self.heads = model.vision_model, model.visual_projection, heads

    trained = Trained()
    opt = torch.optim.AdamW(trained.parameters(), lr=lr, weight_decay=0.01)
    state = load_checkpoint(out / "ckpt", trained, opt)
    step = state.get("step", 0)
    g = torch.Generator().manual_seed(seed + step)
    budget, t0 = Budget(minutes), time.time()
    bar = tqdm(total=steps, initial=step, desc="tiny-clip vision", disable=not progress)
    scale = model.logit_scale.exp().clamp(max=100).item()
    model.vision_model.train()
    while step < steps and budget.left():
        idx = torch.randint(len(captions), (batch,), generator=g).tolist()
        pos = [captions[i] for i in idx]
        negs, owner = hard_negatives(pos, rng)
        txt = _text_embeddings(model, tok, pos + negs)
        vis = model.vision_model(pixel_values=to_tensor(images[idx]))
        pooled = vis.pooler_output  # the class token, what Paint by Example's mapper reads
        img = F.normalize(model.visual_projection(pooled), dim=-1)
        logits = scale * img @ txt.T  # each image against every caption of the batch and all negatives
        target = torch.arange(batch)
        loss_i = F.cross_entropy(logits, target)
        loss_t = F.cross_entropy(logits[:, :batch].T, target)
        loss_attr = (F.binary_cross_entropy_with_logits(heads["shape"](pooled), shape_t[idx])
                     + F.binary_cross_entropy_with_logits(heads["color"](pooled), color_t[idx]))
        loss = (loss_i + loss_t) / 2 + attribute_weight * loss_attr
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, steps, lr, warmup=50)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        bar.update(1)
        if step % 10 == 0 and negs:
            hard = hard_negative_wins(logits, owner)
            bar.set_postfix(clip=f"{loss_i.item():.3f}", attr=f"{loss_attr.item():.3f}", hard=f"{hard:.2f}")
        if step % 250 == 0 or step == steps or not budget.left():
            save_checkpoint(out / "ckpt", trained, opt, step,
                            extra={"seconds_this_run": time.time() - t0,
                                   "seconds_total": state.get("seconds_total", 0.0) + time.time() - t0,
                                   "batch": batch, "lr": lr, "text": str(src)})
    bar.close()
    model.eval()
    model.save_pretrained(out / "final")
    tok.save_pretrained(out / "final")
    image_processor().save_pretrained(out / "final")
    return out / "final"


@torch.no_grad()
def class_token_probe(model: CLIPModel, n: int = 720, seed: int = 0) -> dict[str, float]:
    """Held-out accuracy of linear probes (logistic regression) that read an exemplar's shape and its
    colour from the vision tower's class token: ``n`` rendered single objects (6 shapes x 6 colours,
    medium or large, rotated up to 45 degrees, on white), two thirds to fit, one third to score.
    Chance is 1/6 for both. This is the token Paint by Example conditions on."""
    from sklearn.linear_model import LogisticRegression

    from course_lib.shapes import single_object
    rng = np.random.default_rng(seed)
    refs = [single_object(SHAPES[k % 6], COLOR_NAMES[(k // 6) % 6], "white",
                          size=("medium", "large")[rng.integers(2)], rotation=float(rng.uniform(-45, 45)))
            for k in range(n)]
    px = to_tensor(np.stack([np.asarray(r.image) for r in refs]))
    dtype = next(model.parameters()).dtype
    X = model.vision_model(pixel_values=px.to(dtype)).pooler_output.float().numpy()
    split = rng.permutation(n)
    fit, held = split[: 2 * n // 3], split[2 * n // 3:]
    acc = {}
    for what in ("shape", "color"):
        y = np.array([getattr(r.spec.objects[0], what) for r in refs])
        acc[what] = float(LogisticRegression(max_iter=3000).fit(X[fit], y[fit]).score(X[held], y[held]))
    return acc
