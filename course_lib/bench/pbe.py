"""Suite ``pbe``: Paint by Example on held-out scenes, oracle-scored; the naive variant beside it.

Per case: a held-out one-object scene; its object's box (grown 2 px) is the mask; the reference is a
rendered object of a *different* shape and colour (``single_object``, white background) cropped to its
box grown 2 px, as the model was trained (the reference is the object's box crop) and as the paper's
test set gives exemplars (objects cropped from other images). Success:
the oracle reads, inside the masked region, an object of the reference's colour (and, stricter, its
shape too). Background PSNR: outside the mask, the painted image vs the source. Guidance 5 (paper).
Each variant runs as the paper's model (the UNet alone keeps the known region) and with
``blend_known`` (the known region's latent put back after every step).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..methods.pbe import object_box, paint_by_example, tiny_pipeline
from ..metrics import psnr
from ..shapes import vocab as V
from ..shapes.oracle import read_image
from ..shapes.world import single_object
from . import Row, bench_config, suite
from .base import held_out_scenes


def pbe_cases(n: int, offset: int = 80_000, crop: bool = True):
    """(scene, mask, reference, reference shape, reference colour) for ``n`` held-out scenes.
    ``crop=False``: the reference is the whole 64 px exemplar image (its object in the middle of a
    white field) instead of the object's box crop."""
    out = []
    for i, s in enumerate(held_out_scenes(n, offset=offset)):
        o = s.spec.objects[0]
        x0, y0, x1, y1 = object_box(s.objects[0].bbox, s.size)
        m = np.zeros((s.size, s.size), bool)
        m[y0:y1, x0:x1] = True
        colours = [c for c in V.COLOR_NAMES if c != o.color]
        shapes = [sh for sh in V.SHAPES if sh != o.shape]
        c, sh = colours[i % len(colours)], shapes[(i // 2) % len(shapes)]
        exemplar = single_object(sh, c, "white", size="large")
        ref = exemplar.image.crop(object_box(exemplar.objects[0].bbox, exemplar.size)) if crop else exemplar.image
        out.append((s, m, ref, sh, c))
    return out


def pbe_scores(source, out, mask, shape, color) -> dict:
    """color / shape+color: an object of the exemplar's colour (and shape) read inside the mask; bg:
    PSNR outside the mask; fill: the area of the largest such object over the mask's area."""
    r = read_image(out)
    inside = [o for o in r.objects if (o.mask & mask).sum() > 0.5 * o.area]
    col = [o for o in inside if o.color == color]
    return {"color": bool(col), "shape+color": any(o.shape == shape for o in col),
            "bg": psnr(source, out, ~mask), "fill": max((o.area for o in col), default=0) / mask.sum()}


@suite("pbe")
def pbe_suite(smoke: bool | None = None) -> list[Row]:
    cfg = bench_config(smoke)
    smoke = cfg.smoke
    steps, n = cfg.pick(50, 20), (4 if smoke else 20)
    cases = pbe_cases(n)

    def paint_all(pipe, cases, blend=False):
        """(scores per case, seconds per edit); case i is painted from seed i."""
        res, t_all = [], 0.0
        for i, (s, m, ref, sh, c) in enumerate(cases):
            t = time.perf_counter()
            out = paint_by_example(pipe, s.image, m, ref, steps, 5.0, generator=torch.Generator().manual_seed(i),
                                   blend_known=blend)[0]
            t_all += time.perf_counter() - t
            res.append(pbe_scores(s.image, out, m, sh, c))
        return res, t_all / len(cases)

    rows = []
    for variant in ("bottleneck", "naive"):
        try:
            pipe = tiny_pipeline(variant)
        except FileNotFoundError as err:
            rows.append(Row("pbe", f"{variant}: weights", float("nan"), "", None, detail=str(err)))
            continue
        for blend in (False, True):
            res, seconds = paint_all(pipe, cases, blend)
            ours = variant == "bottleneck"
            tag = f"{variant}{' + blend_known' if blend else ''}"
            rows += [
                Row("pbe", f"{tag}: exemplar shape+colour in the mask", 100 * np.mean([x["shape+color"] for x in res]), "%",
                    80 if ours else None, detail=f"{n} cases; colour alone {100 * np.mean([x['color'] for x in res]):.0f}%"),
                Row("pbe", f"{tag}: background PSNR outside the mask", float(np.mean([x["bg"] for x in res])), " dB",
                    30 if ours else None),
                Row("pbe", f"{tag}: seconds per edit", seconds, " s",
                    detail=f"{steps} steps, guidance 5, {cfg.device}, {torch.get_num_threads()} thread(s)")]
            if ours and not blend:
                rows.append(Row("pbe", f"{tag}: painted object's area / mask area", 100 * np.mean([x["fill"] for x in res]),
                                "%", detail="the object of the exemplar's colour; 0 where none"))
                loose, _ = paint_all(pipe, pbe_cases(n, crop=False))
                rows.append(Row("pbe", f"{tag}, exemplar not cropped (object in a 64 px white image): shape+colour",
                                100 * np.mean([x["shape+color"] for x in loose]), "%",
                                detail=f"colour alone {100 * np.mean([x['color'] for x in loose]):.0f}%; painted area "
                                       f"{100 * np.mean([x['fill'] for x in loose]):.0f}% of the mask"))
    return rows
