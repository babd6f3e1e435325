"""Suite ``perf``: what attention control costs, in time and memory, over plain generation of the same
batch: a Prompt-to-Prompt edit, the same with LocalBlend, the attention store keeping every layer's
cross- and self-attention maps (averaged over the steps), and, for comparison, the public code's way
of reading attention (explicit probabilities in every layer, for the whole batch).

On this CPU on tiny-sd and on the Stable Diffusion 1.5 architecture reduced in width (random weights,
32 x 32 latents: :func:`course_lib.testing.random_pipeline`), and on the full-size SD 1.5
architecture (random weights, 512x512, fp16, 50 steps) when a CUDA GPU is available.

Time: each variant runs once to warm up, then ``reps`` times interleaved with the others; the
fastest run of each is compared (another job on the machine only ever adds time). Memory: on a GPU
the peak allocated by torch; on the CPU the model's weights plus the peak resident memory the run
adds (Linux: the high-water mark of the process, reset before the run, with large blocks returned to
the system when freed). Reading CPU memory that way makes every large allocation a fresh mapping of
pages for the rest of the process, which slows the runs that allocate most (the store, explicit
attention), so all CPU timings are taken before any memory is read.
"""
from __future__ import annotations

import ctypes
import time
from pathlib import Path

import torch

from course_lib.attention import AttentionStore, Controller
from course_lib.methods.p2p import P2PEdit, p2p_edit
from course_lib.models import load_pipeline
from course_lib.sampling import initial_latents, sample

from . import Row, bench_config, suite

STORE_BAR = 1.5  # the store's time and memory over plain generation
P2P_BAR = 1.15


class ExplicitEverywhere(Controller):
    """Asks for the attention probabilities of every layer and changes nothing: how the public
    Prompt-to-Prompt code computes attention (the whole batch, every layer, explicit softmax)."""

    def wants_probs(self, layer) -> bool:
        return True


class CpuMemory:
    """Peak resident memory that a piece of work adds, on Linux (None elsewhere)."""

    def __init__(self):
        self.ok = Path("/proc/self/clear_refs").exists()
        if self.ok:
            try:  # large blocks mmapped and given back when freed, so the resident size follows the tensors
                libc = ctypes.CDLL("libc.so.6")
                libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
                libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD
            except OSError:
                self.ok = False

    @staticmethod
    def _status(field: str) -> float:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def peak_added(self, fn) -> float | None:
        if not self.ok:
            fn()
            return None
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current resident size
        before = self._status("VmRSS")
        fn()
        return self._status("VmHWM") - before


def model_bytes(pipe) -> int:
    return sum(t.numel() * t.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder)
               for t in [*m.parameters(), *m.buffers()])


def variants(pipe, prompts, blend_word: str, steps: int) -> dict:
    """The five runs compared, each a function of nothing."""
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(0))
    run = dict(progress=False, output="latent")
    return {
        "plain": lambda: sample(pipe, prompts, steps, 7.5, latents=z, **run),
        "p2p": lambda: p2p_edit(pipe, prompts[0], prompts[1:], P2PEdit(), steps, latents=z, **run),
        "p2p+blend": lambda: p2p_edit(pipe, prompts[0], prompts[1:], P2PEdit(local_blend=[blend_word]), steps,
                                      latents=z, **run),
        "store": lambda: sample(pipe, prompts, steps, 7.5, latents=z, controllers=AttentionStore(kinds=("cross", "self")),
                                **run),
        "explicit": lambda: sample(pipe, prompts, steps, 7.5, latents=z, controllers=ExplicitEverywhere(), **run),
    }


def fastest(runs: dict, reps: int, device: str) -> dict[str, float]:
    """Seconds of the fastest of ``reps`` runs of each, interleaved, after one warm-up run of each."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = {}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(reps):
        for name, fn in runs.items():
            sync()
            t = time.perf_counter()
            fn()
            sync()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    return best


def peak_memory(pipe, runs: dict, device: str) -> dict[str, float]:
    """Bytes at the peak of one run of each (GPU: allocated by torch; CPU: weights + peak resident added;
    empty where it cannot be read). On the CPU this changes how malloc returns memory for the rest of the
    process, so it runs after every timing."""
    mem = {}
    cpu_mem = CpuMemory() if device == "cpu" else None
    for name, fn in runs.items():
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            mem[name] = torch.cuda.max_memory_allocated()
        else:
            added = cpu_mem.peak_added(fn)
            if added is not None:
                mem[name] = model_bytes(pipe) + added
    return mem


def rows_of(tag: str, best: dict, mem: dict, steps: int, reps: int, n_prompts: int, device: str) -> list[Row]:
    plain = best["plain"]
    ratio = lambda name: best[name] / plain
    rows = [Row("perf", f"{tag}: plain generation, batch {n_prompts}", plain, " s",
                detail=f"{steps} steps, fastest of {reps}"),
            Row("perf", f"{tag}: P2P word swap / plain", ratio("p2p"), "x", P2P_BAR, higher_is_better=False),
            Row("perf", f"{tag}: P2P + LocalBlend / plain", ratio("p2p+blend"), "x"),
            Row("perf", f"{tag}: attention store, every layer / plain", ratio("store"), "x", STORE_BAR,
                higher_is_better=False, detail="cross and self maps, mean over the steps"),
            Row("perf", f"{tag}: explicit attention in every layer / plain", ratio("explicit"), "x",
                detail="how the public P2P code computes attention")]
    if mem:
        where = "GPU memory" if device == "cuda" else "memory (weights + peak added)"
        rows.append(Row("perf", f"{tag}: peak {where}, plain", mem["plain"] / 2**30, " GiB"))
        for name, bar in (("p2p", None), ("store", STORE_BAR), ("explicit", None)):
            rows.append(Row("perf", f"{tag}: peak {where}, {name} / plain", mem[name] / mem["plain"], "x", bar,
                            higher_is_better=False))
    return rows


@suite("perf")
def perf(smoke: bool | None = None) -> list[Row]:
    from course_lib.testing import random_pipeline

    cfg = bench_config(smoke)
    smoke = cfg.smoke
    steps, reps = cfg.pick(50, 10), cfg.pick(3, 1)
    prompts = ["a large red circle on a white background", "a large blue circle on a white background"]
    # (tag, pipeline, device, prompts, blend word, steps, reps)
    cases = [("tiny-sd, CPU", load_pipeline("tiny-sd", device="cpu", dtype="float32"), "cpu", prompts, "circle", steps, reps),
             ("SD 1.5 architecture, reduced width, 32x32 latents, CPU", random_pipeline("sd15", sample_size=32), "cpu",
              prompts, "circle", steps, reps)]
    if torch.cuda.is_available():
        from course_lib.testing import full_size_sd_pipeline
        cases.append(("SD 1.5 architecture, 512x512 fp16", full_size_sd_pipeline("sd15").to("cuda", torch.float16), "cuda",
                      ["a red car on a street", "a blue car on a street"], "car", 50, 3))
    runs = [variants(pipe, p, word, n) for _, pipe, _, p, word, n, _ in cases]
    # every timing before any memory reading (see peak_memory)
    best = [fastest(r, k, device) for r, (_, _, device, _, _, _, k) in zip(runs, cases)]
    rows = []
    for r, b, (tag, pipe, device, p, _, n, k) in zip(runs, best, cases):
        rows += rows_of(tag, b, peak_memory(pipe, r, device), n, k, len(p), device)
    if not torch.cuda.is_available():
        rows.append(Row("perf", "SD 1.5 architecture on GPU", float("nan"), "", None,
                        detail="no CUDA GPU available in this run"))
    return rows
