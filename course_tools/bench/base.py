"""Suite ``base``: the oracle, the embedded model's generations, its VAE and DDIM inversion."""
from __future__ import annotations

import time

import numpy as np
import torch

from course_lib.evaluate import held_out_scenes, judge_generation
from course_lib.inversion import ddim_invert
from course_lib.metrics import psnr
from course_lib.models import load_pipeline
from course_lib.sampling import decode, encode, sample, to_pil
from course_lib.shapes.oracle import read_image
from course_lib.shapes.world import HELD_OUT_SEED_OFFSET, isolated, make_scene

from . import Row, bench_config, suite



def oracle_accuracy(n_scenes: int = 300) -> tuple[float, float, int]:
    """Share of isolated objects whose shape and colour the oracle reads right, share of
    backgrounds read right, and the number of objects, on rendered held-out scenes (1-3 objects)."""
    ok = total = bg = 0
    for i in range(n_scenes):
        s = make_scene(HELD_OUT_SEED_OFFSET + i)
        r = read_image(s.image)
        bg += r.background == s.background
        for j, o in enumerate(s.objects):
            if isolated(s, j):
                total += 1
                ok += r.find(shape=o.shape, color=o.color) is not None
    return ok / total, bg / n_scenes, total



@torch.no_grad()
def generation_accuracy(pipe, n: int = 200, steps: int = 50, guidance: float = 7.5, batch: int = 50, seed: int = 0):
    scenes = held_out_scenes(n)
    judged, images = [], []
    for i in range(0, n, batch):
        part = scenes[i:i + batch]
        g = torch.Generator().manual_seed(seed + i)
        imgs = sample(pipe, [s.caption for s in part], steps, guidance, generator=g, progress=False)
        images += imgs
        judged += [judge_generation(im, s) for im, s in zip(imgs, part)]
    share = {k: float(np.mean([j[k] for j in judged])) for k in judged[0]}
    return share, images, scenes


@suite("base")
def base(smoke: bool | None = None) -> list[Row]:
    cfg = bench_config(smoke)
    smoke = cfg.smoke
    rows = []
    acc, bg_acc, n_obj = oracle_accuracy(60 if smoke else 300)
    rows.append(Row("base", "oracle: shape+colour on rendered held-out scenes", 100 * acc, "%", 99,
                    detail=f"{n_obj} isolated objects; background {100 * bg_acc:.1f}%"))
    pipe = load_pipeline("tiny-sd", device=cfg.device, dtype=cfg.dtype)
    n = 40 if smoke else 200
    share, _, _ = generation_accuracy(pipe, n=n, steps=cfg.pick(50, 20))
    rows.append(Row("base", "generation: shape+colour+background right", 100 * share["all"], "%", 90,
                    detail=f"{n} held-out prompts, guidance 7.5; shape {100 * share['shape']:.0f}%, "
                           f"colour {100 * share['color']:.0f}%, background {100 * share['background']:.0f}%"))
    scenes = held_out_scenes(n, offset=10_000, n_objects=None)
    imgs = [s.image for s in scenes]
    rec = to_pil(decode(pipe, encode(pipe, imgs)))
    rows.append(Row("base", "VAE reconstruction PSNR", float(np.mean([psnr(a, b) for a, b in zip(imgs, rec)])),
                    " dB", 30, detail=f"{n} rendered held-out scenes, 1-3 objects"))
    k = 10 if smoke else 50
    inv_psnr = []
    for s in scenes[:k]:
        zT = ddim_invert(pipe, s.image, s.caption, 50, 1.0, progress=False)[-1]
        out = sample(pipe, s.caption, 50, 1.0, latents=zT, progress=False)[0]
        inv_psnr.append(psnr(s.image, out))
    rows.append(Row("base", "DDIM inversion + reconstruction PSNR", float(np.mean(inv_psnr)), " dB", 25,
                    detail=f"{k} scenes, 50 steps, guidance 1, vs the rendered image"))
    t = time.perf_counter()
    reps = 3
    for i in range(reps):
        sample(pipe, scenes[i].caption, 50, 7.5, generator=torch.Generator().manual_seed(i), progress=False)
    rows.append(Row("base", "seconds per generated image (50 steps, CFG)", (time.perf_counter() - t) / reps, " s",
                    detail=f"batch 1 on {cfg.device}, {torch.get_num_threads()} threads"))
    return rows
