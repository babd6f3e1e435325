"""Suites ``p2p`` and ``pnp``: oracle-scored word swaps and translations on tiny-sd.

Real (rendered) scenes are edited from three starts: null-text inversion with the reference's 10
inner steps (the P2P paper's), null-text inversion with only ``NULL_TEXT_FEW`` inner steps, and plain
DDIM inversion at guidance 1 sampled with the ordinary empty-prompt unconditional embedding. On
tiny-sd the exact fit of the first holds the source's outline against the new word: on 12 validation
scenes apart from the bench's, 10-step null-text starts gave colour swaps 67% and shape swaps 0%,
whatever P2P's injection settings; DDIM starts 83% and 50%. A looser fit (fewer inner steps) trades
some exactness for that room (see ``NULL_TEXT_FEW``).
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from course_lib.evaluate import (DRAWABLE, TARGET_DRAWS, drawn_right, edit_scores, held_out_scenes, layout_kept,
                                 swap_case, swap_parts)
from course_lib.inversion import ddim_invert, null_text_inversion
from course_lib.methods.p2p import P2PEdit, p2p_edit
from course_lib.methods.pnp import pnp_translate
from course_lib.metrics import mask_iou, psnr
from course_lib.models import load_pipeline
from course_lib.sampling import sample
from course_lib.shapes import vocab as V
from course_lib.shapes.oracle import read_image
from course_lib.shapes.world import SceneSpec

from . import Row, bench_config, suite



def _swap_record(kind: str, source_img, target_img, source_spec: SceneSpec, target_spec: SceneSpec,
                 source_mask=None) -> tuple:
    """(kind, success, background PSNR, new attribute read, source right, layout IoU), reading each
    image once."""
    readings = read_image(source_img), read_image(target_img)
    return (kind, *edit_scores(source_img, target_img, target_spec, source_mask, readings),
            *swap_parts(source_img, target_img, source_spec, target_spec, readings),
            layout_kept(source_img, target_img, readings))


# Null-text inversion fits the unconditional embedding to the image at every step; the more inner steps,
# the more exact the reconstruction and the more the fit holds the old outline against a new word. On 24
# validation swaps (12 colour, 12 shape; ``held_out_scenes(24, offset=35_000)``, apart from the bench's):
#   inner steps   reconstruction   colour swaps   shape swaps
#   10            40-41 dB         83%            8%
#   3             36-37 dB         83%            58%
#   2             33-34 dB         83%            58%
#   1             30-32 dB         92%            67%
# The bench adds the 3-step start beside the reference's: as editable as 2, 5 dB above the 30 dB bar.
NULL_TEXT_FEW = 3
# Cross-attention injected for 40% of the steps instead of the reference's 80% leaves the target
# more steps to draw a new outline: on 24 validation shape swaps from the DDIM start (offset 35,000)
# 83% against 71% (0.6: 79%, 0.2: 75%; the naive baseline 79%). The bench shows it from the DDIM
# start beside the reference's setting; on the bench's own 15 shape swaps both read 67%.
SHORT_CROSS = 0.4


def _edit() -> P2PEdit:
    """The reference code's settings for a word swap."""
    return P2PEdit(kind="swap", cross_replace_steps=0.8, self_replace_steps=0.4)


def _swap_rows(rows: list, source: str, res: dict, n: int, drawn: dict | None = None):
    """Rows per method and swap kind (colour, shape): success, background PSNR and layout kept; bars
    on P2P. ``drawn``: per kind, each case's share of fresh-noise generations of its target prompt
    that the oracle reads right (:func:`drawn_right`), in the order of the cases."""
    for name, r in res.items():
        for kind in ("colour", "shape"):
            part = [x for x in r if x[0] == kind]
            if not part:
                continue
            drawable = ""
            if drawn:
                easy = [x[1] for x, d in zip(part, drawn[kind]) if d >= DRAWABLE]
                drawable = (f"; target prompt drawn right from fresh noise {100 * np.mean(drawn[kind]):.0f}%, "
                            f"success on the {len(easy)} cases drawn right in >= {DRAWABLE:.0%} of draws: "
                            + (f"{100 * np.mean(easy):.0f}%" if easy else "n/a"))
            ok = 100 * np.mean([x[1] for x in part])
            bg = float(np.mean([x[2] for x in part]))
            new = 100 * np.mean([x[3] for x in part])
            right = [x for x in part if x[4]]
            given = f"{100 * np.mean([x[1] for x in right]):.0f}%" if right else "n/a"
            bars = (90, 28) if name == "p2p" else (None, None)
            rows.append(Row("p2p", f"{name}: {kind} swap success, {source}", ok, "%", bars[0],
                            detail=f"{len(part)} of {n} cases; new {kind} read {new:.0f}%; source right "
                                   f"{100 * len(right) / len(part):.0f}%, success on those {given}{drawable}"))
            rows.append(Row("p2p", f"{name}: {kind} swap background PSNR, {source}", bg, " dB", bars[1]))
            rows.append(Row("p2p", f"{name}: {kind} swap layout kept (object mask IoU), {source}",
                            float(np.mean([x[5] for x in part])), "",
                            detail="largest object of the source against that of the edit"))


