"""Paint by Example (Yang et al., CVPR 2023): exemplar-guided inpainting.

Inputs: a source image x_s, a binary mask m (1 = the region to repaint) and a reference image x_r.
The output keeps x_s where m = 0 and shows the reference's object, adapted to the scene, where m = 1.

The model, as the paper builds it and :mod:`course_lib.train.pbe` trains it on Shapes World:

- a **9-channel inpainting UNet** (noisy latent z_t, masked-image latent E(x_s * (1 - m)), the
  keep-mask at latent size), initialised from the text-to-image UNet with zero weights for the 5
  new input channels;
- an **image-embedding bottleneck**: the CLIP image encoder's class token only, passed through a
  mapper (diffusers' ``PaintByExampleMapper``: single-token transformer blocks), a LayerNorm and a
  projection to the UNet's cross-attention width — one token, so the model cannot copy pixels;
  the **naive** variant conditions on all patch tokens instead (and learns copy-paste, paper Fig. 3);
- a **learnable null vector** v that replaces the condition in 20% of training samples, so that
  guidance eps~ = eps(v) + s (eps(c) - eps(v)) controls how close the result stays to the exemplar.

The bottleneck model is diffusers' ``PaintByExamplePipeline`` (``image_encoder`` a
``PaintByExampleImageEncoder``); :func:`load_pbe` loads the course's tiny one or the released
``Fantasy-Studio/Paint-by-Example`` checkpoint by hub id, and :func:`paint_by_example` runs either
(and the naive variant) through the course's own sampling loop.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..models import MODELS_DIR, from_pretrained
from ..sampling import decode, denoise, to_pil

RELEASED = "Fantasy-Studio/Paint-by-Example"
TINY = MODELS_DIR / "pbe-tiny"


# ----------------------------------------------------------------------------- encoders
def image_encoder_class():
    """diffusers' ``PaintByExampleImageEncoder``.

    The released checkpoint's ``model_index.json`` names it ``["paint_by_example",
    "PaintByExampleImageEncoder"]``; diffusers >= 0.34 moved that module among its deprecated
    pipelines and no longer finds it under that name. Importing this module registers the moved
    module under its old name, so ``PaintByExamplePipeline.from_pretrained`` loads both the released
    checkpoint and the course's (saved with the same name) unchanged.
    """
    try:
        import diffusers.pipelines.paint_by_example as module
        return module.PaintByExampleImageEncoder
    except ImportError:
        pass
    import types

    from diffusers.pipelines.deprecated.paint_by_example.image_encoder import PaintByExampleImageEncoder
    from transformers import PreTrainedModel
    if "paint_by_example" not in sys.modules:
        # the name model_index.json uses, exposing the class and the base diffusers loads it through
        shim = types.ModuleType("paint_by_example", "PaintByExampleImageEncoder under its pre-0.34 module name")
        shim.PaintByExampleImageEncoder, shim.PreTrainedModel = PaintByExampleImageEncoder, PreTrainedModel
        sys.modules["paint_by_example"] = shim
    return PaintByExampleImageEncoder


def image_encoder_config(clip_vision_config, proj_size: int):
    cfg = clip_vision_config.__class__.from_dict(clip_vision_config.to_dict())
    cfg.projection_dim = proj_size
    return cfg


def build_image_encoder(clip, proj_size: int, variant: str = "bottleneck"):
    """A Paint-by-Example image encoder whose vision tower is ``clip``'s (a ``CLIPModel``).

    ``bottleneck``: diffusers' ``PaintByExampleImageEncoder`` (class token -> mapper -> LayerNorm ->
    projection, plus the learnable null vector). ``naive``: :class:`NaiveImageEncoder`, all tokens.
    """
    PaintByExampleImageEncoder = image_encoder_class()
    cfg = image_encoder_config(clip.config.vision_config, proj_size)
    if variant == "bottleneck":
        enc = PaintByExampleImageEncoder(cfg, proj_size=proj_size)
    elif variant == "naive":
        enc = NaiveImageEncoder(cfg, proj_size=proj_size)
    else:
        raise ValueError(f"variant must be 'bottleneck' or 'naive', got {variant!r}")
    vision_tower(enc).load_state_dict(clip.vision_model.state_dict())
    return enc.to(clip.dtype)


def vision_tower(encoder):
    """The CLIP vision tower inside a Paint by Example image encoder (transformers 5 flattened
    ``CLIPVisionModel``: the tower is the model itself there)."""
    return getattr(encoder.model, "vision_model", encoder.model)


class NaiveImageEncoder(torch.nn.Module):
    """The naive condition (paper Sec. 3.2): every token of the CLIP image encoder's last layer
    (class token and all patch tokens), LayerNorm, projection — no bottleneck."""

    def __init__(self, config, proj_size: int):
        super().__init__()
        from transformers import CLIPVisionModel
        self.config = config
        self.model = CLIPVisionModel(config)
        self.final_layer_norm = torch.nn.LayerNorm(config.hidden_size)
        self.proj_out = torch.nn.Linear(config.hidden_size, proj_size)
        self.uncond_vector = torch.nn.Parameter(torch.randn((1, 1, proj_size)))

    @property
    def dtype(self) -> torch.dtype:
        return self.uncond_vector.dtype

    @property
    def device(self) -> torch.device:
        return self.uncond_vector.device

    def forward(self, pixel_values, return_uncond_vector=False):
        h = self.model(pixel_values=pixel_values).last_hidden_state
        h = self.proj_out(self.final_layer_norm(h))
        return (h, self.uncond_vector) if return_uncond_vector else h


UNET_PARTS = ("all", "attention")
ENCODER_PARTS = ("head", "all")


def trainable_names(name: str, unet_parts: str = "all", encoder: str = "head") -> bool:
    """Which parameters Paint by Example trains here: the whole UNet (``unet_parts="all"``, as the
    paper fine-tunes Stable Diffusion's) or only its input convolution (for the 5 new channels) and
    attention layers (``"attention"``, a seventh of the weights to store), and the encoder's head
    (mapper, LayerNorm, projection, null vector). The CLIP vision tower stays as initialised
    (``encoder="head"``: frozen, as in the paper) or is trained with the rest (``"all"``: the
    class token itself learns what the UNet needs of the exemplar); the VAE stays frozen."""
    if unet_parts not in UNET_PARTS:
        raise ValueError(f"unet_parts must be one of {UNET_PARTS}, got {unet_parts!r}")
    if encoder not in ENCODER_PARTS:
        raise ValueError(f"encoder must be one of {ENCODER_PARTS}, got {encoder!r}")
    if name.startswith("unet."):
        n = name[5:]
        return unet_parts == "all" or n.startswith("conv_in.") or ".attn1." in n or ".attn2." in n
    if name.startswith("image_encoder."):
        return encoder == "all" or not name.startswith("image_encoder.model.")
    return False


# ----------------------------------------------------------------------------- the UNet
def inpainting_unet(unet):
    """A 9-input-channel copy of a text-to-image UNet: latent (4) + masked-image latent (4) + mask (1);
    the new channels' input weights are zero, so at initialisation it computes what ``unet`` computes."""
    from diffusers import UNet2DConditionModel

    cfg = dict(unet.config)
    cfg["in_channels"] = 9
    new = UNet2DConditionModel.from_config(cfg).to(unet.device, unet.dtype)
    sd = unet.state_dict()
    w = sd.pop("conv_in.weight")
    missing, unexpected = new.load_state_dict(sd, strict=False)
    assert missing == ["conv_in.weight"] and not unexpected, (missing, unexpected)
    with torch.no_grad():
        new.conv_in.weight.zero_()
        new.conv_in.weight[:, :4] = w
    return new


# ----------------------------------------------------------------------------- pipelines
def build_pipeline(sd_pipe, clip, clip_processor, variant: str = "bottleneck"):
    """A ``PaintByExamplePipeline`` from a text-to-image pipeline (VAE, UNet -> 9 channels) and a CLIP
    model (vision tower -> image encoder), ready to train. ``variant="naive"`` gives the same
    pipeline class with the all-tokens encoder (course code only: diffusers cannot save it)."""
    from diffusers import DDIMScheduler, PaintByExamplePipeline

    unet = inpainting_unet(sd_pipe.unet)
    enc = build_image_encoder(clip, unet.config.cross_attention_dim, variant).to(unet.device)
    pipe = PaintByExamplePipeline(vae=sd_pipe.vae, image_encoder=enc, unet=unet,
                                  scheduler=DDIMScheduler.from_config(sd_pipe.scheduler.config),
                                  safety_checker=None, feature_extractor=clip_processor,
                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.variant = variant
    return pipe


def trainable_state(pipe, unet_parts: str = "all", encoder: str = "head") -> dict[str, torch.Tensor]:
    """The trained parameters (see :func:`trainable_names`), keyed ``unet.*`` / ``image_encoder.*``."""
    out = {}
    for part in ("unet", "image_encoder"):
        for k, v in getattr(pipe, part).state_dict().items():
            if trainable_names(f"{part}.{k}", unet_parts, encoder):
                out[f"{part}.{k}"] = v
    return out


def load_trainable_state(pipe, state: dict[str, torch.Tensor]):
    for part in ("unet", "image_encoder"):
        sub = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
        missing, unexpected = getattr(pipe, part).load_state_dict(sub, strict=False)
        if unexpected:
            raise ValueError(f"unexpected {part} weights: {unexpected[:5]}")
    return pipe


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

    from ..models import load_clip, load_pipeline

    weights = Path(weights or TINY / f"{variant}.safetensors")
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing; train it with `python -m course_lib.train pbe --method {variant}`")
    base, current = trained_on(weights), base_fingerprint()
    if base is not None and base != current:
        import warnings
        warnings.warn(f"{weights.name} was trained on other tiny-sd or tiny-clip weights than the ones in {MODELS_DIR}: "
                      f"its trained parts do not fit them and the results will be poor. Retrain them with "
                      f"`python -m course_lib.train pbe --method {variant}`", stacklevel=2)
    sd_pipe = load_pipeline("tiny-sd", device="cpu", dtype=torch.float32)
    clip, _, proc = load_clip("tiny-clip", device="cpu", dtype=torch.float32)
    pipe = build_pipeline(sd_pipe, clip, proc, variant)
    load_trainable_state(pipe, {k: v.float() for k, v in load_file(weights).items()})
    if variant == "naive":
        pipe.to(device, dtype)
        pipe.variant = "naive"
        return pipe
    from ..train.common import RUNS
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
    (``"paint-by-example"`` = the released ``Fantasy-Studio/Paint-by-Example``), offline-first."""
    import warnings

    from diffusers import DDIMScheduler

    from ..config import best_device, default_dtype, parse_dtype

    device = device or best_device()
    dtype = parse_dtype(dtype) or default_dtype(device)
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


# ----------------------------------------------------------------------------- inputs
def model_size(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def check_image(pipe, image, what: str = "source image") -> Image.Image:
    """The source must be an image of the model's size; other modes are converted to RGB (documented)."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"the {what} must be a PIL image, got {type(image).__name__}")
    size = model_size(pipe)
    if image.size != (size, size):
        raise ValueError(f"the {what} is {image.size[0]}x{image.size[1]}; this model paints {size}x{size} images "
                         f"(resize it first, e.g. image.resize(({size}, {size})))")
    return image.convert("RGB")


def check_reference(reference) -> Image.Image:
    """Any PIL image is accepted as reference: other modes (L, RGBA, P, ...) are converted to RGB and
    any size is resized to the image encoder's square input by :func:`encode_reference` (the whole
    image, squeezed, as in training and in the paper's code; not a centre crop, which would cut the
    sides off a wide object). Anything else is refused."""
    if not isinstance(reference, Image.Image):
        raise TypeError(f"the reference must be a PIL image, got {type(reference).__name__}")
    if min(reference.size) < 4:
        raise ValueError(f"the reference is {reference.size[0]}x{reference.size[1]}: too small to show an object")
    if reference.mode == "RGBA":  # transparent pixels become white, as on a white page
        bg = Image.new("RGB", reference.size, (255, 255, 255))
        bg.paste(reference, mask=reference.split()[-1])
        return bg
    return reference.convert("RGB")


def check_mask(mask, size: int) -> np.ndarray:
    """A mask as a bool array (True = repaint): a PIL image (any mode; > 50% grey is True), a bool or
    0/1 array, or a tensor. It must have the image's size and mark at least one pixel."""
    if isinstance(mask, Image.Image):
        m = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0 > 0.5
    elif torch.is_tensor(mask):
        m = mask.detach().cpu().float().squeeze().numpy() > 0.5
    else:
        m = np.asarray(mask)
        m = m > 0.5 if m.dtype != bool else m
    if m.ndim != 2:
        raise ValueError(f"the mask must be one channel, H x W; got shape {m.shape}")
    if m.shape != (size, size):
        raise ValueError(f"the mask is {m.shape[1]}x{m.shape[0]}, the image {size}x{size}: they must match")
    if not m.any():
        raise ValueError("the mask is empty: mark the region to repaint (True / white)")
    return m


# ----------------------------------------------------------------------------- inference
@torch.no_grad()
def encode_reference(pipe, reference, batch: int = 1):
    """(condition tokens, null vector) of the reference: batch x tokens x width each."""
    ref = check_reference(reference)
    proc = pipe.feature_extractor
    side = getattr(proc, "crop_size", None) or {}
    if side.get("height") and side.get("width"):  # squeeze the whole reference in, as training does
        ref = ref.resize((side["width"], side["height"]), Image.BICUBIC)
    px = proc(images=ref, return_tensors="pt").pixel_values
    enc = pipe.image_encoder
    dtype = next(enc.parameters()).dtype
    cond, null = enc(px.to(pipe.unet.device, dtype), return_uncond_vector=True)
    return cond.expand(batch, -1, -1), null.to(cond.dtype).expand(batch, cond.shape[1], -1)


@torch.no_grad()
def mask_inputs(pipe, image, mask: np.ndarray):
    """(keep mask at latent size, masked-image latent) — as diffusers' pipeline prepares them."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    keep = torch.from_numpy(~mask).float()[None, None]
    masked = (x * keep).to(device, dtype)
    lat = pipe.vae.encode(masked).latent_dist.mode() * pipe.vae.config.scaling_factor
    keep_small = torch.nn.functional.interpolate(keep, size=lat.shape[-2:]).to(device, dtype)
    return keep_small, lat


@torch.no_grad()
def paint_by_example(pipe, image, mask, reference, num_inference_steps: int = 50, guidance_scale: float = 5.0,
                     num_images: int = 1, generator: torch.Generator | None = None, latents=None,
                     blend_known: bool = False, progress: bool = False, output: str = "pil"):
    """Repaint ``mask`` of ``image`` with the object of ``reference``.

    ``guidance_scale`` s: eps(v) + s (eps(c) - eps(v)) with the learned null vector v (paper: s = 5).
    ``num_images`` samples from different noise (the diversity figure). Same loop as diffusers'
    ``PaintByExamplePipeline.__call__`` (with DDIM), and runs the naive variant too.
    ``blend_known``: after every step, replace the latent outside the mask by the source's latent
    noised to that step (blended latent diffusion), so the known region is kept even where the model
    has not learned to keep it. Off by default: the paper and diffusers' pipeline rely on the model.
    """
    image = check_image(pipe, image)
    m = check_mask(mask, image.size[0])
    device, dtype = pipe.unet.device, pipe.unet.dtype
    # 1. the condition: the reference's token(s), and the learned null vector for guidance
    cond, null = encode_reference(pipe, reference, num_images)
    guided = guidance_scale > 1.0
    # 2. the inpainting inputs: masked-image latent and keep-mask, as extra UNet input channels
    keep, masked_lat = mask_inputs(pipe, image, m)
    extra = torch.cat([masked_lat.expand(num_images, -1, -1, -1), keep.expand(num_images, -1, -1, -1)], 1)
    # 3. the starting latents
    f = pipe.vae_scale_factor
    shape = (num_images, pipe.vae.config.latent_channels, image.size[1] // f, image.size[0] // f)
    if latents is None:
        latents = torch.randn(shape, generator=generator, dtype=torch.float32)
    z = (latents.to(device, dtype) * pipe.scheduler.init_noise_sigma)
    keep_known = None
    if blend_known:  # after each step, the source's latent noised to the next step outside the mask
        x_src = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        z_src = pipe.vae.encode(x_src.to(device, dtype)).latent_dist.mode() * pipe.vae.config.scaling_factor
        noise = latents.to(device, dtype)

        def keep_known(i, t, z):
            timesteps = pipe.scheduler.timesteps
            known = z_src if i + 1 == len(timesteps) else pipe.scheduler.add_noise(z_src, noise, timesteps[i + 1:i + 2])
            return keep * known + (1 - keep) * z
    # 4. the denoising loop (the course's one loop, with the extra channels)
    z = denoise(pipe, z, cond.to(dtype), null.to(dtype) if guided else None, num_inference_steps, guidance_scale,
                extra_channels=extra, callback=keep_known, progress=progress, desc="Paint by Example")
    # 5. decode
    if output == "latent":
        return z
    img = decode(pipe, z)
    return img if output == "tensor" else to_pil(img)


# The crop :func:`paint_by_example_zoomed` paints, as a multiple of the mask box's longer side. Chosen on
# bench pbe-val's validation cases (shape+colour in the mask, guidance 5): 75% painting the whole image;
# crops of 1.5, 1.75, 2 and 2.5 times: 75%, 86.25%, 80%, 77.5%. On 80 more held-out cases
# (``bench.pbe.validation(guidance=(5.0,), offsets=(85_000, 100_000), context=...)``): 77.5% whole;
# 82.5%, 86.25%, 82.5% for 1.5, 1.75, 2.
ZOOM_CONTEXT = 1.75
MAX_ZOOM = 4  # a crop is at least a quarter of the image's side: more zoom would leave too little detail


def zoom_box(mask: np.ndarray, context: float = ZOOM_CONTEXT) -> tuple[int, int, int, int]:
    """The square (x0, y0, x1, y1) that :func:`paint_by_example_zoomed` paints: ``context`` times the longer
    side of ``mask``'s box (at least 1 / :data:`MAX_ZOOM` of the image's side, at most all of it), centred on
    the box and moved to lie inside the image."""
    if not context >= 1:
        raise ValueError(f"context must be at least 1 (the crop must hold the mask's box), got {context}")
    size = mask.shape[0]
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = int(min(size, max(round(max(x1 - x0, y1 - y0) * context), -(-size // MAX_ZOOM))))
    bx = int(round(min(max((x0 + x1 - side) / 2, 0), size - side)))
    by = int(round(min(max((y0 + y1 - side) / 2, 0), size - side)))
    return bx, by, bx + side, by + side


def paint_by_example_zoomed(pipe, image, mask, reference, num_inference_steps: int = 50, guidance_scale: float = 5.0,
                            context: float = ZOOM_CONTEXT, **kwargs) -> list[Image.Image]:
    """:func:`paint_by_example` on a crop around the mask at the model's full resolution (what inpainting
    tools call "only masked"): crop :func:`zoom_box`, enlarge it to the model's size, paint it, shrink the
    result back and put its masked pixels into the image. Outside the mask the source's pixels stay as
    they are. A small mask thereby gets as many latent cells as a large object has: with tiny-sd's
    16x16 latents a small star or cross otherwise gets about 5x5 of them to be drawn in. A mask whose
    crop is the whole image is painted as by :func:`paint_by_example`. ``kwargs`` go to it (``num_images``,
    ``generator``, ``latents``, ``blend_known``, ``progress``); the result is PIL images."""
    if kwargs.get("output", "pil") != "pil":
        raise ValueError("paint_by_example_zoomed returns PIL images; use paint_by_example for latents or tensors")
    image = check_image(pipe, image)
    m = check_mask(mask, image.size[0])
    size = image.size[0]
    x0, y0, x1, y1 = box = zoom_box(m, context)
    inside = m[y0:y1, x0:x1]
    crop = image.crop(box).resize((size, size), Image.LANCZOS)
    crop_mask = np.asarray(Image.fromarray(inside).resize((size, size), Image.NEAREST))
    painted = paint_by_example(pipe, crop, crop_mask, reference, num_inference_steps, guidance_scale, **kwargs)
    src = np.asarray(image)
    out = []
    for p in painted:
        small = np.asarray(p.resize((x1 - x0, y1 - y0), Image.LANCZOS))
        arr = src.copy()
        arr[y0:y1, x0:x1][inside] = small[inside]
        out.append(Image.fromarray(arr))
    return out


def mask_image(mask: np.ndarray) -> Image.Image:
    """A bool mask as the white-on-black PIL image diffusers' pipeline takes."""
    return Image.fromarray((np.asarray(mask, bool) * 255).astype(np.uint8), "L")


