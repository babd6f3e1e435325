"""Randomly initialised pipelines built from config, for tests that must not reach a model hub.

``random_pipeline("tiny-sd")`` has tiny-sd's exact architecture; ``"sd15"`` and ``"sd21"`` keep
Stable Diffusion 1.5's / 2.1's block layout, head layout, projections and text width conventions at
reduced width (so they run on a CPU in a test).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .models import MODELS_DIR, noise_scheduler_config, unet_config, vae_config

TOKENIZER = MODELS_DIR / "tiny-sd" / "tokenizer"  # the embedded vocabulary (built by course_tools.train.tokenizer)

SD_UNETS = {
    # SD 1.5: 4 levels, 8 heads everywhere, conv projections, 768-wide text
    "sd15": dict(block_out_channels=[32, 64, 128, 128], attention_head_dim=8, cross_attention_dim=64,
                 use_linear_projection=False, norm_num_groups=8),
    # SD 2.1: per-block head counts [5, 10, 20, 20], linear projections, 1024-wide text
    "sd21": dict(block_out_channels=[40, 80, 160, 160], attention_head_dim=[5, 10, 20, 20],
                 cross_attention_dim=80, use_linear_projection=True, norm_num_groups=8),
}
SD_BLOCKS = dict(down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, layers_per_block=1)


def random_pipeline(kind: str = "tiny-sd", seed: int = 0, sample_size: int | None = None) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    tok = CLIPTokenizer.from_pretrained(TOKENIZER)
    if kind == "tiny-sd":
        ucfg, vcfg, width = unet_config(), vae_config(), 128
    elif kind in SD_UNETS:
        ucfg = dict(sample_size=sample_size or 16, in_channels=4, out_channels=4, **SD_BLOCKS, **SD_UNETS[kind])
        width = ucfg["cross_attention_dim"]
        vcfg = dict(vae_config(), block_out_channels=[16, 32, 32, 32],
                    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                    norm_num_groups=8)
    else:
        raise ValueError(f"unknown kind {kind!r}; use tiny-sd, sd15 or sd21")
    if sample_size:
        ucfg = dict(ucfg, sample_size=sample_size)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=tok.model_max_length,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**vcfg), text_encoder=text, tokenizer=tok, unet=UNet2DConditionModel(**ucfg),
        scheduler=DDIMScheduler.from_config(noise_scheduler_config()), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


FULL_SD_UNETS = {
    "sd15": dict(sample_size=64, block_out_channels=[320, 640, 1280, 1280], attention_head_dim=8,
                 cross_attention_dim=768, use_linear_projection=False, layers_per_block=2),
    "sd21": dict(sample_size=96, block_out_channels=[320, 640, 1280, 1280], attention_head_dim=[5, 10, 20, 20],
                 cross_attention_dim=1024, use_linear_projection=True, layers_per_block=2),
}


def full_size_sd_pipeline(kind: str = "sd15", seed: int = 0) -> StableDiffusionPipeline:
    """Stable Diffusion 1.5 / 2.1 at full size with random weights (for GPU benchmarks only:
    about 1 B parameters)."""
    torch.manual_seed(seed)
    tok = CLIPTokenizer.from_pretrained(TOKENIZER, model_max_length=77)
    u = FULL_SD_UNETS[kind]
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, down_block_types=SD_BLOCKS["down_block_types"],
                                up_block_types=SD_BLOCKS["up_block_types"], **u)
    width = u["cross_attention_dim"]
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=width, intermediate_size=4 * width, num_hidden_layers=12 if kind == "sd15" else 23,
        num_attention_heads=width // 64, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        layers_per_block=2, sample_size=u["sample_size"] * 8)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler.from_config(noise_scheduler_config()),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
