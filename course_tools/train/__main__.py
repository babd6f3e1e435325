"""Train the embedded models: ``python -m course_tools.train STAGE [options]``.

Stages, in order: ``clip`` (tiny-clip), ``clip-text`` (its text tower refined with hard negatives
and a token-identity term, so shape words stay apart), ``clip-vision`` (its vision tower refined
with hard negative captions and an attribute read-out, so the class token holds the shape), ``vae``
(tiny-sd's VAE), ``vae-decoder`` (its decoder fine-tuned, encoder frozen), ``unet`` (tiny-sd's UNet),
``assemble`` (write data/models/tiny-sd and data/models/tiny-clip in fp16), ``card`` (measure them
and write the model card). ``all`` runs them in that order. Lessons' own weights: ``concept`` (notebook 04's
concept LoRA / Textual Inversion, ``--method``), ``pbe-tower`` (a copy of tiny-clip's vision tower
refined on object crops, for Paint by Example's condition) and ``pbe`` (notebook 05's Paint by Example,
``--method bottleneck|naive``).
Every stage is seeded, stops at its time budget (``--minutes``), saves a resumable checkpoint under
``runs/`` and continues from it when run again. Runs under ``accelerate launch -m course_tools.train``
as well as plain ``python -m``; on a GPU add ``--no-bf16`` if the card has no bf16.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from course_lib.shapes.scenery import WORLDS


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m course_tools.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["clip", "clip-text", "clip-vision", "vae", "vae-decoder", "unet", "assemble", "card",
                                     "all", "concept", "pbe-tower", "pbe"])
    p.add_argument("--minutes", type=float, default=None, help="time budget of this run in minutes (default: the stage's own, "
                        "e.g. pbe 20, pbe-tower 40, unet 100); a run that spends it stops early and says so")
    p.add_argument("--steps", type=int, default=None, help="total steps of the schedule")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--more-threads-when", type=Path, default=None,
                   help="vae, vae-decoder, unet: switch to 2 threads once this file exists (e.g. when a parallel stage ends)")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--init-from", type=Path, default=None,
                   help="vae: refit this VAE (a folder, e.g. data/models/tiny-sd/vae) instead of training afresh; "
                        "unet: start from these UNet weights when runs/unet has no checkpoint "
                        "(e.g. data/models/tiny-sd/unet on a machine without the training runs); "
                        "pbe: start from these trained parts (a <variant>.safetensors) when runs/pbe-<variant> has no checkpoint")
    p.add_argument("--oversample", default=None, metavar="SHAPE:FACTOR,...",
                   help="unet: draw scenes naming these shapes FACTOR times as often, e.g. hexagon:2,star:1.5; "
                        "pbe: the same for training pairs whose object has these shapes")
    p.add_argument("--train-text", action="store_true",
                   help="unet: fine-tune the text encoder (from tiny-clip's text tower) with the UNet, "
                        "in runs/unet-text (starts from runs/unet's EMA weights when they exist)")
    p.add_argument("--text-lr-scale", type=float, default=0.5,
                   help="unet --train-text: the text encoder's learning rate as a multiple of --lr")
    p.add_argument("--world", default="plain", choices=WORLDS,
                   help="vae, unet: the scenes' unnamed free content (course_lib.shapes.scenery; plain: none)")
    p.add_argument("--edge-weight", type=float, default=0.0, help="vae: weight of the edge loss (sharp outlines)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="lora", help="concept: lora | textual_inversion; pbe: bottleneck | naive")
    p.add_argument("--unet-parts", default="all", choices=["all", "attention"],
                   help="pbe: train the whole UNet (the paper) or only its input convolution and attention layers")
    p.add_argument("--device", default=None, help="pbe: cpu or cuda (default: cuda when torch sees a GPU)")
    p.add_argument("--workers", type=int, default=0,
                   help="pbe: data-loader processes making the training pairs (0: in this process, fixed order)")
    p.add_argument("--encoder", default="head", choices=["head", "all"],
                   help="pbe: train only the image encoder's head (the paper) or its CLIP vision tower too")
    p.add_argument("--tower", type=Path, default=None,
                   help="pbe: the image encoder's vision tower from this file (written by the pbe-tower stage, "
                        "runs/pbe-tower/tower.safetensors) instead of tiny-clip's")
    p.add_argument("--cover-masks", action="store_true",
                   help="pbe: Bezier masks that bulge outward and always hide the whole object box")
    p.add_argument("--scenes", type=int, default=None, help="vae, unet: training scenes (default 40000); "
                        "pbe: rendered training scenes (default 6000); "
                        "pbe-tower: scenes whose objects are cropped (default 20000)")
    p.add_argument("--out", type=Path, default=None, help="pbe: folder for the trained weights (default data/models/pbe-tiny); "
                        "pbe-tower: folder for the tower and its checkpoint (default runs/pbe-tower)")
    p.add_argument("--snr-gamma", type=float, default=None,
                   help="pbe: min-SNR-gamma loss weighting, as tiny-sd's UNet (5); default: the paper's plain loss")
    p.add_argument("--mask-weight", type=float, default=1.0,
                   help="pbe: the loss under the mask (what is painted) weighs this many times as much (default 1)")
    p.add_argument("--prior-weight", type=float, default=None,
                   help="concept (lora, dreambooth): weight of the prior-preservation loss (default 1.0; 0 = none)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    kw = {k: v for k, v in dict(minutes=a.minutes, steps=a.steps, batch=a.batch, lr=a.lr).items() if v is not None}
    kw.update(seed=a.seed)
    over = None
    if a.oversample:
        try:
            over = {k.strip(): float(v) for k, v in (x.split(":") for x in a.oversample.split(","))}
        except ValueError:
            p.error(f"--oversample {a.oversample!r}: write SHAPE:FACTOR pairs, e.g. hexagon:2,star:1.5")
    stages = (["clip", "clip-text", "clip-vision", "vae", "vae-decoder", "unet", "assemble", "card"] if a.stage == "all"
              else [a.stage])

    def on_step(step, flag=a.more_threads_when):
        if flag is not None and step % 50 == 0 and flag.exists() and torch.get_num_threads() < 2:
            torch.set_num_threads(2)

    for stage in stages:
        if stage == "clip":
            from .clip import train_clip
            print("tiny-clip ->", train_clip(bf16=not a.no_bf16, **kw))
        elif stage == "clip-text":
            from .clip_text import refine_text
            print("tiny-clip text tower ->", refine_text(**kw))
        elif stage == "clip-vision":
            from .clip_vision import refine_vision
            print("tiny-clip vision tower ->", refine_vision(**kw))
        elif stage == "vae":
            from .vae import train_vae
            print("vae ->", train_vae(bf16=not a.no_bf16, on_step=on_step, world=a.world, init_from=a.init_from,
                                      edge_weight=a.edge_weight, **({"n_scenes": a.scenes} if a.scenes else {}), **kw))
        elif stage == "vae-decoder":
            from .vae import train_decoder
            print("vae decoder ->", train_decoder(bf16=not a.no_bf16, on_step=on_step, **kw))
        elif stage == "unet":
            from .unet import train_unet
            print("unet ->", train_unet(bf16=not a.no_bf16, init_from=a.init_from, train_text=a.train_text,
                                      text_lr_scale=a.text_lr_scale, oversample=over, on_step=on_step,
                                      world=a.world, **({"n_scenes": a.scenes} if a.scenes else {}), **kw))
        elif stage == "assemble":
            from .assemble import assemble
            print("models ->", assemble())
        elif stage == "concept":
            from .concept import train_concept
            print("concept ->", train_concept(method=a.method, prior_weight=a.prior_weight, **kw))
        elif stage == "pbe":
            from .pbe import train_pbe
            print("paint by example ->", train_pbe(variant=a.method if a.method != "lora" else "bottleneck",
                                                   bf16=not a.no_bf16, unet_parts=a.unet_parts, device=a.device,
                                                   workers=a.workers, out=a.out, encoder=a.encoder,
                                                   cover_masks=a.cover_masks, init_from=a.init_from, tower=a.tower,
                                                   oversample=over, snr_gamma=a.snr_gamma,
                                                   mask_weight=a.mask_weight,
                                                   **({"n_scenes": a.scenes} if a.scenes else {}), **kw))
        elif stage == "pbe-tower":
            from .pbe_tower import refine_tower
            print("Paint by Example's vision tower ->",
                  refine_tower(out=a.out, **({"n_scenes": a.scenes} if a.scenes else {}), **kw))
        elif stage == "card":
            from .card import write_card
            write_card()
            print("model card -> data/models/README.md")


if __name__ == "__main__":
    main()
