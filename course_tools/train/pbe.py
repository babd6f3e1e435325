"""Train Paint by Example on Shapes World: ``python -m course_tools.train pbe [--method bottleneck|naive]``.

The paper's self-supervised recipe (:mod:`course_lib.methods.pbe`): for a scene and one of its
objects, the mask is the object's box (Bezier-warped), the reference is the box crop (flipped,
rotated, blurred, elastically warped), the target is the scene itself. 20% of the conditions are
replaced by the learnable null vector. The UNet starts from tiny-sd's (9 input channels, the 5 new
ones zero) and the image encoder from tiny-clip's vision tower (or, with ``--tower``, the copy of it that
``python -m course_tools.train pbe-tower`` refines on object crops); trained: the whole UNet
(``--unet-parts all``, as the paper) or only its input convolution and attention layers
(``attention``), and the encoder's head (mapper, LayerNorm, projection, null vector). ``naive``
conditions on all image tokens and uses neither augmentation.

Resumable (safetensors checkpoints under ``runs/pbe-<variant>``), stops at ``--minutes``; at the end
the trained parameters are written in fp16 to ``data/models/pbe-tiny/<variant>.safetensors``.

On a GPU (``--device cuda``) the training pairs are made by ``--workers`` data-loader processes (the
augmentations run on the CPU, one pair in about 1.5 ms) and the scenes are rendered in parallel.
"""
from __future__ import annotations

import json
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler
from safetensors.torch import save_file
from tqdm.auto import tqdm

from course_lib.methods.pbe import (TINY, base_fingerprint, boxable, build_pipeline, load_trainable_state, object_box,
                           self_supervised_sample, trainable_names, trainable_state, vision_tower)
from course_lib.models import load_clip, load_pipeline
from course_lib.shapes.world import make_scene
from .common import (RUNS, Budget, autocast, check_oversample, cosine_lr, load_checkpoint, min_snr_weights,
                     oversample_flag, oversample_setting, refuse_other_settings, save_checkpoint)


def _scene_boxes(seeds, rng: np.random.Generator, min_side: int):
    imgs, boxes, shapes = [], [], []
    for seed in seeds:
        s = make_scene(seed)
        cand = [o for o in s.objects if boxable(o, min_side)]
        if not cand:
            continue
        o = cand[rng.integers(len(cand))]
        imgs.append(np.asarray(s.image))
        boxes.append(object_box(o.bbox, s.size))
        shapes.append(o.shape)
    return imgs, boxes, shapes


def _chunk(args):
    start, stop, seed_offset, min_side = args
    return _scene_boxes(range(start, stop), np.random.default_rng([seed_offset, start]), min_side)


def pbe_dataset(n: int = 6000, seed_offset: int = 0, min_side: int = 8, cache: bool = True, workers: int = 0,
                shapes: bool = False):
    """(images uint8 N x 64 x 64 x 3, boxes N x 4): one visible object box per scene, padded by 2 px;
    with ``shapes=True`` also the boxed objects' shape names (N,).

    ``workers > 0`` renders chunks of 1,000 scene seeds in that many processes, each chunk choosing
    its objects with its own generator: the same kind of data, other pairs than the one-process
    order (cached under another name)."""
    path = RUNS / "data" / (f"pbe_{seed_offset}_{n}.npz" if workers <= 0 else f"pbe_{seed_offset}_{n}_chunked.npz")
    if cache and path.exists():
        d = np.load(path)
        if not shapes:
            return d["images"], d["boxes"]
        if "shapes" in d:  # a cache written before the shapes were kept is rendered again
            return d["images"], d["boxes"], d["shapes"]
    if workers <= 0:
        imgs, boxes, names = [], [], []
        rng = np.random.default_rng(seed_offset)
        i = 0
        while len(imgs) < n:
            for kept, more in zip((imgs, boxes, names), _scene_boxes([seed_offset + i], rng, min_side)):
                kept += more
            i += 1
    else:
        chunk = 1000
        jobs = [(seed_offset + a, seed_offset + a + chunk, seed_offset, min_side)
                for a in range(0, int(n * 1.1) + chunk, chunk)]  # a few scenes have no object big enough
        with Pool(workers) as pool:
            parts = pool.map(_chunk, jobs)
        imgs = [im for part in parts for im in part[0]][:n]
        boxes = [b for part in parts for b in part[1]][:n]
        names = [sh for part in parts for sh in part[2]][:n]
        if len(imgs) < n:
            raise RuntimeError(f"only {len(imgs)} of {n} scenes have an object of side >= {min_side} px")
    imgs, boxes, names = np.stack(imgs), np.array(boxes), np.array(names)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=imgs, boxes=boxes, shapes=names)
    return (imgs, boxes, names) if shapes else (imgs, boxes)


