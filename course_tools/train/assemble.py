"""Write the shipped models from the training runs: data/models/tiny-sd and data/models/tiny-clip,
in diffusers / transformers format, fp16 safetensors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from .clip import image_processor
from .clip_vision import vision_source
from .common import MODELS, RECORD_STAGES, RUNS, run_record
from .unet import noise_scheduler_config, text_source, unet_config


def assemble(out: Path = MODELS, use_ema: bool = True) -> Path:
    """Stages whose run is not on this machine (``runs/``) are taken from the shipped models, so
    ``assemble`` after a UNet run continued with ``--init-from data/models/tiny-sd/unet`` works;
    every part is loaded before anything is overwritten. ``tiny-sd/training.json`` keeps each
    stage's training record for the model card."""
    out = Path(out)
    shipped = MODELS / "tiny-sd"
    clip_dir, vae_dir, unet_ckpt = text_source(), RUNS / "vae" / "final", RUNS / "unet" / "ckpt"
    if (RUNS / "vae-decoder" / "final" / "config.json").exists():  # the decoder fine-tuned, same encoder
        vae_dir = RUNS / "vae-decoder" / "final"
    elif not (vae_dir / "config.json").exists():
        vae_dir = shipped / "vae"
    if (RUNS / "unet-text" / "ckpt" / "state.json").exists():  # UNet and text encoder trained together
        unet_ckpt = RUNS / "unet-text" / "ckpt"
    if not (unet_ckpt / "state.json").exists():
        raise FileNotFoundError(f"no UNet run in {unet_ckpt}: train one first (`python -m course_tools.train unet`)")
    state = json.loads((unet_ckpt / "state.json").read_text())
    weights = load_file(unet_ckpt / ("ema.safetensors" if use_ema else "model.safetensors"))
    joint = state.get("train_text", False)
    records = {stage: run_record(stage) for stage in RECORD_STAGES}
    records = {k: v for k, v in records.items() if v}
    # everything read before anything in out/ is replaced (the sources may be the shipped folders)
    clip = CLIPModel.from_pretrained(clip_dir)
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    vae = AutoencoderKL.from_pretrained(vae_dir)
    vision_dir = vision_source()
    refined = CLIPModel.from_pretrained(vision_dir) if Path(vision_dir) != Path(clip_dir) else None
    sd = out / "tiny-sd"
    if sd.exists():
        shutil.rmtree(sd)
    # text encoder = tiny-clip's text tower, tokenizer = tiny-clip's tokenizer
    text = CLIPTextModel(clip.config.text_config)
    getattr(text, "text_model", text).load_state_dict(clip.text_model.state_dict())
    if joint:
        text.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("text.")})
    text.half().save_pretrained(sd / "text_encoder")
    legacy_text_keys(sd / "text_encoder" / "model.safetensors")
    tokenizer.save_pretrained(sd / "tokenizer")
    vae.register_to_config(scaling_factor=float(state["scaling_factor"]))
    vae.half().save_pretrained(sd / "vae")
    unet = UNet2DConditionModel(**unet_config())
    unet.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("unet.")} if joint else weights)
    unet.half().save_pretrained(sd / "unet")
    DDIMScheduler.from_config(noise_scheduler_config()).save_pretrained(sd / "scheduler")
    (sd / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "image_encoder": [None, None]}, indent=1))
    (sd / "training.json").write_text(json.dumps(records, indent=1))
    tc = out / "tiny-clip"
    if refined is not None:  # the refined vision tower, beside the text tower tiny-sd reads
        a, b = clip.text_model.state_dict(), refined.text_model.state_dict()
        if any(not torch.equal(a[k].float(), b[k].float()) for k in a):
            raise ValueError(f"{vision_dir} was refined beside another text tower than {clip_dir}; "
                             "run `python -m course_tools.train clip-vision` again")
        clip = refined
    if tc.exists():
        shutil.rmtree(tc)
    clip.half().save_pretrained(tc)
    tokenizer.save_pretrained(tc)
    image_processor().save_pretrained(tc)
    return out


def legacy_text_keys(path: Path):
    """Store CLIPTextModel weights under the ``text_model.`` prefix that Stable Diffusion's text
    encoders use, so that both transformers 4.x and 5.x load them."""
    sd = load_file(path)
    save_file({k if k.startswith("text_model.") else "text_model." + k: v for k, v in sd.items()}, path,
              metadata={"format": "pt"})


def weights_megabytes(folder: Path = MODELS) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors")) / 2**20


if __name__ == "__main__":
    print(assemble(), f"{weights_megabytes():.1f} MB")