# ----------------------------------------------------------------------------- self-supervised data
@dataclass
class PbEData:
    """What the paper's self-supervised recipe makes of one image with an object box."""

    image: Image.Image  # the target (the image itself)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)
    mask: np.ndarray  # bool, True = repaint (the box, or its Bezier-warped version)
    reference: Image.Image  # the box crop, augmented


def _bezier(p0, p1, p2, n):
    s = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s ** 2 * p2


def bezier_mask(box, size: int, rng: np.random.Generator, n_points: int = 20, jitter=(1.0, 5.0),
                bulge: float = 0.25, cover: bool = False) -> np.ndarray:
    """Mask-shape augmentation D (paper Sec. 3.3): each edge of the box becomes a quadratic Bezier
    curve (control point moved inward by up to ``bulge`` of the side), ``n_points`` points are sampled
    on it and each is jittered by 1-5 px; the polygon through them, clipped to the box, is the mask.

    ``cover=True``: the curves bulge *outward* and the mask is the polygon joined with the box, so
    it always hides the whole box. On Shapes World the box is the object's own (grown 2 px): a mask
    cut to it is mostly smaller than the box, the object in training always reaches the mask's edge,
    and the model learns to fill the mask, stretching what it paints to the mask's outline. A covering
    mask is larger than the object, which must be painted at its own proportions inside it."""
    from PIL import ImageDraw

    x0, y0, x1, y1 = [float(v) for v in box]
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    centre = corners.mean(0)
    pts = []
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        mid = (a + b) / 2
        ctrl = (mid - (centre - mid) * rng.uniform(0, bulge) * 2 if cover
                else mid + (centre - mid) * rng.uniform(-bulge, bulge) * 2)
        p = _bezier(a, ctrl, b, n_points)
        ang = rng.uniform(0, 2 * np.pi, n_points)
        r = rng.uniform(jitter[0], jitter[1], n_points)
        pts.append(p + np.stack([np.cos(ang), np.sin(ang)], 1) * r[:, None])
    poly = np.concatenate(pts)
    im = Image.new("L", (size, size), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in poly], fill=255)
    m = np.asarray(im) > 127
    inside = np.zeros_like(m)
    inside[int(y0):int(y1), int(x0):int(x1)] = True
    if cover:
        return m | inside
    m &= inside
    if not m.any():  # a degenerate draw on a tiny box: fall back to the box
        m = inside
    return m


