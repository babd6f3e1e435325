"""Input checks shared by every public function of the course: one rule per kind of input, a clear
error that names the fix, or a conversion that is written down here.

Images (:func:`image`, :func:`image_tensor`)
    Accepted: a PIL image of any common mode, a NumPy array H x W (grey), H x W x 1/3/4, or a torch
    tensor 3 x H x W or 1 x 3 x H x W. **The dtype decides the range, never the values**: ``uint8``
    (and other integer types) are 0..255, floating point is 0..1. A float image whose values leave
    0..1 is an error (it is almost always a 0..255 image in float: divide it by 255), never silently
    rescaled; a ``bool`` array is a mask, not an image. Conversions: grey, palette, CMYK and
    grey+alpha become RGB; transparent pixels (RGBA, LA, P with transparency) are laid over white,
    as on a page. A wrong size is an error, not a resize: points, masks and boxes are given in the
    image's pixels, so the caller resizes (``image.resize((64, 64))``) and moves them along.

Masks (:func:`mask`)
    True marks the region. Accepted: a PIL image (any mode; grey >= 128 is True), a ``bool`` array,
    an integer array of 0/1 or of 0..255 (>= 128 is True; an array whose values are all 0 or 1 is
    read as 0/1), a float array or tensor in 0..1 (> 0.5 is True). H x W, or H x W x C (first channel).

Numbers
    :func:`steps` (a whole number >= 1), :func:`guidance` (finite, >= 0: 0 samples the unconditional
    model, 1 the conditional one, above 1 classifier-free guidance), :func:`fraction` (a finite
    number in [0, 1], or a half-open range), :func:`non_negative`.

Prompts (:func:`prompt`)
    A prompt whose tokens do not fit in the text encoder's window is an error that says how many
    tokens it has and how many fit: words past the window would be cut off silently.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
import torch
from PIL import Image

_MODES_TO_RGB = ("RGB", "RGBA", "RGBa", "LA", "La", "L", "P", "PA", "CMYK", "YCbCr", "1", "LAB", "HSV")


# ----------------------------------------------------------------------------- numbers
def steps(n, name: str = "num_inference_steps", minimum: int = 1) -> int:
    """A whole number of steps >= ``minimum`` (``50`` or ``50.0``; not ``2.5``, ``0``, ``True``)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Real):
        raise TypeError(f"{name} must be a whole number, got {n!r}")
    if not math.isfinite(float(n)) or float(n) != int(n):
        raise ValueError(f"{name} must be a whole number, got {n!r}")
    if int(n) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {n!r}")
    return int(n)


def guidance(s, name: str = "guidance_scale") -> float:
    """A classifier-free guidance scale: finite and >= 0 (0: the unconditional model, 1: the
    conditional one, > 1: guided, eps_u + s (eps_c - eps_u))."""
    if isinstance(s, bool) or not isinstance(s, numbers.Real):
        raise TypeError(f"{name} must be a number, got {s!r}")
    s = float(s)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (1: no guidance; Stable Diffusion's usual "
                         f"7.5), got {s}")
    return s


def is_guided(s: float) -> bool:
    """Whether sampling at guidance ``s`` needs the unconditional prediction (every ``s`` but 1)."""
    return float(s) != 1.0


def fraction(x, name: str, low: float = 0.0, high: float = 1.0, open_low: bool = False,
             open_high: bool = False) -> float:
    """A finite number in [low, high] (or with an open end: ``open_low`` / ``open_high``)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a number, got {x!r}")
    x = float(x)
    lo_ok = x > low if open_low else x >= low
    hi_ok = x < high if open_high else x <= high
    if not (math.isfinite(x) and lo_ok and hi_ok):
        raise ValueError(f"{name} must be in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}, "
                         f"got {x}")
    return x


def non_negative(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(float(x)) or x < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return float(x)


# ----------------------------------------------------------------------------- images
def model_size(pipe) -> int:
    """The side in pixels of the images the pipeline's UNet works at (64 for tiny-sd, 512 for SD 1.5)."""
    size = pipe.unet.config.sample_size
    size = size if isinstance(size, int) else size[0]
    return size * pipe.vae_scale_factor


