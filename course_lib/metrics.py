"""Image metrics on whole images or regions: PSNR, mask IoU, mean point distance."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def as_array(image) -> np.ndarray:
    """PIL, HxWx3 array (uint8 or [0, 1]) or 3xHxW / 1x3xHxW tensor in [0, 1] -> float HxWx3 in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if torch.is_tensor(image):
        t = image.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        return t.permute(1, 2, 0).numpy().astype(np.float64)
    a = np.asarray(image, dtype=np.float64)
    return a / 255.0 if a.max() > 1.5 else a


def psnr(a, b, mask: np.ndarray | None = None) -> float:
    """PSNR in dB between two images, over the pixels where ``mask`` is True (all if None)."""
    x, y = as_array(a), as_array(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    err = (x - y) ** 2
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image {x.shape[:2]}")
        if not mask.any():
            raise ValueError("empty mask: no pixels to compare")
        err = err[mask]
    mse = float(err.mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the bounding boxes of two masks: where and how large, whatever the outline."""
    def box(m):
        ys, xs = np.nonzero(np.asarray(m, bool))
        return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else None
    p, q = box(a), box(b)
    if p is None or q is None:
        return 1.0 if p is q else 0.0
    w = max(0, min(p[2], q[2]) - max(p[0], q[0]))
    h = max(0, min(p[3], q[3]) - max(p[1], q[1]))
    inter = w * h
    return float(inter / ((p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter))


def mean_distance(points_a, points_b, image_side: float | None = None) -> float:
    """Mean Euclidean distance between paired points; in % of the image side if given."""
    d = np.linalg.norm(np.asarray(points_a, float) - np.asarray(points_b, float), axis=-1).mean()
    return float(100 * d / image_side) if image_side else float(d)