def _elastic(a: np.ndarray, rng: np.random.Generator, alpha: float = 3.0, sigma: float = 4.0) -> np.ndarray:
    from scipy import ndimage
    h, w = a.shape[:2]
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha * sigma
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha * sigma
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = [np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
    return np.stack([ndimage.map_coordinates(a[..., c], coords, order=1) for c in range(3)], -1)


def augment_reference(crop: Image.Image, rng: np.random.Generator, out: int = 64) -> Image.Image:
    """Reference augmentation A (paper Sec. 3.3): horizontal flip, rotation, blur, elastic warp."""
    from PIL import ImageFilter

    im = crop.resize((out, out), Image.BICUBIC)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < 0.7:
        edge = tuple(int(v) for v in np.asarray(im)[0, 0])
        im = im.rotate(float(rng.uniform(-30, 30)), resample=Image.BILINEAR, fillcolor=edge)
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.2, 1.2))))
    if rng.random() < 0.5:
        im = Image.fromarray(_elastic(np.asarray(im, np.float64), rng).round().clip(0, 255).astype(np.uint8))
    return im


def self_supervised_sample(image: Image.Image, box, rng: np.random.Generator, augment: bool = True,
                           bezier: bool = True, out: int = 64, cover: bool = False) -> PbEData:
    """The paper's training pair from one image and one object box: mask = box (Bezier-warped if
    ``bezier``; always covering the box if ``cover``, see :func:`bezier_mask`), reference = the box
    crop (augmented if ``augment``), target = the image."""
    x0, y0, x1, y1 = [int(v) for v in box]
    if not (0 <= x0 < x1 <= image.size[0] and 0 <= y0 < y1 <= image.size[1]):
        raise ValueError(f"box {box} is not inside the {image.size[0]}x{image.size[1]} image")
    crop = image.crop((x0, y0, x1, y1))
    ref = augment_reference(crop, rng, out) if augment else crop.resize((out, out), Image.BICUBIC)
    if bezier:
        mask = bezier_mask((x0, y0, x1, y1), image.size[0], rng, cover=cover)
    else:
        mask = np.zeros((image.size[1], image.size[0]), bool)
        mask[y0:y1, x0:x1] = True
    return PbEData(image, (x0, y0, x1, y1), mask, ref)


def boxable(obj, min_side: int) -> bool:
    """Whether an object's visible box has both sides >= ``min_side`` px (big enough to be a reference)."""
    x0, y0, x1, y1 = obj.bbox
    return min(x1 - x0, y1 - y0) >= min_side


def object_box(bbox, size: int, pad: int = 2) -> tuple[int, int, int, int]:
    """An object's bounding box grown by ``pad`` pixels (so the mask covers its anti-aliased edge)."""
    x0, y0, x1, y1 = bbox
    return max(0, x0 - pad), max(0, y0 - pad), min(size, x1 + pad), min(size, y1 + pad)