def pair_weights(shapes, oversample: dict[str, float] | None) -> np.ndarray | None:
    """Drawing probabilities of the training pairs: a pair whose boxed object has a shape named in
    ``oversample`` is drawn that factor times as often as the rest (None: all alike)."""
    if not oversample:
        return None
    check_oversample(oversample)
    w = np.array([oversample.get(str(sh), 1.0) for sh in shapes], dtype=np.float64)
    return w / w.sum()


class _Pairs(torch.utils.data.IterableDataset):
    """Endless batches of training pairs for data-loader workers: (scene indices, kept-pixel masks,
    reference pixel values), each worker with its own generator."""

    def __init__(self, images, boxes, proc, batch: int, augment: bool, seed: int, cover: bool = False,
                 weights: np.ndarray | None = None):
        super().__init__()
        self.images, self.boxes, self.proc = images, boxes, proc
        self.batch, self.augment, self.seed, self.cover, self.weights = batch, augment, seed, cover, weights

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            yield _pairs(self.images, self.boxes, self.proc, self.batch, rng, self.augment, self.cover, self.weights)


def _pairs(images, boxes, proc, batch: int, rng: np.random.Generator, augment: bool, cover: bool,
           weights: np.ndarray | None = None):
    """One batch of training pairs: (scene indices, kept-pixel masks, reference pixel values); scenes
    drawn with the probabilities ``weights`` (:func:`pair_weights`), or uniformly."""
    from PIL import Image
    idx = rng.integers(0, len(images), batch) if weights is None else rng.choice(len(images), batch, p=weights)
    data = [self_supervised_sample(Image.fromarray(images[i]), boxes[i], rng, augment=augment, bezier=augment,
                                   cover=cover) for i in idx]
    keep = torch.from_numpy(np.stack([~d.mask for d in data])).float()[:, None]
    px = proc(images=[d.reference for d in data], return_tensors="pt").pixel_values
    return torch.from_numpy(idx), keep, px


class _Trainable(torch.nn.Module):
    """The pipeline's UNet and image encoder as one module (for the optimiser and checkpoints)."""

    def __init__(self, pipe):
        super().__init__()
        self.unet, self.image_encoder = pipe.unet, pipe.image_encoder


def pbe_loss(pred: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor, t: torch.Tensor, snr: torch.Tensor,
             snr_gamma: float | None = None, mask_weight: float = 1.0) -> torch.Tensor:
    """The noise-prediction loss of a batch; with the defaults, the paper's plain mean squared error.
    ``keep``: 1 on the known latent cells, 0 under the mask. ``mask_weight``: the masked cells weigh that
    many times as much, normalised per pair (its mean weight is 1). ``snr_gamma``: each pair weighted by
    min(SNR(t), gamma) / SNR(t) (min-SNR weighting)."""
    err = (pred - noise) ** 2
    if mask_weight != 1:
        w = 1 + (mask_weight - 1) * (1 - keep)
        err = err * w / w.mean((1, 2, 3), keepdim=True)
    per_pair = err.mean((1, 2, 3))
    if snr_gamma is not None:
        per_pair = per_pair * min_snr_weights(snr, t, snr_gamma)
    return per_pair.mean()


def _record_beside(weights: Path | None) -> dict | None:
    """The training record (``<variant>.json``) written beside trained parts, if any: a run that
    starts from them keeps it, so the card can tell the whole history."""
    if weights is None or not Path(weights).with_suffix(".json").exists():
        return None
    return json.loads(Path(weights).with_suffix(".json").read_text())


