"""Write data/models/README.md, the model card, from the training records and fresh measurements.

``python -m course_tools.train.card`` (after ``assemble``). Everything in the card is measured by this
script or read from the checkpoints' state.json files; nothing is typed in by hand.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from course_lib.models import load_clip, load_pipeline, parameter_count
from .assemble import MODELS, weights_megabytes
from .clip import clip_retrieval_accuracy
from .common import RUNS, run_record
from .unet import earlier_runs, unet_config, word_similarity
from .vae import vae_config, vae_oracle_accuracy, vae_quality


def _state(stage: str) -> dict:
    return run_record(stage)


def _minutes(state: dict) -> float:
    return state.get("seconds_total", state.get("seconds_this_run", float("nan"))) / 60


def vision_refinement_text(clip, s_vision: dict, n_probe: int = 720) -> str:
    """The card's paragraph on the vision tower's refinement (``clip-vision``), with the class-token
    probe measured on ``clip`` and, when the run's starting model is still there, on that one."""
    from transformers import CLIPModel

    from .clip_vision import class_token_probe
    probe = class_token_probe(clip, n=n_probe)
    src = Path(s_vision.get("text", ""))
    before = (class_token_probe(CLIPModel.from_pretrained(src, torch_dtype=torch.float32).eval(), n=n_probe)
              if s_vision.get("text") and src.exists() else None)
    was = f"from {100 * before['shape']:.0f}% (colour {100 * before['color']:.0f}%) before it " if before else ""
    return f"""
**Vision tower refinement** (`python -m course_tools.train clip-vision`, `course_tools/train/clip_vision.py`).
Paint by Example conditions on the vision tower's class token alone, and after contrastive training
that token held the colour but only part of the shape (random in-batch captions are told apart by
colour, background and position). The vision tower (text tower frozen) was then trained
{s_vision.get('step', '?')} steps ({_minutes(s_vision):.0f} minutes, batch {s_vision.get('batch', '?')}, AdamW lr
{s_vision.get('lr', '?')}) on the contrastive loss with the same **hard negative captions** plus an
**attribute read-out** term (two linear heads, discarded afterwards, must recover from the class token
which shapes and which colours the caption names). A linear probe reads an exemplar's shape from the
class token in **{100 * probe['shape']:.0f}%** of held-out rendered single objects {was}(colour
{100 * probe['color']:.0f}%; chance 17%; `clip_vision.class_token_probe`, {n_probe} exemplars).
"""


