"""Figures the notebooks show: image grids, ground-truth overlays, oracle readings."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .metrics import as_array


def show_images(images: Sequence, titles: Sequence[str] | None = None, cols: int | None = None,
                size: float = 2.0, suptitle: str | None = None, fontsize: int = 7, colorbar: bool = False):
    """A grid of images (PIL, arrays or tensors) with optional titles; returns the figure.

    2-D arrays are drawn as maps (``inferno``); ``colorbar=True`` gives each map its colour scale."""
    images = list(images)
    n = len(images)
    cols = cols or min(n, 8)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < n:
            im = images[k]
            if _is_map(im):  # a 2-D map (attention, mask, component): a colour scale, not an image
                shown = ax.imshow(np.asarray(im.detach().cpu() if hasattr(im, "detach") else im, dtype=float),
                                  cmap="inferno", interpolation="nearest")
                if colorbar:
                    cb = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
                    cb.ax.tick_params(labelsize=max(fontsize - 1, 5))
            else:
                ax.imshow(as_array(im).clip(0, 1), interpolation="nearest")
            if titles is not None:
                ax.set_title(_wrap(titles[k]), fontsize=fontsize)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def _is_map(im) -> bool:
    return hasattr(im, "ndim") and im.ndim == 2


def _wrap(text: str, width: int = 28) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > width and cur:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return "\n".join(lines + [cur])


def draw_truth(ax, scene, keypoints: bool = True):
    """Overlay a scene's ground truth: mask outlines, boxes and keypoints."""
    ax.imshow(np.asarray(scene.image), interpolation="nearest")
    for o in scene.objects:
        ax.contour(o.mask, levels=[0.5], colors="k", linewidths=0.8)
        x0, y0, x1, y1 = o.bbox
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="w", lw=0.8, ls="--"))
        if keypoints:
            for name, (x, y) in o.keypoints.items():
                ax.plot(x - 0.5, y - 0.5, "o" if name == "centroid" else "x", ms=3,
                        color="k" if name == "centroid" else "magenta")
    ax.axis("off")


def draw_reading(ax, image, reading):
    """Overlay what the oracle read: object outlines with their labels, and its background word."""
    ax.imshow(as_array(image), interpolation="nearest")
    for o in reading.objects:
        ax.contour(o.mask, levels=[0.5], colors="k", linewidths=0.8)
        ax.text(o.bbox[0], max(o.bbox[1] - 1, 2), f"{o.color} {o.shape}", fontsize=6,
                color="k", backgroundcolor=(1, 1, 1, 0.6))
    ax.set_title(f"background: {reading.background}", fontsize=7)
    ax.axis("off")
