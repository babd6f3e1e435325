"""Where an attention layer sits in a UNet, parsed once from its diffusers processor name.

``down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor`` -> place ``down``, block 1,
attention 0, transformer block 0, ``cross`` attention (``attn1`` is self-attention), at the
resolution of down block 1. Nothing counts layers by hand, so the same code reads tiny-sd,
SD 1.5, SD 2.1 (linear projections, per-block head counts) and SDXL layouts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(
    r"^(?P<place>down_blocks|mid_block|up_blocks)(?:\.(?P<block>\d+))?\.attentions\.(?P<att>\d+)"
    r"\.transformer_blocks\.(?P<tb>\d+)\.attn(?P<which>[12])\.processor$")


@dataclass(frozen=True)
class Layer:
    name: str
    place: str  # "down" | "mid" | "up"
    block: int  # index of the down/up block (0 for mid)
    attention: int  # index of the transformer model inside the block
    transformer_block: int
    kind: str  # "self" | "cross"
    level: int  # how many times the latent has been halved at this layer
    resolution: int  # side of the square feature map at the model's default sample size

    @property
    def is_self(self) -> bool:
        return self.kind == "self"

    @property
    def is_cross(self) -> bool:
        return self.kind == "cross"

    def __str__(self) -> str:
        where = self.place if self.place == "mid" else f"{self.place}{self.block}"
        return f"{where}.{self.attention}.{self.transformer_block} {self.kind} {self.resolution}x{self.resolution}"


def parse_layer(name: str, n_blocks: int, sample_size: int) -> Layer | None:
    """Parse one processor name; ``None`` for processors that are not UNet transformer attention."""
    m = _NAME.match(name)
    if not m:
        return None
    place = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}[m["place"]]
    block = int(m["block"] or 0)
    if place == "down":
        level = block
    elif place == "mid":
        level = n_blocks - 1
    else:
        level = n_blocks - 1 - block
    return Layer(name=name, place=place, block=block, attention=int(m["att"]), transformer_block=int(m["tb"]),
                 kind="self" if m["which"] == "1" else "cross", level=level,
                 resolution=max(1, sample_size // (2 ** level)))


def unet_layers(unet) -> dict[str, Layer]:
    """Every transformer attention layer of a UNet2DConditionModel, by processor name."""
    cfg = unet.config
    n = len(cfg.block_out_channels)
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    out = {}
    for name in unet.attn_processors:
        layer = parse_layer(name, n, size)
        if layer is not None:
            out[name] = layer
    return out
