"""Refine tiny-clip's text tower so that every word keeps its identity in the hidden states.

Why: tiny-clip is trained contrastively with random in-batch negatives, and the loss only reads the
pooled end-of-text state. Colour, background and position already tell captions apart in a random
batch, so the tower never needed the shape: in the hidden states the UNet reads, "triangle" and
"star" had cosine similarity 0.99 in the same caption (:func:`course_tools.train.unet.word_similarity`),
and tiny-sd drew the same amoeba-like blob for several shape words.

The refinement keeps the vision tower frozen (Paint by Example and the CLIP score use it as it is)
and trains the text tower with three terms:

- the contrastive loss against the frozen image embeddings, with **hard negatives**: each image's
  caption with one shape word, one colour word, or the colours of two objects swapped;
- a **token-identity** term: a linear read-out (discarded afterwards) must recover each caption
  token from the final hidden state at its position, which is what the UNet's cross-attention reads.

``python -m course_tools.train clip-text`` writes ``runs/clip-text/final`` (a full CLIPModel, the new
text tower with the old vision tower); the UNet stage and ``assemble`` take it when it exists.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTokenizer

from course_lib.shapes.vocab import COLOR_NAMES, SHAPES
from .clip import image_processor
from .common import MODELS, RUNS, Budget, cosine_lr, load_checkpoint, save_checkpoint, scene_dataset, to_tensor

NEGATIVE_KINDS = ("shape", "color", "binding")


def hard_negative(caption: str, kind: str, rng: random.Random) -> str:
    """The caption with one attribute changed: a shape word, a colour word, or (``binding``) the
    colour words of two objects exchanged. Returns the caption unchanged when it has nothing to swap
    (the caller drops such pairs)."""
    words = caption.replace(",", " ,").split()
    if kind == "binding":
        where = [i for i, w in enumerate(words) if w in COLOR_NAMES]
        if len(where) < 2 or words[where[0]] == words[where[1]]:
            return caption
        i, j = rng.sample(where, 2)
        words[i], words[j] = words[j], words[i]
    else:
        vocab = SHAPES if kind == "shape" else COLOR_NAMES
        where = [i for i, w in enumerate(words) if w in vocab]
        if not where:
            return caption
        i = rng.choice(where)
        words[i] = rng.choice([w for w in vocab if w != words[i]])
    return " ".join(words).replace(" ,", ",")


def hard_negatives(captions: list[str], rng: random.Random) -> tuple[list[str], list[int]]:
    """Every caption's hard negatives (one per kind in :data:`NEGATIVE_KINDS` that changes it) and, for
    each, the index of the caption it was made from."""
    negs, owner = [], []
    for b, c in enumerate(captions):
        for kind in NEGATIVE_KINDS:
            n = hard_negative(c, kind, rng)
            if n != c:
                negs.append(n)
                owner.append(b)
    return negs, owner


def hard_negative_wins(logits: torch.Tensor, owner: list[int]) -> torch.Tensor:
    """Share of hard negatives scored below their own caption, for ``logits`` of shape (batch, batch +
    negatives): the batch's captions first, then the negatives of :func:`hard_negatives`."""
    o = torch.tensor(owner)
    batch = logits.shape[1] - len(owner)
    return (logits[o, batch + torch.arange(len(owner))] < logits[o, o]).float().mean()


@torch.no_grad()
def image_embeddings(model: CLIPModel, images, batch: int = 500) -> torch.Tensor:
    out = []
    for i in tqdm(range(0, len(images), batch), desc="image embeddings"):
        e = model.get_image_features(pixel_values=to_tensor(images[i:i + batch]))
        e = getattr(e, "pooler_output", e)  # transformers 5 returns an output object
        out.append(F.normalize(e.float(), dim=-1))
    return torch.cat(out)


def refine_text(out: Path | None = None, minutes: float = 15, steps: int = 600, batch: int = 128,
                lr: float = 3e-4, n_scenes: int = 40000, seed: int = 0, identity_weight: float = 1.0) -> Path:
    """Train the text tower (vision frozen) with hard negatives and the token-identity term."""
    out = Path(out or RUNS / "clip-text")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    src = RUNS / "clip" / "final"
    if not src.exists():
        src = MODELS / "tiny-clip"
    model = CLIPModel.from_pretrained(src, torch_dtype=torch.float32)
    tok = CLIPTokenizer.from_pretrained(src)
    images, captions = scene_dataset(n_scenes)
    emb_path = out / "image_embeddings.safetensors"
    if emb_path.exists():
        img_emb = load_file(emb_path)["e"]
    else:
        img_emb = image_embeddings(model.eval(), images)
        save_file({"e": img_emb.contiguous()}, emb_path)
    for p in model.vision_model.parameters():
        p.requires_grad_(False)
    for p in model.visual_projection.parameters():
        p.requires_grad_(False)
    head = torch.nn.Linear(model.config.text_config.hidden_size, len(tok))

    class Trained(torch.nn.Module):  # what the optimiser and the checkpoint hold
        def __init__(self):
            super().__init__()
            self.text_model, self.text_projection, self.head = model.text_model, model.text_projection, head
            self.logit_scale = model.logit_scale

    trained = Trained()
    opt = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    state = load_checkpoint(out / "ckpt", trained, opt)
    step = state.get("step", 0)
    g = torch.Generator().manual_seed(seed + step)
    budget, t0 = Budget(minutes), time.time()
    bar = tqdm(total=steps, initial=step, desc="tiny-clip text")

    def encode(texts):
        return tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt")

    model.train()
    while step < steps and budget.left():
        idx = torch.randint(len(captions), (batch,), generator=g).tolist()
        pos = [captions[i] for i in idx]
        negs, owner = hard_negatives(pos, rng)
        enc = encode(pos + negs)
        hid = model.text_model(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
        txt = F.normalize(model.text_projection(hid.pooler_output), dim=-1)
        img = img_emb[idx]
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ txt.T  # each image against every caption, its own and all negatives
        target = torch.arange(batch)
        loss_i = F.cross_entropy(logits, target)
        loss_t = F.cross_entropy(logits[:, :batch].T, target)
        mask = enc.attention_mask.bool()
        mask[:, 0] = False  # the start token carries no word
        ids = enc.input_ids[mask]
        loss_id = F.cross_entropy(head(hid.last_hidden_state[mask]), ids)
        loss = (loss_i + loss_t) / 2 + identity_weight * loss_id
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, steps, lr, warmup=50)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        step += 1
        bar.update(1)
        if step % 10 == 0:
            hard = hard_negative_wins(logits, owner)
            bar.set_postfix(clip=f"{loss_i.item():.3f}", ident=f"{loss_id.item():.3f}", hard=f"{hard:.2f}")
        if step % 250 == 0 or step == steps or not budget.left():
            save_checkpoint(out / "ckpt", trained, opt, step,
                            extra={"seconds_this_run": time.time() - t0, "batch": batch, "lr": lr})
    model.eval()
    model.save_pretrained(out / "final")
    tok.save_pretrained(out / "final")
    image_processor().save_pretrained(out / "final")
    return out / "final"
