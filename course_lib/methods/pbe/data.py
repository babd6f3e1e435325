"""Paint by Example's self-supervised training data (paper Sec. 3.3): from an image and an object
box, the mask (the box, Bezier-warped), the reference (the box's crop, augmented) and the target
(the image itself).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


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
