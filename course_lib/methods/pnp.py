"""Plug-and-Play diffusion features (Tumanyan et al., CVPR 2023): text-guided translation of a real
image by injecting the source's spatial features and self-attention into the target.

The source is DDIM-inverted; its branch (prompt 0) is held on the inverted trajectory at every step
while the targets are sampled from the same z_T in the same batched UNet call. For the first
``feature_steps`` of the steps the output of the decoder residual block(s) ``feature_layers`` in
the targets is replaced by the source's; for the first ``attention_steps`` the decoder's
self-attention queries and keys are the source's (SDPA(q_src, k_src, v_tgt)).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..attention import Layer
from ..attention.features import FeatureController
from ..inversion import ddim_invert
from ..sampling import sample


@dataclass
class PnPConfig:
    feature_steps: float = 0.8  # tau_f, fraction of the steps
    attention_steps: float = 0.5  # tau_A
    feature_layers: Sequence[str] = ("up_blocks.1.resnets.1",)
    attention_places: Sequence[str] = ("up",)

    def __post_init__(self):
        for name in ("feature_steps", "attention_steps"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} is a fraction of the steps in [0, 1], got {v}")

    def step_windows(self, num_steps: int) -> dict[str, int]:
        """tau_f and tau_A as step indices: features are injected in steps ``< feature``, self-attention
        queries and keys in steps ``< attention``."""
        return {"feature": int(round(self.feature_steps * num_steps)),
                "attention": int(round(self.attention_steps * num_steps))}


class PnPController(FeatureController):
    """Injects the source's (prompt 0's) features and self-attention queries and keys into the targets,
    in both halves of a guided batch, within the config's step windows."""

    def __init__(self, config: PnPConfig):
        super().__init__(config.feature_layers)
        self.config = config

    def begin(self, layout, num_steps: int):
        super().begin(layout, num_steps)
        w = self.config.step_windows(num_steps)
        self.feature_until, self.attention_until = w["feature"], w["attention"]

    def on_feature(self, name, output):
        if self.step >= self.feature_until:
            return None
        return self.layout.copy_source(output)

    def edit_qkv(self, layer: Layer, q, k, v):
        if layer.is_self and layer.place in self.config.attention_places and self.step < self.attention_until:
            q, k = self.layout.copy_source(q), self.layout.copy_source(k)
        return q, k, v


@torch.no_grad()
def pnp_translate(pipe, image, target_prompts: str | Sequence[str], source_prompt: str = "",
                  config: PnPConfig | None = None, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                  trajectory: list[torch.Tensor] | None = None, progress: bool = True, output: str = "pil"):
    """Translate ``image`` to each target prompt; returns [source reconstruction, *translations].

    ``trajectory``: a DDIM inversion of the image (computed with ``source_prompt`` if None).
    """
    config = config or PnPConfig()
    targets = [target_prompts] if isinstance(target_prompts, str) else list(target_prompts)
    traj = trajectory or ddim_invert(pipe, image, source_prompt, num_inference_steps, 1.0, progress=progress)
    if len(traj) != num_inference_steps + 1:
        raise ValueError(f"the trajectory has {len(traj) - 1} steps, sampling uses {num_inference_steps}")
    ctl = PnPController(config)

    def hold_source(i, t, z):  # the source branch follows the inverted trajectory exactly
        z = z.clone()
        z[:1] = traj[-2 - i]
        return z

    return sample(pipe, [source_prompt, *targets], num_inference_steps, guidance_scale, latents=traj[-1],
                  callback=hold_source, controllers=ctl, progress=progress, output=output)
