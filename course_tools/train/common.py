"""Shared pieces of the training scripts: the dataset cache, resumable safetensors checkpoints,
time budgets and EMA. Nothing here is pickled: model, optimiser and EMA state are safetensors,
counters are JSON."""
from __future__ import annotations

import json
import os
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from course_lib.config import RUNS  # noqa: F401 (re-exported for the stages)
from course_lib.models import MODELS_DIR
from course_lib.shapes.world import HELD_OUT_SEED_OFFSET, make_scene  # noqa: F401 (the training split's end)

MODELS = MODELS_DIR  # data/models: the shipped weights
# The training records (each stage's state.json) of the shipped models, written by ``assemble`` beside
# the weights, so the card and a continued run still know how they were made on a machine without runs/.
RECORD_STAGES = ("clip", "clip-text", "clip-vision", "vae", "vae-decoder", "unet", "unet-text")


def shipped_records(models: Path | None = None) -> dict:
    p = Path(models or MODELS) / "tiny-sd" / "training.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def run_record(stage: str, models: Path | None = None) -> dict:
    """A stage's training record: ``runs/STAGE/ckpt/state.json`` when that run is on this machine,
    else the record shipped with the models (``data/models/tiny-sd/training.json``), else {}."""
    p = RUNS / stage / "ckpt" / "state.json"
    if p.is_file():
        return json.loads(p.read_text())
    return shipped_records(models).get(stage, {})


def record_beside(weights: str | Path) -> dict:
    """The record of the UNet run that wrote ``weights``: the ``state.json`` beside a checkpoint file,
    or the shipped UNet's record when ``weights`` is a shipped ``tiny-sd/unet`` folder."""
    p = Path(weights)
    if (p.parent / "state.json").is_file():
        return json.loads((p.parent / "state.json").read_text())
    if (p.parent / "training.json").is_file():
        rec = json.loads((p.parent / "training.json").read_text())
        return rec.get("unet-text") or rec.get("unet") or {}
    return {}




def _render_range(args):
    start, n, size, world = args
    imgs = np.empty((n, size, size, 3), np.uint8)
    caps = []
    for i in range(n):
        s = make_scene(start + i, size, world=world)
        imgs[i] = np.asarray(s.image)
        caps.append(s.caption)
    return imgs, caps


