"""Analyses behind the attention-anatomy figures: SVD of self-attention maps (Photoswap Fig. 3),
self-attention over the diffusion steps (Photoswap Fig. 4), PCA of UNet features (Plug-and-Play)."""
from __future__ import annotations

import math

import numpy as np
import torch


def self_attention_components(self_map: torch.Tensor, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """SVD of a self-attention map M (HW x HW): the top ``k`` left singular vectors as (k, H, W)
    images, and all singular values. The leading components show the image's layout."""
    m = self_map.reshape(-1, self_map.shape[-1]).double()
    side = int(round(math.sqrt(m.shape[0])))
    u, s, _ = torch.linalg.svd(m)
    comps = u[:, :k].T.reshape(k, side, side).numpy()
    # fix the sign so that each component is mostly positive (SVD signs are arbitrary)
    comps *= np.sign(comps.reshape(k, -1).sum(1))[:, None, None] + (comps.reshape(k, -1).sum(1) == 0)[:, None, None]
    return comps, s.numpy()


def pca_rgb(features: torch.Tensor, basis: torch.Tensor | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Project per-position features (N, C) or (C, H, W) on their top 3 principal components and map
    them to RGB in [0, 1]. Pass ``basis`` to reuse the components of another map (same colours)."""
    if features.ndim == 3:
        c, h, w = features.shape
        x = features.reshape(c, h * w).T
    else:
        x = features
        h = w = int(round(math.sqrt(x.shape[0])))
    x = x.double()
    x = x - x.mean(0)
    if basis is None:
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        basis = v[:3].T
    p = x @ basis
    p = (p - p.min(0).values) / (p.max(0).values - p.min(0).values).clamp_min(1e-8)
    return p.reshape(h, w, 3).numpy(), basis


def map_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation between two attention maps (any shape, flattened)."""
    x, y = a.flatten().double(), b.flatten().double()
    x, y = x - x.mean(), y - y.mean()
    return float((x @ y) / (x.norm() * y.norm()).clamp_min(1e-12))


def concentration(word_map: torch.Tensor, mask: np.ndarray) -> float:
    """How much more a token's attention lands inside ``mask`` than outside, per pixel (>1 = focused).
    The map is resized to the mask's size."""
    m = torch.as_tensor(word_map, dtype=torch.float32)[None, None]
    m = torch.nn.functional.interpolate(m, size=mask.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    mask = np.asarray(mask, bool)
    if not mask.any() or mask.all():
        raise ValueError("the mask must have pixels inside and outside")
    return float(m[mask].mean() / max(m[~mask].mean(), 1e-12))
