"""Suite ``perf``: what attention control costs. P2P edit time over plain generation of the same
batch; the public code's approach (explicit attention probabilities in every layer) beside it.
On tiny-sd on this machine, and on the Stable Diffusion 1.5 architecture (random weights, 512x512,
fp16, 50 steps) when a CUDA GPU is available. Timings are ratios measured in one run."""
from __future__ import annotations

import time

import torch

from ..attention import AttentionStore
from ..methods.p2p import P2PEdit, p2p_edit
from ..models import load_pipeline
from ..sampling import initial_latents, sample
from . import Row, bench_config, suite


def _timed(fn, reps: int, sync=None) -> float:
    fn()  # warm-up
    if sync:
        sync()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if sync:
        sync()
    return (time.perf_counter() - t) / reps


def measure(pipe, prompts, blend_word: str, steps: int, reps: int, tag: str, device: str) -> list[Row]:
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(0))
    sync = torch.cuda.synchronize if device == "cuda" else None
    mem = {}

    def run(name, fn):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = _timed(fn, reps, sync)
        if device == "cuda":
            mem[name] = torch.cuda.max_memory_allocated() / 2**30
        return t

    plain = run("plain", lambda: sample(pipe, prompts, steps, 7.5, latents=z, progress=False, output="latent"))
    edit = run("p2p", lambda: p2p_edit(pipe, prompts[0], prompts[1:], P2PEdit(), steps, latents=z,
                                        progress=False, output="latent"))
    blend = run("p2p+blend", lambda: p2p_edit(pipe, prompts[0], prompts[1:], P2PEdit(local_blend=[blend_word]),
                                               steps, latents=z, progress=False, output="latent"))
    everywhere = run("explicit", lambda: sample(pipe, prompts, steps, 7.5, latents=z, progress=False, output="latent",
                                                controllers=AttentionStore(kinds=("cross", "self"))))
    rows = [Row("perf", f"{tag}: plain generation, batch {len(prompts)}", plain, " s", detail=f"{steps} steps"),
            Row("perf", f"{tag}: P2P word swap / plain", edit / plain, "x", 1.15, higher_is_better=False),
            Row("perf", f"{tag}: P2P + LocalBlend / plain", blend / plain, "x"),
            Row("perf", f"{tag}: explicit attention in every layer / plain", everywhere / plain, "x",
                detail="how the public P2P code computes attention")]
    for name, gb in mem.items():
        rows.append(Row("perf", f"{tag}: peak GPU memory, {name}", gb, " GiB", 6 if name == "p2p" else None,
                        higher_is_better=False))
    return rows


@suite("perf")
def perf(smoke: bool | None = None) -> list[Row]:
    cfg = bench_config(smoke)
    smoke = cfg.smoke
    pipe = load_pipeline("tiny-sd", device="cpu", dtype="float32")
    prompts = ["a large red circle on a white background", "a large blue circle on a white background"]
    rows = measure(pipe, prompts, "circle", cfg.pick(50, 10), 1 if smoke else 3, "tiny-sd, CPU", "cpu")
    if torch.cuda.is_available():
        from ..testing import full_size_sd_pipeline
        sd = full_size_sd_pipeline("sd15").to("cuda", torch.float16)
        rows += measure(sd, ["a red car on a street", "a blue car on a street"], "car", 50, 3,
                        "SD 1.5 architecture, 512x512 fp16", "cuda")
    else:
        rows.append(Row("perf", "SD 1.5 architecture on GPU", float("nan"), "", None,
                        detail="no CUDA GPU available in this run"))
    return rows