def scene_dataset(n: int, seed_offset: int = 0, size: int = 64, workers: int | None = None,
                  cache: bool = True, world: str = "plain") -> tuple[np.ndarray, list[str]]:
    """``n`` rendered training scenes (uint8 N x H x W x 3) and captions; cached under runs/data.
    ``world``: the free content drawn under the objects (:data:`course_lib.shapes.scenery.WORLDS`);
    the captions are the same in every world. ``workers``: rendering processes (default: one per CPU
    core, at most 8)."""
    name = f"scenes_{seed_offset}_{n}_{size}.npz" if world == "plain" else f"scenes_{world}_{seed_offset}_{n}_{size}.npz"
    path = RUNS / "data" / name
    if cache and path.exists():
        d = np.load(path)
        return d["images"], [str(c) for c in d["captions"]]
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = [(seed_offset + i, min(2000, n - i), size, world) for i in range(0, n, 2000)]
    if workers > 1:
        with Pool(workers) as pool:
            parts = pool.map(_render_range, chunks)
    else:
        parts = [_render_range(c) for c in chunks]
    imgs = np.concatenate([p[0] for p in parts])
    caps = [c for p in parts for c in p[1]]
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=imgs, captions=np.array(caps))
    return imgs, caps


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float N x 3 x H x W in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CPUs and GPUs that support it (a no-op context when disabled)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def min_snr_weights(snr: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR(t), gamma) / SNR(t) for each pair's timestep (min-SNR-gamma weighting of the noise loss,
    which turns down the low-noise steps); ``snr`` per timestep of the schedule."""
    s = snr.to(t.device)[t]
    return torch.clamp(s, max=gamma) / s


class Budget:
    """A wall-clock budget in minutes (None = unlimited). The first time :meth:`left` finds it spent,
    it says so: a run that stops there ends before its planned steps, in the middle of its
    learning-rate schedule, and its checkpoint continues it."""

    def __init__(self, minutes: float | None):
        self.minutes = minutes
        self.end = None if minutes is None else time.time() + 60 * minutes
        self.spent = False

    def left(self) -> bool:
        if self.end is None or time.time() < self.end:
            return True
        if not self.spent:
            self.spent = True
            tqdm.write(f"the time budget ({self.minutes:g} min) is spent: this run stops before its planned steps; "
                       "run it again to continue from its checkpoint, with more minutes (--minutes) to finish")
        return False


class EMA:
    """An exponential moving average of a model's weights (fp32), kept on the model's device."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        state = model.state_dict()
        dev = next(iter(state.values())).device
        if next(iter(self.shadow.values())).device != dev:  # the model moved (e.g. to a GPU)
            self.shadow = {k: v.to(dev) for k, v in self.shadow.items()}
        keys = [k for k, v in state.items() if v.dtype.is_floating_point]
        shadow = [self.shadow[k] for k in keys]
        torch._foreach_mul_(shadow, d)
        torch._foreach_add_(shadow, [state[k].detach().float() for k in keys], alpha=1 - d)
        for k, v in state.items():
            if not v.dtype.is_floating_point:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module):
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, ema: EMA | None = None, extra: dict | None = None):
    """model.safetensors, optimizer.safetensors (+ ema.safetensors) and state.json, written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "tmp"
    tmp.mkdir(exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    opt = {}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for k, v in optimizer.state.get(p, {}).items():
            opt[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_file({k: v.detach().cpu().contiguous() for k, v in opt.items()}, tmp / "optimizer.safetensors")
    if ema is not None:
        save_file({k: v.detach().cpu().contiguous() for k, v in ema.shadow.items()}, tmp / "ema.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}, indent=1))
    for f in tmp.iterdir():
        os.replace(f, folder / f.name)
    tmp.rmdir()


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: EMA | None = None) -> dict:
    """Restore what :func:`save_checkpoint` wrote; returns the state dict (``{}`` if none)."""
    if not (folder / "state.json").exists():
        return {}
    model.load_state_dict(load_file(folder / "model.safetensors"))
    opt = load_file(folder / "optimizer.safetensors")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for key, v in opt.items():
        i, name = key.split(".", 1)
        optimizer.state[params[int(i)]][name] = v
    if ema is not None and (folder / "ema.safetensors").exists():
        ema.shadow = load_file(folder / "ema.safetensors")
    return json.loads((folder / "state.json").read_text())


def oversample_flag(oversample: dict[str, float] | None) -> str:
    """``--oversample shape:factor,...`` for a record's oversampling, in its own order ('' for none)."""
    return f"--oversample {','.join(f'{k}:{v:g}' for k, v in oversample.items())}" if oversample else ""


def oversample_setting(oversample: dict[str, float] | None) -> str:
    """An oversampling as :func:`refuse_other_settings` compares it: its flag with the shapes sorted."""
    return oversample_flag(dict(sorted((oversample or {}).items()))) or "no --oversample"


def refuse_other_settings(run: Path, trained: dict[str, str], asked: dict[str, str]):
    """A checkpoint continues only with the settings it was trained with, so that its record stays true:
    ``trained`` and ``asked`` give each setting as a short text (its command-line flags); a ValueError
    names every setting that differs, and nothing is written."""
    changed = [k for k in asked if trained.get(k) != asked[k]]
    if changed:
        said = "; with ".join(f"{trained.get(k)} (this run: {asked[k]})" for k in changed)
        raise ValueError(f"{run} was trained with {said}: continue it with the same settings, "
                         f"or move it away to start afresh")


def check_oversample(oversample: dict[str, float]):
    """Refuse shape words Shapes World does not have and factors that are not positive."""
    from course_lib.shapes.vocab import ALL_SHAPES
    unknown = set(oversample) - set(ALL_SHAPES)
    if unknown:
        raise ValueError(f"oversample names no Shapes World shape: {sorted(unknown)}; shapes are {list(ALL_SHAPES)}")
    if any(w <= 0 for w in oversample.values()):
        raise ValueError(f"oversample factors must be positive: {oversample}")


def cosine_lr(step: int, total: int, base: float, warmup: int = 200, floor: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * t)))
