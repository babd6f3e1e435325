"""Suite ``imagic``: oracle-scored Imagic edits of rendered held-out scenes on tiny-sd.

Cases alternate an attribute edit (a new colour) with non-rigid edits (tall / wide aspect, a new
size) of the scene's one object; the target text is the scene's caption with that one change. An
edit succeeds when the oracle reads the changed attribute on the object; fidelity is the PSNR of
the pixels outside the source and edited objects (dilated by 1 px) against the input.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..methods.imagic import ImagicConfig, imagic_fit, imagic_sample
from ..models import load_pipeline
from ..shapes import vocab as V
from ..shapes.oracle import read_image
from ..shapes.world import make_scene
from . import Row, bench_config, suite
from .base import held_out_scenes
from .editing import edit_scores


def imagic_case(scene, i: int):
    """(target spec, kind, what the oracle must read): colour, aspect or size, in turn."""
    o = scene.spec.objects[0]
    kind = ("color", "aspect", "size")[i % 3]
    if kind == "color":
        new = V.COLOR_NAMES[(V.COLOR_NAMES.index(o.color) + 2 + i % 3) % len(V.COLOR_NAMES)]
        return scene.spec.replace_object(0, color=new), kind, new
    if kind == "aspect":
        new = "wide" if o.aspect == "tall" else "tall"
        return scene.spec.replace_object(0, aspect=new), kind, new
    new = "large" if o.size == "small" else "small"
    return scene.spec.replace_object(0, size=new), kind, new


def edit_succeeded(image, source_spec, kind: str, new: str) -> bool:
    o = source_spec.objects[0]
    r = read_image(image)
    if kind == "color":
        return r.find(color=new) is not None
    seen = r.find(color=o.color)
    return seen is not None and getattr(seen, kind) == new


@suite("imagic")
def imagic(smoke: bool | None = None) -> list[Row]:
    cfg = bench_config(smoke)
    smoke, pick = cfg.smoke, cfg.pick
    pipe = load_pipeline("tiny-sd", device=cfg.device, dtype=cfg.dtype)
    n = 3 if smoke else 21
    config = ImagicConfig(num_inference_steps=pick(50, 20))
    if smoke:
        config = config.smaller(0.3)
    etas = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    ok = {e: [] for e in etas}
    bg = {e: [] for e in etas}
    kinds = {"color": [], "aspect": [], "size": []}
    seconds = []
    for i, s in enumerate(held_out_scenes(n, offset=50_000)):
        spec, kind, new = imagic_case(s, i)
        t = time.perf_counter()
        res = imagic_fit(pipe, s.image, spec.caption, config, progress=False)
        images = imagic_sample(pipe, res, etas, seed=i)
        seconds.append(time.perf_counter() - t)
        for e, im in zip(etas, images):
            ok[e].append(edit_succeeded(im, s.spec, kind, new))
            bg[e].append(edit_scores(s.image, im, spec, source_mask=s.objects[0].mask)[1])
        kinds[kind].append(ok[config.eta][-1])
    rows = []
    for e in etas:
        chosen = e == config.eta
        rows.append(Row("imagic", f"edit success at eta {e}{' (chosen)' if chosen else ''}", 100 * np.mean(ok[e]), "%",
                        70 if chosen else None,
                        detail=f"{n} rendered scenes; fidelity outside the objects {np.mean(bg[e]):.1f} dB"))
    rows.append(Row("imagic", f"fidelity of the unedited region at eta {config.eta}", float(np.mean(bg[config.eta])),
                    " dB", detail="PSNR outside the source and edited objects"))
    rows.append(Row("imagic", f"non-rigid edits (aspect, size): success at eta {config.eta}",
                    100 * np.mean(kinds["aspect"] + kinds["size"]) if kinds["aspect"] else float("nan"), "%",
                    detail="by kind: " + ", ".join(f"{k} {100 * np.mean(v):.0f}% of {len(v)}"
                                                                    for k, v in kinds.items() if v)))
    rows.append(Row("imagic", "seconds per edit (fit + 6 etas)", float(np.mean(seconds)), " s",
                    detail=f"{config.embedding_steps}+{config.finetune_steps} steps, batch {config.batch}, "
                           f"{config.num_inference_steps} DDIM steps on {cfg.device}"))
    return rows + sd15_timing(smoke)


def sd15_timing(smoke: bool) -> list[Row]:
    """Imagic end to end with the paper's settings (1000 + 1500 steps) on the Stable Diffusion 1.5
    architecture with random weights, 512x512, fp16, on a CUDA GPU; the paper reports ~7 min on an A100."""
    name = "SD 1.5 architecture, 512x512 fp16: seconds per Imagic edit (paper's steps)"
    if not torch.cuda.is_available():
        return [Row("imagic", name, float("nan"), " s", detail="no CUDA GPU available in this run")]
    from ..testing import full_size_sd_pipeline
    pipe = full_size_sd_pipeline("sd15").to("cuda", torch.float16)
    scene = make_scene(1, size=512, n_objects=1)
    config = ImagicConfig.paper()
    if smoke:
        config = config.smaller(0.02)
    torch.cuda.synchronize()
    t = time.perf_counter()
    res = imagic_fit(pipe, scene.image, "a photo of a sitting dog", config, progress=False)
    imagic_sample(pipe, res, config.eta)
    torch.cuda.synchronize()
    return [Row("imagic", name, time.perf_counter() - t, " s",
                detail=f"{config.embedding_steps}+{config.finetune_steps} steps, {torch.cuda.get_device_name()}, "
                       f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")]
