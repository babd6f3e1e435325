"""Paint by Example's model, built from the course's parts: the image encoder (diffusers'
``PaintByExampleImageEncoder``, or the naive all-tokens one), the 9-channel inpainting UNet, the
pipeline, and which of their parameters training changes. Also the import shim that lets diffusers
>= 0.34 load the encoder under the name the released checkpoint gives it.
"""
from __future__ import annotations

import sys

import torch


# ----------------------------------------------------------------------------- encoders
def image_encoder_class():
    """diffusers' ``PaintByExampleImageEncoder``.

    The released checkpoint's ``model_index.json`` names it ``["paint_by_example",
    "PaintByExampleImageEncoder"]``; diffusers >= 0.34 moved that module among its deprecated
    pipelines and no longer finds it under that name. Importing this module registers the moved
    module under its old name, so ``PaintByExamplePipeline.from_pretrained`` loads both the released
    checkpoint and the course's (saved with the same name) unchanged.
    """
    try:
        import diffusers.pipelines.paint_by_example as module
        return module.PaintByExampleImageEncoder
    except ImportError:
        pass
    import types

    from diffusers.pipelines.deprecated.paint_by_example.image_encoder import PaintByExampleImageEncoder
    from transformers import PreTrainedModel
    if "paint_by_example" not in sys.modules:
        # the name model_index.json uses, exposing the class and the base diffusers loads it through
        shim = types.ModuleType("paint_by_example", "PaintByExampleImageEncoder under its pre-0.34 module name")
        shim.PaintByExampleImageEncoder, shim.PreTrainedModel = PaintByExampleImageEncoder, PreTrainedModel
        sys.modules["paint_by_example"] = shim
    return PaintByExampleImageEncoder


def image_encoder_config(clip_vision_config, proj_size: int):
    cfg = clip_vision_config.__class__.from_dict(clip_vision_config.to_dict())
    cfg.projection_dim = proj_size
    return cfg


def build_image_encoder(clip, proj_size: int, variant: str = "bottleneck"):
    """A Paint-by-Example image encoder whose vision tower is ``clip``'s (a ``CLIPModel``).

    ``bottleneck``: diffusers' ``PaintByExampleImageEncoder`` (class token -> mapper -> LayerNorm ->
    projection, plus the learnable null vector). ``naive``: :class:`NaiveImageEncoder`, all tokens.
    """
    PaintByExampleImageEncoder = image_encoder_class()
    cfg = image_encoder_config(clip.config.vision_config, proj_size)
    if variant == "bottleneck":
        enc = PaintByExampleImageEncoder(cfg, proj_size=proj_size)
    elif variant == "naive":
        enc = NaiveImageEncoder(cfg, proj_size=proj_size)
    else:
        raise ValueError(f"variant must be 'bottleneck' or 'naive', got {variant!r}")
    vision_tower(enc).load_state_dict(clip.vision_model.state_dict())
    return enc.to(clip.dtype)


def vision_tower(encoder):
    """The CLIP vision tower inside a Paint by Example image encoder (transformers 5 flattened
    ``CLIPVisionModel``: the tower is the model itself there)."""
    return getattr(encoder.model, "vision_model", encoder.model)


class NaiveImageEncoder(torch.nn.Module):
    """The naive condition (paper Sec. 3.2): every token of the CLIP image encoder's last layer
    (class token and all patch tokens), LayerNorm, projection — no bottleneck."""

    def __init__(self, config, proj_size: int):
        super().__init__()
        from transformers import CLIPVisionModel
        self.config = config
        self.model = CLIPVisionModel(config)
        self.final_layer_norm = torch.nn.LayerNorm(config.hidden_size)
        self.proj_out = torch.nn.Linear(config.hidden_size, proj_size)
        self.uncond_vector = torch.nn.Parameter(torch.randn((1, 1, proj_size)))

    @property
    def dtype(self) -> torch.dtype:
        return self.uncond_vector.dtype

    @property
    def device(self) -> torch.device:
        return self.uncond_vector.device

    def forward(self, pixel_values, return_uncond_vector=False):
        h = self.model(pixel_values=pixel_values).last_hidden_state
        h = self.proj_out(self.final_layer_norm(h))
        return (h, self.uncond_vector) if return_uncond_vector else h