def write_card(out: Path = MODELS / "README.md", n_generations: int = 200, hardware: str | None = None) -> str:
    from ..bench.base import generation_accuracy

    torch.manual_seed(0)
    pipe = load_pipeline("tiny-sd", device="cpu", dtype="float32")
    clip, tok, _ = load_clip("tiny-clip", device="cpu", dtype="float32")
    retrieval = clip_retrieval_accuracy(clip, tok, 256)
    vq = vae_quality(pipe.vae, 200)
    s_dec = _state("vae-decoder")
    ceiling = vae_oracle_accuracy(pipe.vae, 120)
    share, _, _ = generation_accuracy(pipe, n=n_generations, steps=50, guidance=7.5)
    s_clip, s_vae, s_unet, s_joint = _state("clip"), _state("vae"), _state("unet"), _state("unet-text")
    shapes = ["circle", "square", "triangle", "star", "hexagon", "cross"]
    off_diag = lambda m: float(m[~torch.eye(len(shapes), dtype=bool)].max())  # noqa: E731
    sim_clip = off_diag(word_similarity(clip.text_model if hasattr(clip, "text_model") else clip, tok, shapes))
    sim_sd = off_diag(word_similarity(pipe.text_encoder, pipe.tokenizer, shapes))
    s_text = _state("clip-text")
    sim_before = None
    if (RUNS / "clip" / "final").exists():
        from transformers import CLIPModel, CLIPTokenizer
        before = CLIPModel.from_pretrained(RUNS / "clip" / "final", torch_dtype=torch.float32).eval()
        sim_before = off_diag(word_similarity(before.text_model, CLIPTokenizer.from_pretrained(RUNS / "clip" / "final"),
                                              shapes))
    cos_before = sim_before if sim_before is not None else s_text.get("cosine_before")  # recorded when runs/ is gone
    cos_before = f"**{cos_before:.3f}**" if cos_before is not None else "0.99"
    refined = f"""**Text tower refinement** (`python -m course_tools.train clip-text`, `course_tools/train/clip_text.py`).
The contrastive loss only reads the pooled end-of-text state, and random in-batch negatives differ in
colour, background or position anyway, so the per-word hidden states — which the UNet's
cross-attention reads — never needed the shape: the most similar pair of shape words in the same
caption ("a red ... on a white background") had hidden states at cosine
{cos_before} after contrastive training, and a UNet
conditioned on them drew one amoeba-like blob for several shape words. The text tower (vision tower
frozen) was then trained {s_text.get('step', '?')} steps ({_minutes(s_text):.0f} minutes, batch {s_text.get('batch', '?')}, AdamW lr
{s_text.get('lr', '?')}) on the contrastive loss with **hard negatives** (each caption with one shape word,
one colour word, or two objects' colours swapped) plus a **token-identity** term (a linear read-out,
discarded afterwards, must recover every token from its final hidden state). The most similar pair of
shape words is now at cosine **{sim_clip:.3f}**.
""" if s_text else ""
    s_vision = _state("clip-vision")
    vision = vision_refinement_text(clip, s_vision) if s_vision else ""
    joint = bool(s_joint.get("train_text"))
    text_row = ("tiny-clip's text tower, fine-tuned with the UNet (stage 2)" if joint
                else "tiny-clip's text tower (refined), frozen" if s_text else "tiny-clip's text tower, frozen")
    joint_text = "" if not joint else f"""
**Stage 2, UNet and text encoder together** (`python -m course_tools.train unet --train-text`): the
frozen contrastive text tower hardly tells shape words apart — the most similar pair of shape words
in the same caption ("a red ... on a white background") has hidden states at cosine
**{sim_clip:.3f}** in tiny-clip — so the UNet learned colours and backgrounds but not shapes. From the
stage-1 EMA weights, the UNet and the text encoder (learning rate x{s_joint.get('text_lr_scale', '?')}) were
trained together for {s_joint.get('step', '?')} more steps ({_minutes(s_joint):.0f} minutes; AdamW lr
{s_joint.get('lr', '?')}, 500 warm-up steps, cosine decay over {s_joint.get('steps_planned', '?')} steps, batch
{s_joint.get('batch', '?')}); the captions then run through the text encoder in the loop. tiny-sd's text
encoder now puts its most similar pair of shape words at cosine **{sim_sd:.3f}**. tiny-clip keeps its own
text tower, so tiny-sd's text encoder and tiny-clip's are no longer the same weights.
"""
    decoder_text = ""
    if s_dec:
        src = Path(s_dec.get("source", ""))
        before = (vae_oracle_accuracy(AutoencoderKL.from_pretrained(src, torch_dtype=torch.float32).eval(), 120)
                  if s_dec.get("source") and (src / "config.json").exists()
                  else {"all": s_dec["ceiling_before"]} if "ceiling_before" in s_dec else None)
        decoder_text = f"""
**Decoder fine-tune** (`python -m course_tools.train vae-decoder`): the encoder frozen, so the latents
(and the UNet and everything trained on them) are unchanged; the decoder and `post_quant_conv` trained
{s_dec.get('step', '?')} more steps ({_minutes(s_dec):.0f} minutes, AdamW lr {s_dec.get('lr', '?')} with cosine decay over
{s_dec.get('steps', '?')} steps, batch {s_dec.get('batch', '?')}, whole scenes) on L1 + MSE + {s_dec.get('edge_weight', '?')} x an edge
loss (L1 between the images' horizontal and vertical pixel differences, which grows when corners are
rounded off), with the encoder's latents perturbed by Gaussian noise of up to
{s_dec.get('latent_noise', '?')} latent standard deviations, as the UNet's latents never lie exactly on the encoder's
manifold.{f" The round-trip ceiling below was {100 * before['all']:.1f}% before it." if before else ""}
"""
    ceiling_shapes = ", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(ceiling["by_shape"].items()))
    chain = earlier_runs(s_unet)

    def tower(run):
        t = str(run.get("text") or "")
        is_refined = "clip-text" in t or (Path(t).name == "tiny-clip" and bool(s_text))  # shipped = refined
        return ("on the refined text tower" if is_refined else
                "on the text tower before its refinement" if "clip" in t else "")

    init_text = "" if not chain else ", continuing from earlier runs on the same data: " + ", then ".join(
        f"{r['step']:,} steps in {(r.get('seconds_total') or float('nan')) / 60:.0f} minutes"
        + (f" {tower(r)}" if tower(r) else "") for r in chain) + (f"; this run {tower(s_unet)}" if tower(s_unet) else "")
    over = s_unet.get("oversample") or {}
    over_text = ("" if not over else " In this run scenes whose caption names "
                 + ", ".join(f"a {k} ({v:g}x)" for k, v in over.items())
                 + " were drawn that many times as often as the rest, as those are the shapes it drew wrong most often"
                 " (`--oversample`).")
    earlier_minutes = sum((r.get("seconds_total") or 0) for r in chain) / 60
    hardware = hardware or f"{os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}"
    params = {n: parameter_count(getattr(pipe, n)) / 1e6 for n in ("vae", "text_encoder", "unet")}
    shape_status = "" if share["shape"] >= 0.9 else (
        f"- **Shapes are not learned yet**: the UNet gets colours and backgrounds right but draws the "
        f"right shape in only {100 * share['shape']:.0f}% of generations, short of the course's 90% bar. "
        "It needs more training: `python -m course_tools.train unet --steps N --minutes M` resumes from "
        "`runs/unet/ckpt` (on a machine without it, add `--init-from data/models/tiny-sd/unet`).\n")
    card = f"""# Embedded models: tiny-sd and tiny-clip

Both are trained by this repository's own scripts (`course_tools/train`) on **Shapes World**, the
course's procedural dataset, and stored as fp16 safetensors (all weights in `data/models`, Paint by Example's and
the concepts' included: {weights_megabytes():.1f} MB).
Load them with `course_lib.load_pipeline("tiny-sd")` and `course_lib.load_clip("tiny-clip")`, or
directly with `diffusers.StableDiffusionPipeline.from_pretrained("data/models/tiny-sd")` and
`transformers.CLIPModel.from_pretrained("data/models/tiny-clip")`.

This card is written by `python -m course_tools.train.card`; every figure below is measured by it, and
every training figure (steps, minutes, settings) comes from the training records that `assemble` keeps
beside the weights in `tiny-sd/training.json`.

## Data

Shapes World scenes at 64x64 (`course_lib.shapes`), rendered with 4x supersampling: 1-3 objects
(60% / 30% / 10%) of 6 shapes (circle, square, triangle, star, hexagon, cross) in 6 colours (red,
yellow, green, cyan, blue, purple), sizes small/medium/large, aspects tall/wide, a striped pattern,
random rotation, on 4 backgrounds (white, gray, checkered, gradient); positions and relations
(left of, right of, above, below, in front of) in the captions. 40,000 training scenes, seeds
0-39,999. The **held-out concept** — the heart shape and the dotted pattern (the concept-learning
lessons use a purple dotted heart under the token `sks`) — appears in no training image or caption.
Evaluation scenes use seeds from 10,000,000 on.

## tokenizer

A CLIP-format BPE (`CLIPTokenizer`) learned on the Shapes World word list until every caption word
is **one token** ({len(pipe.tokenizer)} tokens; `model_max_length` {pipe.tokenizer.model_max_length}). With CLIP's
49k-token vocabulary the tiny text encoder would see only a handful of ids; with this one, each
word has one cross-attention map, which is what Prompt-to-Prompt's word-to-token lessons need.
Other text still tokenizes (into pieces), as with CLIP.

## tiny-clip (`transformers.CLIPModel`)

Text tower: 4 layers, width 128, 4 heads, causal, max 32 positions. Vision tower: ViT, 64x64
input, 8x8 patches, 4 layers, width 128. Projection 128. {parameter_count(clip) / 1e6:.2f} M parameters.
Trained contrastively (CLIP loss) on the 40,000 (image, caption) pairs: batch 128, AdamW lr 5e-4,
weight decay 0.1, cosine schedule, bf16 autocast, {s_clip.get('step', '?')} steps, {_minutes(s_clip):.0f} minutes.

{refined}{vision}
- image -> caption retrieval, top-1 among 256 held-out scenes: **{100 * retrieval:.1f}%**

Its text tower initialises tiny-sd's text encoder (as CLIP's is Stable Diffusion's); its vision tower
conditions Paint by Example and scores text alignment in Imagic's curves.

## tiny-sd (`diffusers.StableDiffusionPipeline`)

| part | architecture | parameters |
|---|---|---|
| VAE (`AutoencoderKL`) | 64x64x3 <-> 16x16x4, blocks {vae_config()['block_out_channels']}, 1 layer per block | {params['vae']:.2f} M |
| text encoder (`CLIPTextModel`) | {text_row} | {params['text_encoder']:.2f} M |
| UNet (`UNet2DConditionModel`) | 16x16x4 latents, blocks {unet_config()['block_out_channels']}, cross-attention at 16x16, 8x8 and the 4x4 mid block, 4 heads | {params['unet']:.2f} M |
| scheduler | DDIM, Stable Diffusion's scaled-linear betas (0.00085-0.012, 1000 steps) | |

**VAE**: L1 + MSE + 1e-6 KL, AdamW lr 1e-3, 32x32 random crops for 70% of the schedule then whole
scenes, bf16 autocast: {s_vae.get('step', '?')} steps, {_minutes(s_vae):.0f} minutes.
Latent scaling factor {pipe.vae.config.scaling_factor:.4f} (1 / std of the training latents).
{decoder_text}
- reconstruction PSNR on 200 held-out scenes: **{vq['psnr']:.1f} dB**
- mean absolute error per channel (R, G, B, of 255): {', '.join(f'{e:.2f}' for e in vq['channel_mae'])}
- held-out single-object scenes the oracle still reads right (shape, colour, background) after a VAE
  round trip, encode then decode, with no diffusion: **{100 * ceiling['all']:.1f}%** ({ceiling_shapes}). This is the
  ceiling of the generation figure below: a latent the VAE cannot draw readably fails there too.

**UNet**: epsilon prediction, min-SNR-5 weighting, 10% caption dropout (empty caption) for
classifier-free guidance, AdamW lr {s_unet.get('lr', '?')} with 500 warm-up steps and cosine decay
over {s_unet.get('steps_planned', '?')} steps, batch {s_unet.get('batch', '?')}, gradient clipping 1.0, bf16 autocast, EMA 0.999
(the EMA weights are shipped). The VAE latents and the text encoder's hidden states of all 40,000
scenes are computed once before the loop. Trained {s_unet.get('step', '?')} steps in {_minutes(s_unet):.0f} minutes{init_text}.{over_text}
{joint_text}
- generations judged right by the oracle (shape, colour and background all right), 200 held-out
  single-object prompts, 50 DDIM steps, guidance 7.5: **{100 * share['all']:.1f}%**
  (shape {100 * share['shape']:.1f}%, colour {100 * share['color']:.1f}%, background {100 * share['background']:.1f}%)

More rows (DDIM inversion, seconds per image): `python -m course_tools.bench base`.

## Training time and hardware

All stages ran on {hardware}, beside other work on the same machine. CLIP
{_minutes(s_clip):.0f} min and the VAE {_minutes(s_vae):.0f} min ran in parallel (one core each){f", the VAE decoder's fine-tune {_minutes(s_dec):.0f} min" if s_dec else ""}, then the UNet
{_minutes(s_unet) + earlier_minutes:.0f} min in all on one or two cores{f", the text refinement {_minutes(s_text):.0f} min" if s_text else ""}{f", the vision refinement {_minutes(s_vision):.0f} min" if s_vision else ""}{f", then stage 2 {_minutes(s_joint):.0f} min on one core" if joint else ""}. Reproduce with `python -m course_tools.train all` (resumable; each stage
takes `--minutes`); on a GPU the same scripts run under `accelerate launch -m course_tools.train`.

## Limits

{shape_status}- 64x64 images, one to three flat objects: a teaching model, not an image generator.
- Generated objects can be blurred or mis-shaped; the oracle then answers "unknown" and the case
  counts as a failure in every figure of the course.
- The text encoder was trained on Shapes World captions only: words outside the vocabulary are
  split into pieces it has never seen and have no reliable meaning.
"""
    out.write_text(card)
    return card


if __name__ == "__main__":
    print(write_card())
