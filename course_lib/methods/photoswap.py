"""Photoswap (Gu et al., NeurIPS 2023): swap the subject of an image for a learned concept, keeping
pose and scene, by a training-free swap of attention between a source and a target process.

Algorithm (paper Sec. 3, Alg. 1), as this module runs it:

1. the concept is learned beforehand (:mod:`course_lib.methods.concepts`: DreamBooth, LoRA or
   Textual Inversion) so that the target prompt P_t = P_s with the subject word(s) replaced by the
   concept token(s) draws it;
2. the source image is inverted to z_T (or a generated source starts from a random z_T);
3. source (P_s) and target (P_t) run from the same z_T in one batched, guided UNet call per step.
   In the target's conditional half, for the first ``lambda_M`` steps the self-attention **map**
   M = softmax(q k^T / sqrt d) is the source's (written SDPA(q_src, k_src, v_tgt)); for the first
   ``lambda_A`` steps the cross-attention **map** A is the source's; for the first ``lambda_phi``
   steps the self-attention **output** phi = M v is the source's. The cross-attention output
   psi = A v is never replaced: its values v carry the new subject's identity.
4. optionally, LocalBlend on the subject words keeps everything outside the subject's region.

The paper's settings are T = 50, lambda_A = 20, lambda_M = 25, lambda_phi = 10; a config with the
lambdas left ``None`` scales them to the step count. The swaps are Prompt-to-Prompt's map swaps
plus one output swap, so :class:`PhotoswapController` extends :class:`~course_lib.methods.p2p.P2PController`
(whose cross-map replacement, self-map injection and LocalBlend it reuses) with the phi swap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .. import checks
from ..attention import Layer
from ..inversion import ddim_invert, negative_prompt_inversion, null_text_inversion
from ..sampling import sample
from .p2p import P2PController, P2PEdit, tokens

PAPER_STEPS = 50
PAPER_LAMBDAS = {"lambda_M": 25, "lambda_A": 20, "lambda_phi": 10}


@dataclass
class PhotoswapConfig:
    """Step counts of the three swaps (``None`` = the paper's value scaled to the step count).

    ``self_resolution_fraction``: M and phi are swapped in self-attention layers whose feature side
    is at most this fraction of the latent side (1.0 = every layer; the reference code, built on
    Prompt-to-Prompt, uses 0.5). ``local_blend``: words (of either prompt) whose cross-attention
    defines the editable region; ``None`` = no LocalBlend.

    As the reference code (eric-ai-lab/photoswap) does, by default (the other choice is an option):
    phi is swapped in both halves of the guidance batch (``phi_halves="conditional"``: the conditional
    half only), in every self-attention layer whatever ``self_resolution_fraction`` says
    (``phi_layers="resolution"``: only where M is swapped), in steps ``0..lambda_phi`` inclusive
    (``phi_window="exclusive"``: steps ``< lambda_phi``); the cross maps A are aligned by
    Prompt-to-Prompt's refinement mapper, so a token the source does not have (the concept's) keeps
    its own map (``cross_alignment="swap"``: position by position, when the prompts have as many tokens).
    """

    lambda_M: int | None = None
    lambda_A: int | None = None
    lambda_phi: int | None = None
    self_resolution_fraction: float = 1.0
    local_blend: Sequence[str] | None = None
    blend_threshold: float = 0.3
    blend_start: float = 0.2
    phi_halves: str = "both"  # | "conditional"
    phi_layers: str = "all"  # | "resolution"
    phi_window: str = "inclusive"  # steps <= lambda_phi | "exclusive": < lambda_phi
    cross_alignment: str = "refine"  # | "swap"

    def __post_init__(self):
        for name, allowed in (("phi_halves", ("both", "conditional")), ("phi_layers", ("all", "resolution")),
                              ("phi_window", ("inclusive", "exclusive")), ("cross_alignment", ("refine", "swap"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in PAPER_LAMBDAS:
            v = getattr(self, name)
            if v is not None and (not float(v).is_integer() or v < 0):
                raise ValueError(f"{name} is a number of steps (an integer >= 0), got {v!r}")
        checks.fraction(self.self_resolution_fraction, "self_resolution_fraction", open_low=True)
        checks.fraction(self.blend_threshold, "blend_threshold", open_high=True)
        checks.fraction(self.blend_start, "blend_start")

    def steps(self, num_steps: int) -> dict[str, int]:
        """The three step counts for a run of ``num_steps`` steps; a clear error if one exceeds it."""
        out = {}
        for name, paper in PAPER_LAMBDAS.items():
            v = getattr(self, name)
            v = int(round(paper * num_steps / PAPER_STEPS)) if v is None else int(v)
            if v > num_steps:
                raise ValueError(f"{name}={v} swaps for more steps than the run has ({num_steps}); "
                                 f"use at most {num_steps} (the paper: {paper} of {PAPER_STEPS})")
            out[name] = v
        return out


class PhotoswapController(P2PController):
    """Batch [source, target]: swaps M (self maps), A (cross maps) and phi (self outputs) into the target.

    M and A come from :class:`P2PController` (self-map injection, word-swap / aligned cross maps);
    phi is swapped here in :meth:`edit_output`.
    """

    def __init__(self, pipe, source_prompt: str, target_prompt: str, config: PhotoswapConfig):
        same_length = len(tokens(pipe.tokenizer, source_prompt)) == len(tokens(pipe.tokenizer, target_prompt))
        # the P2P edit says how the cross maps are aligned and where LocalBlend acts; its step windows
        # are the lambdas (:meth:`step_windows`), not fractions
        kind = "swap" if same_length and config.cross_alignment == "swap" else "refine"
        edit = P2PEdit(kind=kind, local_blend=config.local_blend,
                       blend_threshold=config.blend_threshold, blend_start=config.blend_start)
        super().__init__(pipe, [source_prompt, target_prompt], edit)
        self.config = config
        self.self_max_res = max(1, int(round(pipe.unet.config.sample_size * config.self_resolution_fraction)))

    def begin(self, layout, num_steps: int):
        super().begin(layout, num_steps)
        self.phi_until = self.step_windows(num_steps)["phi"]

    def step_windows(self, num_steps: int) -> dict[str, int]:
        """The swaps' windows in steps: A in steps ``< cross`` (lambda_A), M in ``< self`` (lambda_M),
        phi in ``< phi`` (lambda_phi + 1 with ``phi_window="inclusive"``, at most the step count);
        LocalBlend from ``blend_from`` on."""
        lam = self.config.steps(num_steps)
        phi = lam["lambda_phi"] + (1 if self.config.phi_window == "inclusive" and lam["lambda_phi"] > 0 else 0)
        return {"cross": lam["lambda_A"], "self": lam["lambda_M"], "phi": min(phi, num_steps),
                "blend_from": self.edit.step_windows(num_steps)["blend_from"]}

    def _self_swapped(self, layer: Layer) -> bool:
        return layer.is_self and layer.resolution <= self.self_max_res

    def edit_qkv(self, layer: Layer, q, k, v):
        # M swap: the target's self-attention map is the source's, SDPA(q_src, k_src, v_tgt)
        if self._self_swapped(layer) and self.step < self.self_until and self.step >= self.phi_until:
            return super().edit_qkv(layer, q, k, v)
        return q, k, v

    def edit_output(self, layer: Layer, out):
        # phi swap: the target's self-attention output is the source's (it contains M as well)
        where = layer.is_self if self.config.phi_layers == "all" else self._self_swapped(layer)
        if where and self.step < self.phi_until:
            out = self.layout.copy_source(out, conditional_only=self.config.phi_halves == "conditional")
        return out


def invert_source(pipe, image, source_prompt: str, num_inference_steps: int, guidance_scale: float,
                  inversion: str = "null-text", progress: bool = False, inner_steps: int = 10):
    """(z_T, per-step unconditional embeddings or None) of a real source image.

    ``inversion``: ``"null-text"`` (the reference code's choice, slow; ``inner_steps`` per sampling
    step), ``"negative-prompt"`` (no optimisation) or ``"ddim"`` (plain DDIM inversion; sampled with
    the ordinary empty-prompt embedding, it reconstructs exactly only at low guidance).

    Null-text and DDIM inversion give the same z_T; what differs is the unconditional embedding.
    Null-text's, fitted to the source at every step, keeps drawing the source's subject, so a weakly
    learned concept may not come through it (see ``course_tools.bench.photoswap``).
    """
    if inversion == "null-text":
        return null_text_inversion(pipe, image, source_prompt, num_inference_steps, guidance_scale,
                                   inner_steps=inner_steps, progress=progress)
    if inversion == "negative-prompt":
        return negative_prompt_inversion(pipe, image, source_prompt, num_inference_steps, progress=progress)
    if inversion == "ddim":
        return ddim_invert(pipe, image, source_prompt, num_inference_steps, 1.0, progress=progress)[-1], None
    raise ValueError(f"inversion must be 'null-text', 'negative-prompt' or 'ddim', got {inversion!r}")


@torch.no_grad()
def photoswap(pipe, source_prompt: str, target_prompt: str, config: PhotoswapConfig | None = None,
              image=None, num_inference_steps: int = 50, guidance_scale: float = 7.5,
              latents: torch.Tensor | None = None, generator: torch.Generator | None = None,
              uncond_embeddings=None, inversion: str = "null-text", progress: bool = True,
              output: str = "pil"):
    """Swap the subject of the source for the concept in ``target_prompt``; returns [source, target].

    The source is ``image`` (inverted with ``inversion`` unless ``latents`` are given) or, without an
    image, generated from ``latents`` / ``generator``. ``pipe`` must already know the concept
    (a DreamBooth / LoRA / Textual Inversion pipeline from :mod:`course_lib.methods.concepts`).
    """
    config = config or PhotoswapConfig()
    num_inference_steps = checks.steps(num_inference_steps)
    guidance_scale = checks.guidance(guidance_scale)
    checks.prompts(pipe.tokenizer, [source_prompt, target_prompt])
    config.steps(num_inference_steps)  # fail before any work on lambdas beyond the step count
    if image is not None and latents is None:
        latents, uncond_embeddings = invert_source(pipe, image, source_prompt, num_inference_steps, guidance_scale,
                                                   inversion, progress)
    ctl = PhotoswapController(pipe, source_prompt, target_prompt, config)
    return sample(pipe, [source_prompt, target_prompt], num_inference_steps, guidance_scale, latents=latents,
                  generator=generator, uncond_embeddings=uncond_embeddings, callback=ctl.blend_latents, controllers=ctl,
                  progress=progress, output=output)


def concept_prompt(source_prompt: str, subject_words: Sequence[str], concept_words: Sequence[str]) -> str:
    """P_t: ``source_prompt`` with each subject word replaced by its concept word, one for one
    (e.g. ("red", "star") -> ("sks", "shape")), so that the token lists stay aligned for the A swap."""
    if len(subject_words) != len(concept_words):
        raise ValueError("give one concept word per subject word")
    words = source_prompt.split()
    for s, c in zip(subject_words, concept_words):
        if s not in words:
            raise ValueError(f"subject word {s!r} is not in the source prompt {source_prompt!r}")
        words[words.index(s)] = c
    return " ".join(words)