def _over_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    page = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(page, rgba).convert("RGB")


def _check_unit_range(finite: bool, lo: float, hi: float, what: str):
    """A float image must be finite and within 0..1 (with a rounding margin): the dtype says 0..1."""
    if not finite:
        raise ValueError(f"the {what} has NaN or infinite values")
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"the {what} is a float image with values {lo:g}..{hi:g}; float images are read as "
                         f"0..1 (divide a 0..255 image by 255, or pass it as uint8)")


def _array_to_pil(a: np.ndarray, what: str) -> Image.Image:
    if a.dtype == bool:
        raise TypeError(f"the {what} is a bool array: that is a mask, not an image")
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"the {what} array has shape {a.shape} (channels first); NumPy images are "
                         f"H x W x C: use array.transpose(1, 2, 0)")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(f"the {what} array must be H x W or H x W x 3 (or x 4), got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"the {what} is an integer array with values {lo}..{hi}; integer images are 0..255")
        a8 = a.astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        _check_unit_range(bool(np.isfinite(a).all()), float(a.min()), float(a.max()), what)
        a8 = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    else:
        raise TypeError(f"the {what} array has dtype {a.dtype}; use uint8 (0..255) or float (0..1)")
    im = Image.fromarray(a8)
    return _over_white(im) if im.mode == "RGBA" else im.convert("RGB")


def _tensor_to_pil(t: torch.Tensor, what: str) -> Image.Image:
    t = t.detach().cpu()
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"the {what} is a batch of {t.shape[0]} images; pass one (1 x 3 x H x W or 3 x H x W)")
        t = t[0]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"the {what} tensor must be 3 x H x W or 1 x 3 x H x W, got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point:
        return _array_to_pil(t.float().permute(1, 2, 0).numpy(), what)
    if t.dtype == torch.bool:
        raise TypeError(f"the {what} is a bool tensor: that is a mask, not an image")
    return _array_to_pil(t.permute(1, 2, 0).numpy(), what)


def image(img, size: int | None = None, what: str = "image") -> Image.Image:
    """Any accepted image (see the module docstring) as an RGB PIL image; ``size``: the side it must have."""
    if isinstance(img, Image.Image):
        if img.mode not in _MODES_TO_RGB:
            raise ValueError(f"the {what} has mode {img.mode!r} (e.g. 16-bit or float); convert it to RGB first")
        transparent = img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (img.mode == "P" and "transparency" in img.info)
        out = _over_white(img) if transparent else img.convert("RGB")
    elif isinstance(img, np.ndarray):
        out = _array_to_pil(img, what)
    elif torch.is_tensor(img):
        out = _tensor_to_pil(img, what)
    else:
        raise TypeError(f"the {what} must be a PIL image, a NumPy array or a tensor, got {type(img).__name__}")
    if size is not None and out.size != (size, size):
        raise ValueError(f"the {what} is {out.size[0]}x{out.size[1]} but this model works at {size}x{size}; "
                         f"resize or crop it first, e.g. image.resize(({size}, {size}))")
    return out


def pipe_image(pipe, img, what: str = "image") -> Image.Image:
    """:func:`image` at the pipeline's own size."""
    return image(img, model_size(pipe), what)


