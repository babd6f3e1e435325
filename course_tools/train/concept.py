"""Train the shipped concept weights: ``python -m course_tools.train concept [--method lora|textual_inversion]``.

Learns Shapes World's held-out concept (a purple dotted heart) under ``sks`` (LoRA) or ``<sks>``
(Textual Inversion) on tiny-sd from 6 rendered references with
:func:`course_lib.methods.concepts.learn_concept`, and writes diffusers' own formats to
``data/models/concept-sks-lora`` / ``data/models/concept-sks-ti`` with a short card. The full
DreamBooth fine-tune is not shipped (a whole UNet, 12 MB); notebook 04 runs it in a few steps.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from course_lib.methods.concepts import CLASS_WORD, ConceptTraining, concept_references, learn_concept, save_concept, shows_concept
from course_lib.models import MODELS_DIR, load_pipeline

FOLDERS = {"lora": "concept-sks-lora", "textual_inversion": "concept-sks-ti"}


@torch.no_grad()
def concept_identity(pipe, token: str, n: int = 16, steps: int = 25, seed: int = 1) -> dict[str, float]:
    """Generate ``n`` images of "a <token> shape on a ... background" and read them with the oracle:
    the share read as purple, and as purple **and** a heart or dotted (the concept's identity, as in
    ``python -m course_tools.bench photoswap``)."""
    from course_lib.sampling import sample
    from course_lib.shapes import vocab as V
    from course_lib.shapes.oracle import read_image
    prompts = [f"a {token} {CLASS_WORD} on a {V.BACKGROUNDS[i % len(V.BACKGROUNDS)]} background" for i in range(n)]
    images = sample(pipe, prompts, steps, 7.5, generator=torch.Generator().manual_seed(seed), progress=False)
    found = [read_image(im).find(color=V.HELD_OUT_CONCEPT["color"]) for im in images]
    return {"purple": sum(o is not None for o in found) / n, "identity": sum(map(shows_concept, found)) / n, "n": n}


def train_concept(method: str = "lora", steps: int | None = None, lr: float | None = None, seed: int = 0,
                  out: Path | None = None, prior_weight: float | None = None, **_) -> Path:
    pipe = load_pipeline("tiny-sd", device="cpu", dtype="float32")
    extra = {} if prior_weight is None else {"prior_weight": prior_weight}
    cfg = ConceptTraining(method=method, steps=steps or (600 if method == "lora" else 800), lr=lr, seed=seed, **extra)
    token = "sks" if method != "textual_inversion" else "<sks>"
    data = concept_references(token=token)
    t = time.time()
    pipe, losses = learn_concept(pipe, data, cfg)
    minutes = (time.time() - t) / 60
    out = Path(out or MODELS_DIR / FOLDERS[method])
    save_concept(pipe, out, method, None if method != "textual_inversion" else token)
    from safetensors.torch import load_file, save_file
    for f in out.glob("*.safetensors"):  # store fp16, as every embedded weight (LoRA and TI embedding)
        save_file({k: v.half().contiguous() for k, v in load_file(f).items()}, f)
    quality = concept_identity(pipe, token, n=64)  # 64: one generation is 1.6 points (16 gave steps of 6)
    info = dict(method=method, steps=cfg.steps, lr=cfg.learning_rate, batch=cfg.batch, prior_weight=cfg.prior_weight,
                class_images=cfg.class_images, lora_rank=cfg.lora_rank, references=len(data.images),
                prompts=data.prompts, minutes=round(minutes, 1), final_loss=sum(losses[-50:]) / min(50, len(losses)), quality=quality)
    (out / "training.json").write_text(json.dumps(info, indent=1))
    (out / "README.md").write_text(
        f"# tiny-sd concept weights: the held-out purple dotted heart ({method})\n\n"
        f"Made by `python -m course_tools.train concept --method {method} --steps {cfg.steps}"
        f"{'' if method == 'textual_inversion' else f' --prior-weight {cfg.prior_weight:g}'}` "
        f"(`course_tools/train/concept.py`): {cfg.steps} steps of batch {cfg.batch}, AdamW lr {cfg.learning_rate:g}, "
        f"{('prior preservation with ' + str(cfg.class_images) + f' class images (weight {cfg.prior_weight:g}), ' if cfg.prior_weight > 0 else 'no prior preservation, ') if method != 'textual_inversion' else ''}"
        f"{len(data.images)} rendered references, {minutes:.1f} min on a CPU ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}).\n"
        f"Prompts: `{data.prompts[0]}`, ... Load with `course_lib.methods.concepts.load_concept(pipe, folder, '{method}')`.\n"
        f"Measured on {quality['n']} generations of `a {token} {CLASS_WORD} on a ... background` "
        f"(25 steps, guidance 7.5, `concept_identity`): read as purple {100 * quality['purple']:.0f}%, as purple and a heart "
        f"or dotted (the concept) {100 * quality['identity']:.0f}%. "
        f"Photoswap with it: `python -m course_tools.bench photoswap`.\n")
    return out
