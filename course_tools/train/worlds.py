"""Train tiny-sd on several Shapes Worlds side by side, with equal training, inside one time budget.

``python -m course_tools.train.worlds --worlds ground hills clutter --minutes 9 --out OUT``

For each world, one process runs the ordinary stages one after the other, in its own runs folder
(``COURSE_RUNS=<runs>/<world>``):

1. ``vae --world W --init-from data/models/tiny-sd/vae``: the shipped VAE refit to the world's scenes
   (it has never seen their free content, and a UNet learns what its VAE gives it);
2. ``unet --world W --init-from data/models/tiny-sd/unet``: the shipped UNet continued on the refit
   VAE's latents of the world's scenes, with the time left.

The worlds' processes run at once (on one GPU they share it; a tiny UNet leaves it mostly idle), all
with the same steps, batch and learning rates, each stopping at its own budget. At the end, or when
the budget is spent, each world's refit VAE and its UNet's EMA weights are written in fp16 to
``OUT/<world>-vae.safetensors`` and ``OUT/<world>-unet.safetensors``, every world's training record
(steps, seconds, settings) to ``OUT/records.json`` and the end of each world's log to
``OUT/train.log`` (the whole logs stay in the runs folder).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file, save_file

from .common import MODELS


def stage_commands(world: str, a) -> list[list[str]]:
    py = [sys.executable, "-m", "course_tools.train"]
    common = ["--world", world, "--scenes", str(a.scenes)]
    return [
        py + ["vae", *common, "--init-from", str(MODELS / "tiny-sd" / "vae"), "--steps", str(a.vae_steps),
              "--batch", str(a.vae_batch), "--lr", str(a.vae_lr), "--edge-weight", str(a.edge_weight),
              "--minutes", str(a.vae_minutes)],
        py + ["unet", *common, "--init-from", str(MODELS / "tiny-sd" / "unet"), "--steps", str(a.unet_steps),
              "--batch", str(a.unet_batch), "--lr", str(a.unet_lr)],  # --minutes: the time left, added at start
    ]


def export(world: str, runs: Path, out: Path) -> dict:
    """fp16 copies of the world's refit VAE and its UNet's EMA weights; returns their records."""
    rec = {"world": world}
    vae = runs / "vae" / "final" / "diffusion_pytorch_model.safetensors"
    if vae.exists():
        save_file({k: v.half().contiguous() for k, v in load_file(vae).items()}, out / f"{world}-vae.safetensors")
        rec["vae"] = json.loads((runs / "vae" / "ckpt" / "state.json").read_text())
    ema = runs / "unet" / "ckpt" / "ema.safetensors"
    if ema.exists():
        save_file({k: v.half().contiguous() for k, v in load_file(ema).items()}, out / f"{world}-unet.safetensors")
        rec["unet"] = json.loads((runs / "unet" / "ckpt" / "state.json").read_text())
    return rec


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m course_tools.train.worlds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", nargs="+", default=["ground", "hills", "clutter"])
    p.add_argument("--minutes", type=float, default=9.0, help="the whole budget, exports included")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--runs", type=Path, default=Path("runs/worlds"))
    p.add_argument("--scenes", type=int, default=40000)
    p.add_argument("--vae-steps", type=int, default=3000)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=2e-4)
    p.add_argument("--vae-minutes", type=float, default=1.3)
    p.add_argument("--edge-weight", type=float, default=0.5)
    p.add_argument("--unet-steps", type=int, default=8000)
    p.add_argument("--unet-batch", type=int, default=256)
    p.add_argument("--unet-lr", type=float, default=3e-4)
    p.add_argument("--export-reserve", type=float, default=0.6, help="minutes kept at the end for the exports")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    end = time.time() + 60 * a.minutes
    threads = max(1, (os.cpu_count() or 2) // len(a.worlds))
    procs = {}
    for w in a.worlds:
        runs = (a.runs / w).resolve()
        runs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "COURSE_RUNS": str(runs), "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        log = open(runs / "train.log", "w")
        procs[w] = {"runs": runs, "env": env, "log": log, "todo": stage_commands(w, a), "proc": None}
    while True:
        running = False
        for w, st in procs.items():
            pr = st["proc"]
            if pr is not None and pr.poll() is None:
                running = True
                continue
            if pr is not None and pr.returncode != 0:
                st["todo"] = []  # a failed stage ends this world; its log says why
            if st["todo"]:
                cmd = st["todo"].pop(0)
                if cmd[3] == "unet":
                    left = (end - time.time()) / 60 - a.export_reserve
                    cmd = cmd + ["--minutes", f"{max(0.2, left):.2f}"]
                st["log"].write(f"$ {' '.join(cmd)}\n")
                st["log"].flush()
                st["proc"] = subprocess.Popen(cmd, env=st["env"], stdout=st["log"], stderr=subprocess.STDOUT)
                running = True
        if not running or time.time() > end - 60 * a.export_reserve + 30:
            break
        time.sleep(2)
    for st in procs.values():  # past the budget: stop what still runs (its last checkpoint is exported)
        if st["proc"] is not None and st["proc"].poll() is None:
            st["proc"].terminate()
            try:
                st["proc"].wait(20)
            except subprocess.TimeoutExpired:
                st["proc"].kill()
    records, tails = {}, []
    for w, st in procs.items():
        st["log"].close()
        records[w] = rec = export(w, st["runs"], a.out)
        print(w, {k: (v.get("step"), round(v.get("seconds_total") or 0)) for k, v in rec.items() if isinstance(v, dict)})
        lines = (st["runs"] / "train.log").read_text(errors="replace").replace("\r", "\n").splitlines()
        tails += [f"===== {w}", *[x for x in lines if x.strip()][-40:]]
    (a.out / "records.json").write_text(json.dumps(records, indent=1))
    (a.out / "train.log").write_text("\n".join(tails) + "\n")


if __name__ == "__main__":
    main()


def candidate_pipeline(out: Path, world: str, config=None):
    """The shipped tiny-sd with one world's refit VAE and trained UNet from ``out`` (what :func:`main`
    wrote there), the VAE's latent scaling from the UNet run's record."""
    from course_lib.models import load_pipeline

    rec = json.loads((Path(out) / "records.json").read_text())[world]
    pipe = load_pipeline("tiny-sd", config=config)
    dev, dtype = pipe.device, pipe.unet.dtype
    pipe.vae.load_state_dict({k: v.to(dtype) for k, v in load_file(Path(out) / f"{world}-vae.safetensors").items()})
    pipe.unet.load_state_dict({k: v.to(dtype) for k, v in load_file(Path(out) / f"{world}-unet.safetensors").items()})
    pipe.vae.register_to_config(scaling_factor=float(rec["unet"]["scaling_factor"]))
    return pipe.to(dev)