def image_tensor(img, size: int | None = None, what: str = "image") -> torch.Tensor:
    """Any accepted image as a float tensor 1 x 3 x H x W in [0, 1]. A float RGB tensor or array keeps
    its precision (it is checked, not rounded to 8 bits); everything else goes through :func:`image`."""
    t = None
    if torch.is_tensor(img) and img.dtype.is_floating_point:
        t = img.detach()
        t = t[None] if t.ndim == 3 else t
        if t.ndim == 4 and t.shape[0] != 1:
            raise ValueError(f"the {what} is a batch of {t.shape[0]} images; pass one (1 x 3 x H x W or 3 x H x W)")
        if t.ndim != 4 or tuple(t.shape[:2]) != (1, 3):
            raise ValueError(f"the {what} tensor must be 3 x H x W or 1 x 3 x H x W, got shape {tuple(img.shape)}")
    elif isinstance(img, np.ndarray) and np.issubdtype(img.dtype, np.floating) and img.ndim == 3 and img.shape[-1] == 3:
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    if t is None:
        a = np.asarray(image(img, size, what), dtype=np.float32) / 255.0
        return torch.from_numpy(a).permute(2, 0, 1)[None]
    _check_unit_range(bool(torch.isfinite(t).all()), float(t.min()), float(t.max()), what)
    if size is not None and tuple(t.shape[-2:]) != (size, size):
        raise ValueError(f"the {what} is {t.shape[-1]}x{t.shape[-2]} but this model works at {size}x{size}; "
                         f"resize or crop it first")
    return t.float().clamp(0, 1)


def pipe_image_tensor(pipe, img, what: str = "image") -> torch.Tensor:
    """:func:`image_tensor` at the pipeline's own size."""
    return image_tensor(img, model_size(pipe), what)


# ----------------------------------------------------------------------------- masks
def mask(m, size: int | None = None, what: str = "mask", allow_empty: bool = False) -> np.ndarray:
    """Any accepted mask (see the module docstring) as a bool H x W array; ``size``: its side."""
    if isinstance(m, Image.Image):
        a = np.asarray(_over_white(m).convert("L") if m.mode in ("RGBA", "LA") else m.convert("L")) >= 128
    else:
        a = m.detach().cpu().numpy() if torch.is_tensor(m) else np.asarray(m)
        if a.ndim == 4 and a.shape[0] == 1:
            a = a[0]
        if a.ndim == 3 and a.shape[0] == 1 and torch.is_tensor(m):
            a = a[0]
        elif a.ndim == 3:
            a = a[..., 0]
        if a.dtype == bool:
            pass
        elif np.issubdtype(a.dtype, np.integer):
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi > 255:
                raise ValueError(f"the {what} has integer values {lo}..{hi}; use 0/1, 0..255 or bool")
            a = a > 0 if hi <= 1 else a >= 128
        elif np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all() or a.min() < -1e-3 or a.max() > 1 + 1e-3:
                raise ValueError(f"the {what} is a float array outside 0..1; use 0..1, bool or uint8")
            a = a > 0.5
        else:
            raise TypeError(f"the {what} has dtype {a.dtype}; use bool, uint8 or float 0..1")
    if a.ndim != 2:
        raise ValueError(f"the {what} must be H x W (one channel), got shape {a.shape}")
    if size is not None and a.shape != (size, size):
        raise ValueError(f"the {what} is {a.shape[1]}x{a.shape[0]} but the image is {size}x{size}: they must match")
    if not allow_empty and not a.any():
        raise ValueError(f"the {what} is empty (no pixel marked)")
    return a


# ----------------------------------------------------------------------------- prompts
def prompt(tokenizer, text, what: str = "prompt") -> str:
    """A prompt that fits in the text encoder's window (``model_max_length`` tokens with the start and
    end tokens), or an error saying by how much it does not."""
    if not isinstance(text, str):
        raise TypeError(f"the {what} must be a string, got {type(text).__name__}")
    limit = tokenizer.model_max_length
    n = len(tokenizer.tokenize(text)) + 2  # with the start and end tokens
    if n > limit:
        raise ValueError(f"the {what} {text!r} is {n - 2} tokens; this text encoder reads {limit - 2} "
                         f"(the rest would be cut off): shorten it")
    return text


def prompts(tokenizer, texts: str | Sequence[str], what: str = "prompt") -> list[str]:
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError(f"no {what} given")
    return [prompt(tokenizer, t, what) for t in texts]
