"""Refine a copy of tiny-clip's vision tower on object crops, for Paint by Example's condition:
``python -m course_tools.train pbe-tower``.

Why (measured by :func:`shape_axes`): Paint by Example conditions on the class token alone, and the
tiny-clip tower's class token hardly holds the outline of what it sees. On the 36 canonical exemplars
(6 shapes x 6 colours, cropped to their box as in training), the shape part of the token (each
colour's mean removed) lies on one axis, round (circle, square, hexagon) against pointed (triangle,
star, cross): a star and a cross are as alike as two images of one star. tiny-clip's
contrastive task on Shapes World captions is solved by colour, background and position, so it never
needed the outline; the paper's CLIP ViT-L/14, pretrained on web images, does know outlines. A Paint
by Example model on the tiny-clip tower paints the exemplar's colour in a blob of the wrong shape.

This stage gives the tower what such pretraining would. Linear read-out heads (shape, colour, pattern;
discarded afterwards) on the class token (``pooler_output``, what Paint by Example's mapper reads) learn,
with the tower, from object box crops of training scenes, drawn and augmented as Paint by Example's
references are (:func:`~course_lib.methods.pbe.augment_reference`) and prepared by the same image processor.
Paint by Example then freezes the refined tower, as the paper freezes CLIP; tiny-clip itself (tiny-sd's
text tower, the image-text scores) is not changed. Writes ``runs/pbe-tower/tower.safetensors`` (the
vision tower's state) and ``tower.json`` (the training record and the probes before and after).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from course_lib.methods.pbe import augment_reference, boxable, object_box
from course_lib.models import load_clip
from course_lib.shapes import vocab as V
from course_lib.shapes.world import make_scene
from .common import RUNS, Budget, cosine_lr, load_checkpoint, save_checkpoint

LABELS = {"shape": V.SHAPES, "color": V.COLOR_NAMES, "pattern": V.PATTERNS}
EVAL_SEED = 10_000_000  # evaluation scenes, as everywhere in the course
TOWER = RUNS / "pbe-tower"


def object_crops(seeds, min_side: int = 8) -> tuple[list[Image.Image], dict[str, np.ndarray]]:
    """Box crops (grown 2 px, as Paint by Example's references) of every object of the scenes whose
    visible box has both sides >= ``min_side``, and their labels (indices into :data:`LABELS`)."""
    crops, labels = [], {k: [] for k in LABELS}
    for seed in seeds:
        s = make_scene(seed)
        for o in s.objects:
            if not boxable(o, min_side):
                continue
            crops.append(s.image.crop(object_box(o.bbox, s.size)))
            for k, names in LABELS.items():
                labels[k].append(names.index(getattr(o, k)))
    return crops, {k: np.array(v) for k, v in labels.items()}


def _pixels(proc, crops, rng: np.random.Generator | None) -> torch.Tensor:
    """The crops as the tower sees them: augmented (with ``rng``) or squeezed whole to 64x64."""
    ims = [augment_reference(c, rng) if rng is not None else c.resize((64, 64), Image.BICUBIC) for c in crops]
    return proc(images=ims, return_tensors="pt").pixel_values


@torch.no_grad()
def class_tokens(tower, proc, crops, batch: int = 256) -> np.ndarray:
    """The class token (``pooler_output``) of each crop, squeezed whole to the tower's input."""
    tower.eval()
    return torch.cat([tower(pixel_values=_pixels(proc, crops[i:i + batch], None)).pooler_output
                      for i in range(0, len(crops), batch)]).float().numpy()


def crop_probe(tower, proc, n_scenes: int = 600) -> dict[str, float]:
    """Held-out accuracy of linear probes (logistic regression) reading shape, colour and pattern from
    the class token of object crops of evaluation scenes (two thirds fit, one third scored)."""
    from sklearn.linear_model import LogisticRegression
    crops, labels = object_crops(range(EVAL_SEED, EVAL_SEED + n_scenes))
    X = class_tokens(tower, proc, crops)
    split = np.random.default_rng(0).permutation(len(X))
    fit, held = split[: 2 * len(X) // 3], split[2 * len(X) // 3:]
    return {k: float(LogisticRegression(max_iter=3000).fit(X[fit], y[fit]).score(X[held], y[held]))
            for k, y in labels.items()}


def shape_axes(tower, proc) -> float:
    """How one-dimensional the class token's shape part is on the 36 canonical exemplars (large, on
    white, cropped to their box): the share of the shape part's variance (each colour's mean
    removed) along its first principal axis. 1/5 when the 6 shapes are equally apart, 1 when they lie
    on a line."""
    from course_lib.shapes.world import single_object
    crops = []
    for c in V.COLOR_NAMES:
        for sh in V.SHAPES:
            ex = single_object(sh, c, "white", size="large")
            crops.append(ex.image.crop(object_box(ex.objects[0].bbox, ex.size)))
    X = class_tokens(tower, proc, crops).reshape(len(V.COLOR_NAMES), len(V.SHAPES), -1)
    X = (X - X.mean(1, keepdims=True)).reshape(-1, X.shape[-1])
    s = np.linalg.svd(X, compute_uv=False) ** 2
    return float(s[0] / s.sum())


def load_tower(path: Path | None = None):
    """tiny-clip's vision tower with the refined weights of ``path`` (default: this stage's output)."""
    clip, _, proc = load_clip("tiny-clip", device="cpu", dtype=torch.float32)
    tower = clip.vision_model
    tower.load_state_dict(load_file(str(path or TOWER / "tower.safetensors")))
    return tower, proc


def refine_tower(out: Path | None = None, minutes: float | None = 40, steps: int = 3000, batch: int = 128,
                 lr: float = 3e-4, n_scenes: int = 20000, seed: int = 0, progress: bool = True,
                 probe_scenes: int = 600) -> Path:
    """Train the vision tower and the read-out heads (cross-entropy, one head per label) on augmented
    crops; writes the tower's state and its record (with the probes before and after, on the crops of
    ``probe_scenes`` evaluation scenes) to ``out``."""
    out = Path(out or TOWER)
    torch.manual_seed(seed)
    clip, _, proc = load_clip("tiny-clip", device="cpu", dtype=torch.float32)
    tower = clip.vision_model
    hidden = tower.config.hidden_size
    before = None if (out / "ckpt" / "state.json").exists() else {
        **crop_probe(tower, proc, probe_scenes), "shape_axis": shape_axes(tower, proc)}
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(hidden, len(v)) for k, v in LABELS.items()})

    class Trained(torch.nn.Module):  # what the optimiser and the checkpoint hold
        def __init__(self):
            super().__init__()
            self.tower, self.heads = tower, heads

    trained = Trained()
    opt = torch.optim.AdamW(trained.parameters(), lr=lr, weight_decay=0.01)
    state = load_checkpoint(out / "ckpt", trained, opt)
    before = state.get("before", before)
    step, seconds = state.get("step", 0), state.get("seconds", 0.0)
    crops, labels = object_crops(range(n_scenes))
    targets = {k: torch.from_numpy(v) for k, v in labels.items()}
    rng = np.random.default_rng([seed, step])
    budget = Budget(minutes)
    bar = tqdm(total=steps, initial=step, desc="Paint by Example tower", disable=not progress)
    tower.train()
    while step < steps and budget.left():
        t0 = time.time()
        idx = rng.integers(0, len(crops), batch)
        pooled = tower(pixel_values=_pixels(proc, [crops[i] for i in idx], rng)).pooler_output
        losses = {k: F.cross_entropy(heads[k](pooled), targets[k][idx]) for k in LABELS}
        loss = sum(losses.values())
        for pg in opt.param_groups:
            pg["lr"] = cosine_lr(step, steps, lr, warmup=50)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
        opt.step()
        step += 1
        seconds += time.time() - t0
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()})
        if step % 250 == 0 or step == steps or not budget.left():
            save_checkpoint(out / "ckpt", trained, opt, step, extra={"seconds": seconds, "before": before})
    bar.close()
    tower.eval()
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(out / "tower.safetensors"))
    record = {"steps": step, "batch": batch, "lr": lr, "scenes": n_scenes, "crops": len(crops),
              "minutes": round(seconds / 60, 1), "device": "CPU", "before": before,
              "after": {**crop_probe(tower, proc, probe_scenes), "shape_axis": shape_axes(tower, proc)}}
    (out / "tower.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record))
    return out / "tower.safetensors"