# How often the model itself draws a case's target prompt: a swap cannot be expected to draw what the
# model cannot. The rows' details split success by it. On the bench: the real shape swaps' targets are
# drawn right in 75% of fresh draws (4 small objects in fewer than 3 of 4), and from the DDIM start P2P
# succeeds in 91% of the 11 others; generated colour swaps 100% of the 24 drawable, shape 93% of 27.

def _drawn_rows(rows: list, source: str, drawn: dict):
    for kind, shares in drawn.items():
        rows.append(Row("p2p", f"target prompts of the {kind} swaps, {source}, drawn from fresh noise",
                        100 * float(np.mean(shares)), "%",
                        detail=f"{len(shares)} cases, {TARGET_DRAWS} seeds each: how often the model itself "
                               "draws (oracle) what the edit must draw"))


@suite("p2p")
def p2p(smoke: bool | None = None) -> list[Row]:
    cfg = bench_config(smoke)
    smoke = cfg.smoke
    pipe = load_pipeline("tiny-sd", device=cfg.device, dtype=cfg.dtype)
    steps, n = cfg.pick(50, 20), (6 if smoke else 60)
    rows = []
    # generated sources: P2P against the naive baseline (same seed, new prompt); 30 swaps of each kind,
    # since one case of 15 moved a share by 7 points
    res = {"p2p": [], "naive": []}
    t_edit = 0.0
    drawn = {"colour": [], "shape": []}
    for i, s in enumerate(held_out_scenes(n, offset=20_000)):
        spec, a, b = swap_case(s, i)
        kind = "colour" if i % 2 == 0 else "shape"
        drawn[kind].append(drawn_right(pipe, spec, steps, seed=i))
        g = torch.Generator().manual_seed(i)
        z = torch.randn((1, 4, 16, 16), generator=g)
        edit = replace(_edit(), local_blend=[spec.objects[0].shape, s.spec.objects[0].shape])
        t = time.perf_counter()
        src, tgt = p2p_edit(pipe, s.caption, spec.caption, edit, steps, latents=z, progress=False)
        t_edit += time.perf_counter() - t
        n_src, n_tgt = sample(pipe, [s.caption, spec.caption], steps, 7.5, latents=z, progress=False)
        res["p2p"].append(_swap_record(kind, src, tgt, s.spec, spec))
        res["naive"].append(_swap_record(kind, n_src, n_tgt, s.spec, spec))
    _drawn_rows(rows, "generated", drawn)
    _swap_rows(rows, "generated", res, n, drawn)
    rows.append(Row("p2p", "seconds per P2P edit (source + target)", t_edit / n, " s",
                    detail=f"{steps} steps on {cfg.device}"))
    # real (rendered) sources from two starts, null-text inversion and plain DDIM inversion (guidance 1,
    # the empty-prompt uncond); the naive baseline samples the target prompt alone from the same start
    k = 4 if smoke else 30
    few = f"null-text, {NULL_TEXT_FEW} inner steps"
    starts = {"null-text": lambda s: null_text_inversion(pipe, s.image, s.caption, steps, 7.5, progress=False),
              few: lambda s: null_text_inversion(
                  pipe, s.image, s.caption, steps, 7.5, inner_steps=NULL_TEXT_FEW, progress=False),
              "DDIM": lambda s: (ddim_invert(pipe, s.image, s.caption, steps, 1.0, progress=False)[-1], None)}
    res_r = {name: {"p2p": [], "naive": []} for name in starts}
    res_short = {"p2p": []}
    rec = {name: [] for name in starts}
    seconds = dict.fromkeys(starts, 0.0)
    drawn_r = {"colour": [], "shape": []}
    for i, s in enumerate(held_out_scenes(k, offset=30_000)):
        spec, _, _ = swap_case(s, i)
        kind = "colour" if i % 2 == 0 else "shape"
        drawn_r[kind].append(drawn_right(pipe, spec, steps, seed=i))
        edit = replace(_edit(), local_blend=[spec.objects[0].shape, s.spec.objects[0].shape])
        for name, invert in starts.items():
            t = time.perf_counter()
            zT, u = invert(s)
            seconds[name] += time.perf_counter() - t
            src, tgt = p2p_edit(pipe, s.caption, spec.caption, edit, steps, latents=zT, uncond_embeddings=u,
                                progress=False)
            naive = sample(pipe, spec.caption, steps, 7.5, latents=zT, uncond_embeddings=u, progress=False)[0]
            rec[name].append(psnr(s.image, src))
            res_r[name]["p2p"].append(_swap_record(kind, s.image, tgt, s.spec, spec, s.objects[0].mask))
            res_r[name]["naive"].append(_swap_record(kind, s.image, naive, s.spec, spec, s.objects[0].mask))
            if name == "DDIM":  # the same start, cross-attention injected for fewer steps (more room for a new shape)
                _, tgt = p2p_edit(pipe, s.caption, spec.caption, replace(edit, cross_replace_steps=SHORT_CROSS), steps,
                                  latents=zT, progress=False)
                res_short["p2p"].append(_swap_record(kind, s.image, tgt, s.spec, spec, s.objects[0].mask))
    _drawn_rows(rows, "real", drawn_r)
    rows.append(Row("p2p", "null-text inversion reconstruction PSNR", float(np.mean(rec["null-text"])), " dB", 30,
                    detail=f"{k} rendered scenes, guidance 7.5, {seconds['null-text'] / k:.0f} s each"))
    _swap_rows(rows, "real (inverted)", res_r["null-text"], k, drawn_r)
    rows.append(Row("p2p", f"{few}: reconstruction PSNR", float(np.mean(rec[few])), " dB", 30,
                    detail=f"the same {k} scenes, {seconds[few] / k:.0f} s each"))
    _swap_rows(rows, f"real ({few})", res_r[few], k, drawn_r)
    rows.append(Row("p2p", "DDIM inversion (guidance 1) reconstruction PSNR, sampled at guidance 7.5",
                    float(np.mean(rec["DDIM"])), " dB",
                    detail=f"the same {k} scenes, empty-prompt uncond, {seconds['DDIM'] / k:.1f} s each"))
    _swap_rows(rows, "real (DDIM inverted)", res_r["DDIM"], k, drawn_r)
    _swap_rows(rows, f"real (DDIM inverted), cross-attention {SHORT_CROSS:.0%} of the steps", res_short, k, drawn_r)
    return rows


