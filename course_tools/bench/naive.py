"""Suite ``naive``: why the training-free methods exist. The naive edit (the same starting noise, the
target prompt alone) against the method, on what the edit should leave alone.

For each held-out word swap (colour or shape of the first object; one- and two-object scenes) the
source, the naive target and Prompt-to-Prompt's target (word swap, cross 0.8 / self 0.4, **no
LocalBlend**: it copies the source outside its mask and would hide what attention injection alone
keeps) come from one starting latent. Scored outside every object the oracle finds in any of the
three images (dilated 2 px):

- **PSNR** source -> target of everything there;
- **layout IoU** of the free content (:func:`course_lib.shapes.oracle.read_scenery`: ground, hills,
  clouds, pebbles, clutter): of the pixels that are free content in the source or in the target, the
  share that are free content in both, in the same grey (within ``SAME_GREY`` levels). A ground
  redrawn at another height or in another grey, or pebbles moved, lower it; the ground band alone
  would not (every ground lies at the bottom).

A world whose captions fix nearly everything in the picture (``plain``) leaves the naive edit as
good as the method; a world with unnamed free content shows the naive edit redrawing it.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from course_lib.evaluate import held_out_scenes
from course_lib.methods.p2p import P2PEdit, p2p_edit
from course_lib.metrics import psnr
from course_lib.sampling import initial_latents, sample
from course_lib.shapes import vocab as V
from course_lib.shapes.oracle import read_image, read_scenery
from course_lib.shapes.world import SceneSpec

from . import Row, bench_config, suite

NAIVE_BAR, METHOD_BAR = 22.0, 28.0  # dB: the naive edit visibly changes the rest, the method keeps it
NAIVE_IOU_BAR, METHOD_IOU_BAR = 0.6, 0.85
SAME_GREY = 20  # grey levels within which two pixels of free content count as the same content


def layout_iou(a, b, background: str, keep: np.ndarray | None = None) -> float:
    """Free-content layout IoU of images ``a`` and ``b`` on ``background`` (see the module's text),
    over the pixels ``keep`` (default all); 1.0 when neither has free content there."""
    fa, fb = read_scenery(a, background), read_scenery(b, background)
    if keep is not None:
        fa, fb = fa & keep, fb & keep
    union = fa | fb
    if not union.any():
        return 1.0
    ga, gb = (np.asarray(x, dtype=np.float32).mean(-1) for x in (a, b))
    same = fa & fb & (np.abs(ga - gb) <= SAME_GREY)
    return float(same.sum() / union.sum())


def swap_cases(n: int, offset: int = 0, two_object_share: float = 0.3) -> list[tuple[SceneSpec, SceneSpec, str]]:
    """``n`` held-out word swaps (source spec, target spec, kind): colour and shape by turns, of the
    first object; about ``two_object_share`` of them in two-object scenes. A colour swap never takes
    another object's colour."""
    n2 = int(round(n * two_object_share))
    scenes = held_out_scenes(n - n2, offset=offset) + held_out_scenes(n2, offset=offset + 50_000, n_objects=2)
    cases = []
    for i, sc in enumerate(scenes):
        spec = sc.spec
        o = spec.objects[0]
        if i % 2 == 0:
            taken = {p.color for p in spec.objects}
            new = next(c for k in range(1, 6) if (c := V.COLOR_NAMES[(V.COLOR_NAMES.index(o.color) + k + i // 2) % 6])
                       not in taken)
            cases.append((spec, spec.replace_object(0, color=new), "colour"))
        else:
            new = V.SHAPES[(V.SHAPES.index(o.shape) + 1 + i // 2 % 5) % len(V.SHAPES)]
            cases.append((spec, spec.replace_object(0, shape=new), "shape"))
    return cases


def score_case(source, naive, method, source_spec: SceneSpec, target_spec: SceneSpec) -> dict:
    """PSNR and free-content IoU (naive and method against the source) outside every object the oracle
    finds in any of the three images; whether the source shows its object and each target the new one."""
    readings = [read_image(im) for im in (source, naive, method)]
    objects = np.zeros(np.asarray(source).shape[:2], bool)
    for r in readings:
        for o in r.objects:
            objects |= o.mask
    keep = ~ndimage.binary_dilation(objects, iterations=2)
    bg = source_spec.background
    s, t = source_spec.objects[0], target_spec.objects[0]
    return {"psnr_naive": psnr(source, naive, keep), "psnr_method": psnr(source, method, keep),
            "iou_naive": layout_iou(source, naive, bg, keep), "iou_method": layout_iou(source, method, bg, keep),
            "free_share": float((read_scenery(source, bg) & keep).mean()),
            "source_right": readings[0].find(shape=s.shape, color=s.color) is not None,
            "naive_right": readings[1].find(shape=t.shape, color=t.color) is not None,
            "method_right": readings[2].find(shape=t.shape, color=t.color) is not None}


@torch.no_grad()
def p2p_against_naive(pipe, cases, steps: int = 50, guidance: float = 7.5, seed: int = 0,
                      edit: P2PEdit | None = None) -> tuple[list[dict], list[tuple]]:
    """Score every case (see :func:`score_case`); also return (source, naive, P2P) images per case."""
    edit = edit or P2PEdit(kind="swap", cross_replace_steps=0.8, self_replace_steps=0.4)
    records, images = [], []
    for i, (src, tgt, kind) in enumerate(cases):
        z = initial_latents(pipe, 1, torch.Generator().manual_seed(seed + i))
        source, method = p2p_edit(pipe, src.caption, tgt.caption, edit, steps, guidance, latents=z, progress=False)
        naive = sample(pipe, tgt.caption, steps, guidance, latents=z, progress=False)[0]
        records.append({"kind": kind, **score_case(source, naive, method, src, tgt)})
        images.append((source, naive, method))
    return records, images


def summary(records: list[dict]) -> dict:
    """Medians and counts of the bars over the cases."""
    col = lambda k: np.array([r[k] for r in records], dtype=float)
    pn, pm, iun, ium = col("psnr_naive"), col("psnr_method"), col("iou_naive"), col("iou_method")
    fails, keeps = (pn <= NAIVE_BAR) | (iun <= NAIVE_IOU_BAR), (pm >= METHOD_BAR) | (ium >= METHOD_IOU_BAR)
    return {"n": len(records), "psnr_naive": float(np.median(pn)), "psnr_method": float(np.median(pm)),
            "iou_naive": float(np.median(iun)), "iou_method": float(np.median(ium)),
            "naive_fails": float(np.mean(fails)), "method_keeps": float(np.mean(keeps)),
            "both": float(np.mean(fails & keeps)),  # the naive edit fails where the method keeps
            "source_right": float(col("source_right").mean()), "naive_right": float(col("naive_right").mean()),
            "method_right": float(col("method_right").mean())}


@suite("naive")
def naive_suite(smoke: bool | None = None) -> list[Row]:
    from course_lib.models import load_pipeline

    cfg = bench_config(smoke)
    pipe = load_pipeline(config=cfg)
    cases = swap_cases(cfg.pick(40, 8))
    records, _ = p2p_against_naive(pipe, cases, steps=cfg.pick(50, 20))
    s = summary(records)
    n = s["n"]
    return [
        Row("naive", "P2P: unedited content PSNR, naive edit (median)", s["psnr_naive"], " dB", NAIVE_BAR, False,
            f"{n} swaps; naive <= {NAIVE_BAR:g} dB or free-content IoU <= {NAIVE_IOU_BAR:g} on {s['naive_fails']:.0%}"),
        Row("naive", "P2P: unedited content PSNR, P2P without LocalBlend (median)", s["psnr_method"], " dB", METHOD_BAR, True,
            f">= {METHOD_BAR:g} dB or IoU >= {METHOD_IOU_BAR:g} on {s['method_keeps']:.0%}"),
        Row("naive", "P2P: free-content layout IoU, naive edit (median)", s["iou_naive"], "", NAIVE_IOU_BAR, False),
        Row("naive", "P2P: free-content layout IoU, P2P (median)", s["iou_method"], "", METHOD_IOU_BAR, True),
        Row("naive", "P2P: target read right by the oracle, naive / P2P", s["method_right"], "", None, True,
            f"naive {s['naive_right']:.0%}, P2P {s['method_right']:.0%}; source right {s['source_right']:.0%}"),
    ]


def spike_table(results: dict[str, list[dict]]) -> str:
    """One line per model and case group (all, colour, shape, one object, two objects): medians of the
    naive edit and of P2P, the shares of cases that meet the bars, and the oracle's reading."""
    def line(name, group, rs):
        s = summary(rs)
        return (f"{name:<9} {group:<7} {s['n']:>3} | {s['psnr_naive']:6.1f} dB {s['iou_naive']:5.2f} | "
                f"{s['psnr_method']:6.1f} dB {s['iou_method']:5.2f} | {s['naive_fails']:5.0%} {s['method_keeps']:5.0%} "
                f"{s['both']:5.0%} | "
                f"{s['source_right']:5.0%} {s['naive_right']:5.0%} {s['method_right']:5.0%}")
    head = ("model     cases     n | naive: PSNR, IoU  | P2P: PSNR, IoU    | naive fails, P2P keeps, both | "
            "oracle right: source, naive, P2P")
    out = [head]
    for name, rs in results.items():
        groups = {"all": rs, "colour": [r for r in rs if r["kind"] == "colour"],
                  "shape": [r for r in rs if r["kind"] == "shape"],
                  "1 obj": [r for r in rs if r.get("objects", 1) == 1], "2 obj": [r for r in rs if r.get("objects", 1) == 2]}
        out += [line(name, g, v) for g, v in groups.items() if v]
    return "\n".join(out)


def main(argv=None):
    """``python -m course_tools.bench.naive [--candidates DIR] [--worlds ...]``: the naive edit against P2P
    on the shipped tiny-sd and on world candidates (``python -m course_tools.train.worlds`` wrote them to
    DIR); prints the table and writes a grid (source | naive | P2P) per model."""
    import argparse
    from pathlib import Path

    from PIL import Image

    from course_lib.models import load_pipeline
    from ..train.worlds import candidate_pipeline

    p = argparse.ArgumentParser(prog="python -m course_tools.bench.naive")
    p.add_argument("--candidates", type=Path, default=None)
    p.add_argument("--worlds", nargs="*", default=["ground", "hills", "clutter"])
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--grid", type=Path, default=Path("runs/naive"), help="folder for the grids")
    a = p.parse_args(argv)
    models = {"shipped": None, **({w: w for w in a.worlds} if a.candidates else {})}
    cases = swap_cases(a.cases)
    results = {}
    a.grid.mkdir(parents=True, exist_ok=True)
    for name, world in models.items():
        pipe = load_pipeline("tiny-sd") if world is None else candidate_pipeline(a.candidates, world)
        records, images = p2p_against_naive(pipe, cases, steps=a.steps)
        for r, (src, _, _) in zip(records, cases):
            r["objects"] = len(src.objects)
        results[name] = records
        rows = [np.concatenate([np.asarray(im.resize((128, 128), Image.NEAREST)) for im in trio], 1)
                for trio in images[:12]]
        Image.fromarray(np.concatenate(rows, 0)).save(a.grid / f"naive-{name}.png")
        print(spike_table({name: records}).splitlines()[1], flush=True)
    print(spike_table(results))


if __name__ == "__main__":
    main()