def _unet_parts(record: dict) -> str:
    """The UNet parts a checkpoint stamp or weights record was trained on; records written before the
    choice existed trained the input convolution and attention layers."""
    return record.get("unet_parts", "attention")


def train_pbe(variant: str = "bottleneck", minutes: float | None = 20, steps: int = 4000, batch: int = 16,
              lr: float = 3e-4, seed: int = 0, bf16: bool = True, n_scenes: int = 6000, null_p: float = 0.2,
              out: Path | None = None, save_every: int | None = None, progress: bool = True, unet_parts: str = "all",
              device: str | None = None, workers: int = 0, encoder: str = "head", cover_masks: bool = False,
              init_from: Path | None = None, tower: Path | None = None,
              oversample: dict[str, float] | None = None, snr_gamma: float | None = None,
              mask_weight: float = 1.0) -> Path:
    """``workers=0`` makes the pairs in this process, in a fixed order (the shipped CPU runs);
    ``workers > 0`` in that many data-loader processes (for a GPU, which would otherwise wait).
    ``cover_masks``: Bezier masks that always hide the whole box (:func:`~course_lib.methods.pbe.bezier_mask`).
    ``init_from``: start from these trained parts (a ``<variant>.safetensors``) when the run has no checkpoint.
    ``tower``: the image encoder's vision tower from this file (:mod:`course_tools.train.pbe_tower`'s refined
    copy of tiny-clip's) instead of tiny-clip's own; trained or frozen as ``encoder`` says, and stored with
    the trained parts either way, since tiny-clip no longer holds it.
    ``oversample``: {shape: factor}, pairs whose object has that shape drawn that many times as often.
    ``snr_gamma``: min-SNR-gamma loss weighting (as tiny-sd's UNet was trained), which turns down the
    low-noise steps; ``None``, the paper's plain noise loss.
    ``mask_weight``: the loss on latent cells under the mask (what is painted) weighs this many times
    as much as on the known ones, normalised per pair so the loss keeps its scale; 1, the paper's."""
    trainable_names("unet.conv_in.weight", unet_parts, encoder)  # a clear error for an unknown choice, before loading
    if oversample:
        check_oversample(oversample)
    if snr_gamma is not None and not snr_gamma > 0:
        raise ValueError(f"snr_gamma must be positive (tiny-sd's UNet used 5), got {snr_gamma}")
    if not mask_weight >= 1:
        raise ValueError(f"mask_weight must be at least 1 (1: the plain loss), got {mask_weight}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU")
    save_every = save_every or (50 if device.type == "cpu" else 1000)
    torch.manual_seed(seed)
    augment = variant == "bottleneck"
    run = RUNS / f"pbe-{variant}"
    sd = load_pipeline("tiny-sd", device="cpu", dtype="float32")
    clip, _, proc = load_clip("tiny-clip", device="cpu", dtype="float32")
    pipe = build_pipeline(sd, clip, proc, variant)
    model = _Trainable(pipe)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(trainable_names(name, unet_parts, encoder))
        if p.requires_grad:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    base = base_fingerprint()  # the tiny-sd and tiny-clip weights this run trains beside
    tower_record = _tower_record(tower)
    stamp = run / "state.json"
    old = (json.loads(stamp.read_text()) if stamp.exists()
           else {"base": base, "unet_parts": unet_parts, "encoder": encoder, "tower": tower_record})
    trained_base, trained_parts, trained_encoder = old.get("base"), _unet_parts(old), old.get("encoder", "head")
    if (trained_base != base or trained_parts != unet_parts or trained_encoder != encoder
            or (old.get("tower") or {}).get("sha256") != (tower_record or {}).get("sha256")):
        # the checkpoint holds a whole UNet: resuming it would train on (and ship) the old tiny-sd, or
        # continue a schedule that trained other parts
        aside = run.with_name(f"{run.name}-{trained_base or 'unknown'}-{trained_parts}"
                              + ("" if trained_encoder == "head" else f"-encoder-{trained_encoder}"))
        run.rename(aside)
        print(f"{run} was trained on other tiny-sd or tiny-clip weights or other parts: moved to {aside}, starting afresh")
    state = load_checkpoint(run, model, opt)
    if state:
        refuse_other_settings(run, _pair_and_loss_settings(state), _pair_and_loss_settings(
            {"snr_gamma": snr_gamma, "mask_weight": mask_weight, "cover_masks": cover_masks, "oversample": oversample}))
    if not state and init_from is not None:
        from safetensors.torch import load_file
        init = load_file(init_from)
        if tower is None and any(k.startswith("image_encoder.model.") for k in init) and encoder == "head":
            # it would train on that tower, frozen, and store the parts without it
            raise ValueError(f"{init_from} holds a refined vision tower: pass the tower it was trained with too "
                             f"(--tower runs/pbe-tower/tower.safetensors), or --encoder all to train the tower")
        load_trainable_state(pipe, {k: v.float() for k, v in init.items()})
        print(f"starting from {init_from}")
    if not state and tower is not None:  # a checkpoint holds the tower it was trained with
        from safetensors.torch import load_file
        vision_tower(pipe.image_encoder).load_state_dict(load_file(str(tower)))
    stamp_info = {"variant": variant, "base": base, "unet_parts": unet_parts, "encoder": encoder,  # what a checkpoint is of
                  "cover_masks": cover_masks, "init_from": state.get("init_from", str(init_from) if init_from else None),
                  "previous": state.get("previous", _record_beside(init_from)), "workers": workers,
                  "tower": tower_record, "oversample": oversample or None,
                  **({"snr_gamma": snr_gamma} if snr_gamma is not None else {}),
                  **({"mask_weight": mask_weight} if mask_weight != 1 else {})}
    step = state.get("step", 0)
    seconds = state.get("seconds", 0.0)
    acc = Accelerator(cpu=device.type == "cpu")
    model.to(device)
    pipe.vae.to(device)
    model, opt = acc.prepare(model, opt)
    images, boxes, shapes = pbe_dataset(n_scenes, workers=workers, shapes=True)
    weights = pair_weights(shapes, oversample)
    vae, proc = pipe.vae, pipe.feature_extractor
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    snr = noise_sched.alphas_cumprod / (1 - noise_sched.alphas_cumprod)
    sf = vae.config.scaling_factor
    images_t = torch.from_numpy(images).to(device)
    with torch.no_grad():
        targets = torch.cat([vae.encode(images_t[i:i + 250].permute(0, 3, 1, 2).float() / 127.5 - 1)
                             .latent_dist.mean for i in range(0, len(images), 250)]) * sf
    rng = np.random.default_rng(seed + step)
    g = torch.Generator().manual_seed(seed + step)
    if workers > 0:
        loader = iter(torch.utils.data.DataLoader(_Pairs(images, boxes, proc, batch, augment, seed + step, cover_masks, weights),
                                                  batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                                                  prefetch_factor=4, persistent_workers=True))
    budget = Budget(minutes)
    losses = []
    bar = tqdm(total=steps, initial=step, desc=f"Paint by Example ({variant})", disable=not progress)
    while step < steps and budget.left():
        t0 = time.time()
        idx, keep, px = next(loader) if workers > 0 else _pairs(images, boxes, proc, batch, rng, augment, cover_masks, weights)
        idx, keep, px = idx.to(device), keep.to(device, non_blocking=True), px.to(device, non_blocking=True)
        x = images_t[idx].permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            masked_lat = vae.encode(x * keep).latent_dist.mean * sf
        keep_small = F.interpolate(keep, size=masked_lat.shape[-2:])
        z0 = targets[idx]
        noise = torch.randn(z0.shape, generator=g).to(device)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch,), generator=g).to(device)
        zt = noise_sched.add_noise(z0, noise, t)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, lr, warmup=100)
        with autocast(device, bf16):
            cond, null = pipe.image_encoder(px, return_uncond_vector=True)
            drop = (torch.rand(batch, generator=g) < null_p)[:, None, None].to(device)
            cond = torch.where(drop, null.expand_as(cond) if null.shape[1] == cond.shape[1]
                               else null.expand(batch, cond.shape[1], -1), cond)
            pred = pipe.unet(torch.cat([zt, masked_lat, keep_small], 1), t, encoder_hidden_states=cond).sample
            loss = pbe_loss(pred.float(), noise, keep_small, t, snr, snr_gamma, mask_weight)
        opt.zero_grad()
        acc.backward(loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        seconds += time.time() - t0
        losses.append(loss.detach())
        if step % 50 == 0 or step == steps:  # one host sync per 50 steps
            losses[-50:] = [float(v) for v in losses[-50:]]
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % save_every == 0:
            save_checkpoint(run, model, opt, step, extra={"seconds": seconds, **stamp_info})
    save_checkpoint(run, model, opt, step, extra={"seconds": seconds, **stamp_info})
    losses = [float(v) for v in losses]
    out = Path(out or TINY)
    out.mkdir(parents=True, exist_ok=True)
    # a refined tower travels with the trained parts (encoder "all" stores it), since tiny-clip does not hold it
    parts = trainable_state(pipe, unet_parts, "all" if tower is not None else encoder)
    save_file({k: v.detach().half().contiguous() for k, v in parts.items()},
              out / f"{variant}.safetensors", metadata={"base": base, "steps": str(step), "unet_parts": unet_parts,
                                                         "encoder": encoder, "tower": "refined" if tower else "tiny-clip"})
    info = {**stamp_info, "steps": step, "batch": batch, "lr": lr, "null_p": null_p,
            "augment": augment, "scenes": len(images), "minutes": round(seconds / 60, 1),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU", "final_loss": float(np.mean(losses[-100:])) if losses else None,
            "base": base}
    (out / f"{variant}.json").write_text(json.dumps(info, indent=1))
    write_card(out)
    print(json.dumps(info))
    return out / f"{variant}.safetensors"


def _tower_record(tower: Path | None) -> dict | None:
    """What a run records of a refined tower: its file's hash and the record written beside it."""
    if tower is None:
        return None
    import hashlib
    tower = Path(tower)
    if not tower.exists():
        raise FileNotFoundError(f"{tower} is missing; refine the tower first with `python -m course_tools.train pbe-tower`")
    beside = tower.with_suffix(".json")
    return {"sha256": hashlib.sha256(tower.read_bytes()).hexdigest()[:16],
            **({"record": json.loads(beside.read_text())} if beside.exists() else {})}


def _history(record: dict) -> list[dict]:
    """A record and the records of the stages it continued (``previous``), oldest first."""
    out = []
    while record:
        out.append(record)
        record = record.get("previous")
    return out[::-1]


def _stages(record: dict) -> str:
    """'steps x batch, lr, minutes on device' for each stage of a record."""
    return "; then ".join(
        f"{r['steps']:,} x {r['batch']}, lr {r['lr']:g}, {r['minutes']} min on "
        f"{'a 2-core CPU' if r.get('device', 'CPU') == 'CPU' else r['device']}, {r.get('scenes', 6000):,} scenes"
        f"{'; masks cover the box' if r.get('cover_masks') else ''}"
        f"{'; objects drawn more often: ' + _oversample_text(r['oversample']) if r.get('oversample') else ''}"
        f"{'; vision tower refined ' + format(r['tower']['record']['steps'], ',') + ' steps' if _tower_steps(r) else ''}"
        f"{'; min-SNR-' + format(r['snr_gamma'], 'g') + ' loss weighting' if r.get('snr_gamma') else ''}"
        f"{'; loss under the mask weighted ' + format(r['mask_weight'], 'g') + 'x' if r.get('mask_weight', 1) != 1 else ''}"
        for r in _history(record))


def _tower_steps(record: dict) -> int | None:
    """The steps of the refined vision tower a stage was trained on (None: tiny-clip's own, or not recorded)."""
    return ((record.get("tower") or {}).get("record") or {}).get("steps")


def _oversample_text(oversample: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}x" for k, v in oversample.items())


def _loss_flags(record: dict) -> str:
    """The command-line flags of a record's (or checkpoint's) loss weighting; '' for the paper's plain loss."""
    return ((f" --snr-gamma {record['snr_gamma']:g}" if record.get("snr_gamma") else "")
            + (f" --mask-weight {record['mask_weight']:g}" if record.get("mask_weight", 1) != 1 else ""))


def _pair_and_loss_settings(record: dict) -> dict[str, str]:
    """How a record's (or checkpoint's) training pairs were drawn and its loss weighed, as flags: what a
    resumed run must keep."""
    return {"loss": _loss_flags(record).strip() or "the plain loss (no --snr-gamma, --mask-weight 1)",
            "masks": "--cover-masks" if record.get("cover_masks") else "no --cover-masks",
            "oversample": oversample_setting(record.get("oversample"))}


def _commands(record: dict) -> list[str]:
    """The command line of each stage of a record, oldest first; a stage trained on another refined tower
    than the last stage's names it by its refinement steps."""
    last = (record.get("tower") or {}).get("sha256")

    def tower(r):
        if not r.get("tower"):
            return ""
        if r["tower"].get("sha256") == last or not _tower_steps(r):
            return " --tower runs/pbe-tower/tower.safetensors"
        return f" --tower <the tower of pbe-tower --steps {_tower_steps(r)}>"
    return [f"python -m course_tools.train pbe --method {r['variant']} --unet-parts {_unet_parts(r)} "
            f"--encoder {r.get('encoder', 'head')}{' --cover-masks' if r.get('cover_masks') else ''} "
            f"--scenes {r.get('scenes', 6000)} --batch {r['batch']} --lr {r['lr']:g} --steps {r['steps']}"
            f"{' --device cuda' if r.get('device', 'CPU') != 'CPU' else ''}"
            f"{' --workers ' + str(r['workers']) if r.get('workers') else ''}"
            f"{tower(r)}"
            f"{' ' + oversample_flag(r.get('oversample')) if r.get('oversample') else ''}"
            f"{_loss_flags(r)}"
            f"{' --init-from <the stage before>' if r.get('previous') else ''}" for r in _history(record)]


def write_card(folder: Path):
    """``README.md`` of ``data/models/pbe-tiny`` from the variants' training records."""
    lines = ["# Paint by Example, tiny (Shapes World)", "",
             "Trained by `python -m course_tools.train pbe --method bottleneck|naive` (`course_tools/train/pbe.py`) with "
             "the paper's self-supervised recipe on rendered training scenes (one object box each). "
             "Initialisation: tiny-sd's UNet with 9 input channels (the 5 new ones zero) and VAE, tiny-clip's vision "
             "tower. Only the trained parameters are stored, fp16: the UNet (whole, or only its input convolution "
             "and attention layers: column `UNet trained`), the image encoder's head (mapper, LayerNorm, projection, "
             "null vector) and, where the column says so, the CLIP vision tower; the VAE stays frozen. "
             "`course_lib.methods.pbe.tiny_pipeline(variant)` rebuilds the model from tiny-sd and tiny-clip, and "
             "writes the bottleneck variant as a diffusers folder that `PaintByExamplePipeline.from_pretrained` loads. "
             "`base` is a hash of the weights the parts were trained beside: tiny-sd's UNet and VAE encoder, and tiny-clip. "
             "Training: steps x batch, peak learning rate (cosine schedule), minutes, where; a later stage "
             "starts from the earlier one's weights (`--init-from`) with a new schedule.", "",
             "| variant | condition | augmentation | UNet trained | CLIP vision tower | training | final loss |",
             "|---|---|---|---|---|---|---|"]
    records = {v: json.loads((folder / f"{v}.json").read_text()) for v in ("bottleneck", "naive")
               if (folder / f"{v}.json").exists()}
    for v, d in records.items():
        cond = "class token -> mapper -> LayerNorm -> projection (1 token)" if v == "bottleneck" else "all 65 CLIP tokens"
        aug = "flip, rotation, blur, elastic; Bezier masks" if d["augment"] else "none (box masks, raw crops)"
        parts = "whole" if _unet_parts(d) == "all" else "input conv + attention"
        tower = ("tiny-clip's refined on object crops (below), " if d.get("tower") else "") + (
            "trained" if d.get("encoder", "head") == "all" else "frozen (as the paper)")
        loss = "" if d["final_loss"] is None else f"{d['final_loss']:.4f}"  # None: a resumed run with no step left
        lines.append(f"| {v} | {cond} | {aug} | {parts} | {tower} | {_stages(d)} | {loss} |")
    lines += ["", "Commands, stage by stage (each writes `<variant>.safetensors` and its record; `--out` another folder "
              "to keep the shipped ones):", ""]
    lines += [f"- {v}: " + " ; then ".join(f"`{c}`" for c in _commands(d)) for v, d in records.items()]
    towers = {v: d["tower"]["record"] for v, d in records.items() if (d.get("tower") or {}).get("record")}
    for v, t in towers.items():
        b, a = t["before"], t["after"]
        lines += ["", f"The {v} variant's vision tower: tiny-clip's, refined by `python -m course_tools.train pbe-tower "
                  f"--scenes {t['scenes']} --steps {t['steps']} --batch {t['batch']} --lr {t['lr']:g}` "
                  f"(`course_tools/train/pbe_tower.py`: linear read-out heads for shape, colour and pattern on the class "
                  f"token, trained with the tower on {t['crops']:,} augmented object crops of training scenes, "
                  f"{t['minutes']} min on a 2-core CPU), then frozen. tiny-clip's contrastive task is solved by colour, "
                  f"so its class token hardly held the outline; a web-trained CLIP, the paper's, does. Linear probes "
                  f"on object crops of evaluation scenes, before -> after: shape {100 * b['shape']:.0f}% -> "
                  f"{100 * a['shape']:.0f}%, colour {100 * b['color']:.0f}% -> {100 * a['color']:.0f}%, pattern "
                  f"{100 * b['pattern']:.0f}% -> {100 * a['pattern']:.0f}% (chance 17%, 17%, 50%); the canonical "
                  f"exemplars' shape variance along one axis {b['shape_axis']:.2f} -> {a['shape_axis']:.2f} (0.20 "
                  f"when the six shapes are equally apart, 1 on a line). It is stored with the trained parts."]
    if len({_unet_parts(d) for d in records.values()}) > 1:
        lines += ["", "The two variants differ in the UNet parts they trained as well as in their condition: two whole "
                  "UNets would not fit the course's 40 MB of committed weights."]
    measured = [(v, d["measured"]) for v, d in records.items() if d.get("measured")]
    if measured:  # recorded in <variant>.json after a bench run; retraining rewrites the record without it
        zoom = all("zoom_shape+color" in m for _, m in measured)
        lines += ["", f"Measured on these weights by `python -m course_tools.bench pbe` ({measured[0][1].get('cases', 20)} "
                  "held-out cases, the exemplar cropped to its box as in training, the mask the box of the object it "
                  "replaces, 50 steps, guidance 5; bars: shape + colour >= 80%, unmasked region >= 30 dB"
                  + (f"; zoomed: only a square around the mask, {measured[0][1]['zoom_context']:g} times its side, painted "
                     "at the model's resolution and its masked pixels put back, `paint_by_example_zoomed`" if zoom else "")
                  + "):", "",
                  "| variant | exemplar shape + colour in the mask | colour alone | unmasked region PSNR | "
                  "with `blend_known`: shape + colour / colour / PSNR |" + (" zoomed: shape + colour / colour |" if zoom else ""),
                  "|---|---|---|---|---|" + ("---|" if zoom else "")]
        lines += [f"| {v} | {m['shape+color']:.0f}% | {m['color']:.0f}% | {m['bg']:.1f} dB | "
                  f"{m['blend_shape+color']:.0f}% / {m['blend_color']:.0f}% / {m['blend_bg']:.1f} dB |"
                  + (f" {m['zoom_shape+color']:.0f}% / {m['zoom_color']:.0f}% |" if zoom else "") for v, m in measured]
    lines += ["", "20% of conditions replaced by the learnable null vector. Measured quality: "
              "`python -m course_tools.bench pbe` (and notebook 05). Training continues from `runs/pbe-<variant>` "
              "when run again with a larger `--steps`.", ""]
    (folder / "README.md").write_text("\n".join(lines))