@suite("pnp")
def pnp(smoke: bool | None = None) -> list[Row]:
    cfg = bench_config(smoke)
    smoke = cfg.smoke
    pipe = load_pipeline("tiny-sd", device=cfg.device, dtype=cfg.dtype)
    steps, n = cfg.pick(50, 20), (4 if smoke else 20)
    ok, iou, t_all = [], [], 0.0
    for i, s in enumerate(held_out_scenes(n, offset=40_000)):
        o = s.spec.objects[0]
        new = V.COLOR_NAMES[(V.COLOR_NAMES.index(o.color) + 2) % len(V.COLOR_NAMES)]
        spec = s.spec.replace_object(0, color=new)
        t = time.perf_counter()
        _, out = pnp_translate(pipe, s.image, spec.caption, "", num_inference_steps=steps, progress=False)
        t_all += time.perf_counter() - t
        found = read_image(out).find(color=new)
        ok.append(found is not None and found.shape == o.shape)
        iou.append(mask_iou(found.mask, s.objects[0].mask) if found is not None else 0.0)
    return [Row("pnp", "translation success (new colour, same shape)", 100 * np.mean(ok), "%",
                detail=f"{n} rendered scenes"),
            Row("pnp", "structure kept: mask IoU with the source", float(np.mean(iou)), ""),
            Row("pnp", "seconds per translation", t_all / n, " s", detail=f"{steps} steps, inversion included")]
