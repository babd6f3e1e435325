"""Paint by Example's weights on disk: the course's tiny model (trained parts beside the frozen
tiny-sd and tiny-clip, with a fingerprint of the weights they were trained on), saving in diffusers'
format, and loading the course's model or the released checkpoint, offline-first.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ...models import MODELS_DIR, from_pretrained
from .model import build_pipeline, image_encoder_class, load_trainable_state

RELEASED = "Fantasy-Studio/Paint-by-Example"
TINY = MODELS_DIR / "pbe-tiny"


def base_fingerprint() -> str:
    """A short hash of the frozen weights the trained parts were trained beside: tiny-sd's UNet, the
    VAE's encoder (which defines the latents they learned on; the decoder only draws the result, and
    fine-tuning it does not unfit them) and tiny-clip (whose vision tower encodes the exemplar)."""
    from safetensors import safe_open
    h = hashlib.sha256()
    for f in ("tiny-sd/unet/diffusion_pytorch_model.safetensors", "tiny-clip/model.safetensors"):
        p = MODELS_DIR / f
        h.update(p.read_bytes() if p.exists() else b"")
    vae = MODELS_DIR / "tiny-sd/vae/diffusion_pytorch_model.safetensors"
    if vae.exists():
        with safe_open(str(vae), "pt") as w:
            for k in sorted(w.keys()):
                if k.startswith(("encoder.", "quant_conv.")):
                    t = w.get_tensor(k).contiguous()
                    h.update(k.encode() + str(t.dtype).encode() + str(tuple(t.shape)).encode())
                    h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def trained_on(weights: Path) -> str | None:
    """The tiny-sd fingerprint (:func:`base_fingerprint`) a trained-parts file was trained on."""
    from safetensors import safe_open
    with safe_open(str(weights), "pt") as f:
        return (f.metadata() or {}).get("base")


def tiny_pipeline(variant: str = "bottleneck", weights: Path | None = None, device: str = "cpu", dtype=torch.float32,
                  folder: Path | None = None):
    """The course's tiny Paint by Example: tiny-sd + tiny-clip + the trained parts in
    ``data/models/pbe-tiny/<variant>.safetensors`` (or ``weights``). The bottleneck variant is written
    as a diffusers folder (``folder``, default ``runs/pbe-tiny``) and loaded back with
    ``PaintByExamplePipeline.from_pretrained``."""
    from safetensors.torch import load_file

    from ...models import load_clip, load_pipeline, quiet_loading

    weights = Path(weights or TINY / f"{variant}.safetensors")
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing; train it with `python -m course_tools.train pbe --method {variant}`")
    base, current = trained_on(weights), base_fingerprint()
    if base is not None and base != current:
        import warnings
        warnings.warn(f"{weights.name} was trained on other tiny-sd or tiny-clip weights than the ones in {MODELS_DIR}: "
                      f"its trained parts do not fit them and the results will be poor. Retrain them with "
                      f"`python -m course_tools.train pbe --method {variant}`", stacklevel=2)
    # the shipped parts put together, written as a diffusers folder and read back: what diffusers and
    # transformers say on the way (fp32 casts, the pipeline's deprecation, the CLIP vision config read as
    # CLIP's, a "writing shards" bar) is held back (models.quiet_loading)
    with quiet_loading(messages=True):
        sd_pipe = load_pipeline("tiny-sd", device="cpu", dtype=torch.float32)
        clip, _, proc = load_clip("tiny-clip", device="cpu", dtype=torch.float32)
        pipe = build_pipeline(sd_pipe, clip, proc, variant)
        load_trainable_state(pipe, {k: v.float() for k, v in load_file(weights).items()})
        if variant == "naive":
            pipe.to(device, dtype)
            pipe.variant = "naive"
            return pipe
        from ...config import RUNS
        folder = Path(folder or RUNS / "pbe-tiny")
        stamp = folder / "course_weights.json"
        key = {"weights": hashlib.sha256(weights.read_bytes()).hexdigest()[:16], "base": current}
        if not stamp.exists() or json.loads(stamp.read_text()) != key:
            save_pbe(pipe, folder)
            stamp.write_text(json.dumps(key))
        return load_pbe(str(folder), device=device, dtype=dtype)


def save_pbe(pipe, folder: str | Path) -> Path:
    """``save_pretrained`` in safetensors; only the bottleneck variant has diffusers' format.

    The image encoder is named as in the released checkpoint (see :func:`image_encoder_class`).
    """
    if getattr(pipe, "variant", "bottleneck") != "bottleneck":
        raise ValueError("only the bottleneck variant is a diffusers PaintByExamplePipeline; save the naive "
                         "variant's trained parts with trainable_state()")
    pipe.save_pretrained(str(folder), safe_serialization=True)
    index = Path(folder) / "model_index.json"
    d = json.loads(index.read_text())
    d["image_encoder"] = ["paint_by_example", "PaintByExampleImageEncoder"]  # as the released checkpoint
    index.write_text(json.dumps(d, indent=2))
    return Path(folder)


def from_pretrained_pbe(model: str, **kwargs):
    """``PaintByExamplePipeline.from_pretrained``, offline-first like every course loader."""
    from diffusers import PaintByExamplePipeline

    image_encoder_class()  # registers the encoder's module under the name model_index.json uses
    return from_pretrained(PaintByExamplePipeline, model, **kwargs)


def load_pbe(model: str = "tiny-pbe", device: str | None = None, dtype=None):
    """``"tiny-pbe"`` (the course's, see :func:`tiny_pipeline`), a folder, or a hub id
    (``"paint-by-example"`` = the released ``Fantasy-Studio/Paint-by-Example``), offline-first. Torch's
    global random generator is left as it was."""
    from ...config import best_device, default_dtype, keep_global_rng, parse_dtype

    device = device or best_device()
    dtype = parse_dtype(dtype) or default_dtype(device)
    with keep_global_rng():  # building the modules draws random initial weights before loading
        return _load_pbe(model, device, dtype)


def _load_pbe(model: str, device, dtype):
    import warnings

    from diffusers import DDIMScheduler

    if model == "tiny-pbe":
        return tiny_pipeline("bottleneck", device=device, dtype=dtype)
    model = RELEASED if model == "paint-by-example" else model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        pipe = from_pretrained_pbe(model, torch_dtype=dtype, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.variant = "bottleneck"
    return pipe.to(device)