UNET_PARTS = ("all", "attention")
ENCODER_PARTS = ("head", "all")


def trainable_names(name: str, unet_parts: str = "all", encoder: str = "head") -> bool:
    """Which parameters Paint by Example trains here: the whole UNet (``unet_parts="all"``, as the
    paper fine-tunes Stable Diffusion's) or only its input convolution (for the 5 new channels) and
    attention layers (``"attention"``, a seventh of the weights to store), and the encoder's head
    (mapper, LayerNorm, projection, null vector). The CLIP vision tower stays as initialised
    (``encoder="head"``: frozen, as in the paper) or is trained with the rest (``"all"``: the
    class token itself learns what the UNet needs of the exemplar); the VAE stays frozen."""
    if unet_parts not in UNET_PARTS:
        raise ValueError(f"unet_parts must be one of {UNET_PARTS}, got {unet_parts!r}")
    if encoder not in ENCODER_PARTS:
        raise ValueError(f"encoder must be one of {ENCODER_PARTS}, got {encoder!r}")
    if name.startswith("unet."):
        n = name[5:]
        return unet_parts == "all" or n.startswith("conv_in.") or ".attn1." in n or ".attn2." in n
    if name.startswith("image_encoder."):
        return encoder == "all" or not name.startswith("image_encoder.model.")
    return False


# ----------------------------------------------------------------------------- the UNet
def inpainting_unet(unet):
    """A 9-input-channel copy of a text-to-image UNet: latent (4) + masked-image latent (4) + mask (1);
    the new channels' input weights are zero, so at initialisation it computes what ``unet`` computes."""
    from diffusers import UNet2DConditionModel

    cfg = dict(unet.config)
    cfg["in_channels"] = 9
    new = UNet2DConditionModel.from_config(cfg).to(unet.device, unet.dtype)
    sd = unet.state_dict()
    w = sd.pop("conv_in.weight")
    missing, unexpected = new.load_state_dict(sd, strict=False)
    assert missing == ["conv_in.weight"] and not unexpected, (missing, unexpected)
    with torch.no_grad():
        new.conv_in.weight.zero_()
        new.conv_in.weight[:, :4] = w
    return new


# ----------------------------------------------------------------------------- pipelines
def build_pipeline(sd_pipe, clip, clip_processor, variant: str = "bottleneck"):
    """A ``PaintByExamplePipeline`` from a text-to-image pipeline (VAE, UNet -> 9 channels) and a CLIP
    model (vision tower -> image encoder), ready to train. ``variant="naive"`` gives the same
    pipeline class with the all-tokens encoder (course code only: diffusers cannot save it)."""
    from diffusers import DDIMScheduler, PaintByExamplePipeline

    unet = inpainting_unet(sd_pipe.unet)
    enc = build_image_encoder(clip, unet.config.cross_attention_dim, variant).to(unet.device)
    pipe = PaintByExamplePipeline(vae=sd_pipe.vae, image_encoder=enc, unet=unet,
                                  scheduler=DDIMScheduler.from_config(sd_pipe.scheduler.config),
                                  safety_checker=None, feature_extractor=clip_processor,
                                  requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.variant = variant
    return pipe


def trainable_state(pipe, unet_parts: str = "all", encoder: str = "head") -> dict[str, torch.Tensor]:
    """The trained parameters (see :func:`trainable_names`), keyed ``unet.*`` / ``image_encoder.*``."""
    out = {}
    for part in ("unet", "image_encoder"):
        for k, v in getattr(pipe, part).state_dict().items():
            if trainable_names(f"{part}.{k}", unet_parts, encoder):
                out[f"{part}.{k}"] = v
    return out


def load_trainable_state(pipe, state: dict[str, torch.Tensor]):
    for part in ("unet", "image_encoder"):
        sub = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
        missing, unexpected = getattr(pipe, part).load_state_dict(sub, strict=False)
        if unexpected:
            raise ValueError(f"unexpected {part} weights: {unexpected[:5]}")
    return pipe
