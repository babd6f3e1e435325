"""Plug-and-Play diffusion features (Tumanyan et al., CVPR 2023): text-guided translation of a real
image by injecting the source's spatial features and self-attention into the target.

The source is DDIM-inverted; its branch (prompt 0) is held on the inverted trajectory at every step
while the targets are sampled from the same z_T in the same batched UNet call. For the first
``feature_steps`` of the steps the residual branch of the decoder block(s) ``feature_layers`` in
the targets is replaced by the source's; for the first ``attention_steps`` the decoder's
self-attention queries and keys are the source's (SDPA(q_src, k_src, v_tgt)).

As the reference code (MichalGeyer/plug-and-play) does, by default:

- the feature injected is the block's *residual branch* after its second convolution, before the skip
  connection adds the block's input: the target keeps its own skip path (``feature_injection="output"``
  replaces the whole block output, skip included: the source's features then arrive twice as strongly);
- queries and keys are injected in every decoder self-attention layer except the first transformer of the
  lowest-resolution decoder level that has attention (SD's ``up_blocks[1].attentions[0]``;
  ``attention_layers="all"``: that one too);
- the windows are ``int(f * T)`` steps (``windows="round"``: ``round(f * T)``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .. import checks
from ..attention import Layer, unet_layers
from ..attention.features import FeatureController, resolve_module
from ..inversion import ddim_invert
from ..sampling import sample


@dataclass
class PnPConfig:
    feature_steps: float = 0.8  # tau_f, fraction of the steps
    attention_steps: float = 0.5  # tau_A
    feature_layers: Sequence[str] = ("up_blocks.1.resnets.1",)
    attention_places: Sequence[str] = ("up",)
    feature_injection: str = "residual"  # "residual": the branch before the skip is added | "output": all of it
    attention_layers: str = "reference"  # "reference": all but the lowest decoder level's first | "all"
    windows: str = "reference"  # int(f * T) | "round": round(f * T)

    def __post_init__(self):
        for name in ("feature_steps", "attention_steps"):
            checks.fraction(getattr(self, name), f"{name} (a fraction of the steps)")
        for name, allowed in (("feature_injection", ("residual", "output")), ("attention_layers", ("reference", "all")),
                              ("windows", ("reference", "round"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def step_windows(self, num_steps: int) -> dict[str, int]:
        """tau_f and tau_A as step indices: features are injected in steps ``< feature``, self-attention
        queries and keys in steps ``< attention``."""
        steps = (lambda f: int(round(f * num_steps))) if self.windows == "round" else (lambda f: int(f * num_steps))
        return {"feature": steps(self.feature_steps), "attention": steps(self.attention_steps)}


def reference_excluded(unet, places: Sequence[str] = ("up",)) -> set[str]:
    """The self-attention layers the reference code leaves out of query/key injection: those of the first
    transformer of the lowest-resolution decoder level that has self-attention (SD: ``up_blocks.1.attentions.0``)."""
    layers = [layer for layer in unet_layers(unet).values() if layer.is_self and layer.place == "up"
              and layer.place in places]
    if not layers:
        return set()
    top = max(layer.level for layer in layers)
    first = min(layer.attention for layer in layers if layer.level == top)
    return {layer.name for layer in layers if layer.level == top and layer.attention == first}


class PnPController(FeatureController):
    """Injects the source's (prompt 0's) features and self-attention queries and keys into the targets,
    in both halves of a guided batch, within the config's step windows."""

    def __init__(self, config: PnPConfig):
        super().__init__(config.feature_layers)
        self.config = config
        self.excluded: set[str] = set()

    def attach(self, unet):
        """Hook the feature blocks (their second convolution, for the residual branch) once all are found."""
        blocks = [resolve_module(unet, name) for name in self.config.feature_layers]
        if self.config.feature_injection == "residual":
            missing = [n for n, b in zip(self.config.feature_layers, blocks) if not hasattr(b, "conv2")]
            if missing:
                raise ValueError(f"{missing} are not residual blocks (no conv2); name blocks such as "
                                 f"'up_blocks.1.resnets.1'")
            blocks = [b.conv2 for b in blocks]
        for name, mod in zip(self.config.feature_layers, blocks):
            self._handles.append(mod.register_forward_hook(
                lambda m, args, out, name=name: self.on_feature(name, out)))
        self.excluded = reference_excluded(unet, self.config.attention_places) \
            if self.config.attention_layers == "reference" else set()

    def begin(self, layout, num_steps: int):
        super().begin(layout, num_steps)
        w = self.config.step_windows(num_steps)
        self.feature_until, self.attention_until = w["feature"], w["attention"]

    def on_feature(self, name, output):
        if self.step >= self.feature_until:
            return None
        return self.layout.copy_source(output)

    def edit_qkv(self, layer: Layer, q, k, v):
        if layer.is_self and layer.place in self.config.attention_places and self.step < self.attention_until \
                and layer.name not in self.excluded:
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
    num_inference_steps = checks.steps(num_inference_steps)
    guidance_scale = checks.guidance(guidance_scale)
    targets = checks.prompts(pipe.tokenizer, target_prompts, "target prompt")
    checks.prompt(pipe.tokenizer, source_prompt, "source prompt")
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
