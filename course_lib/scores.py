"""Scores that need a model or a window: CLIP text-image alignment and SSIM.

Imagic's trade-off curve plots text alignment (CLIP score) against fidelity to the input. The
paper's fidelity is 1 - LPIPS; LPIPS needs pretrained VGG/AlexNet weights that the course does not
ship, so the course uses SSIM (structural similarity, Wang et al. 2004) and says so on the axis.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import as_array


def ssim(a, b, window: int = 7, sigma: float = 1.5) -> float:
    """Mean SSIM over the image and its RGB channels (Gaussian window, C1 = 0.01^2, C2 = 0.03^2)."""
    x = torch.from_numpy(as_array(a)).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(as_array(b)).permute(2, 0, 1)[None].float()
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    r = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = (g[:, None] * g[None]) / g.sum() ** 2
    k = g.expand(3, 1, window, window)
    blur = lambda t: F.conv2d(t, k, groups=3)  # noqa: E731  (valid region only)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


@torch.no_grad()
def clip_score(clip, images: Sequence, texts: str | Sequence[str]) -> np.ndarray:
    """Cosine similarity between each image's and its text's CLIP embedding (one text for all, or one
    each). ``clip`` is the (model, tokenizer, image processor) triple of :func:`course_lib.load_clip`."""
    model, tokenizer, processor = clip
    images = list(images)
    texts = [texts] * len(images) if isinstance(texts, str) else list(texts)
    if len(texts) != len(images):
        raise ValueError(f"{len(images)} images but {len(texts)} texts")
    device, dtype = model.device, model.dtype
    pix = processor(images=[im.convert("RGB") if hasattr(im, "convert") else im for im in images],
                    return_tensors="pt")["pixel_values"].to(device, dtype)
    tok = tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                    return_tensors="pt").to(device)
    img = model.get_image_features(pixel_values=pix)
    txt = model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask)
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    return F.cosine_similarity(img.float(), txt.float()).cpu().numpy()
