"""Prompt-to-Prompt (Hertz et al., ICLR 2023): edit an image by editing its prompt, keeping the
layout by injecting the source's cross-attention maps into the target for the first steps.

Batch layout: prompt 0 is the source, prompts 1.. are targets, all from the same starting latent,
in one guided UNet call per step. Only the conditional half is edited (as in the reference code).

- word swap: the target's cross-attention maps are the source's (``cross_replace_steps``);
- refinement: maps of tokens the prompts share come from the source, new tokens keep their own
  (the token lists are aligned);
- re-weighting: the maps of chosen words are multiplied by ``c``;
- self-attention maps of the low-resolution layers are injected for ``self_replace_steps``,
  written as SDPA(q_src, k_src, v_tgt) — no explicit probabilities needed;
- LocalBlend: a mask from the cross-attention maps of chosen words limits the change to that region.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import checks
from ..attention import Controller, Layer, unet_layers
from ..sampling import sample


@dataclass
class P2PEdit:
    """A Prompt-to-Prompt edit. Step fractions are of the total step count, from the first step."""

    kind: str = "swap"  # "swap" | "refine" | "reweight"
    cross_replace_steps: float = 0.8
    self_replace_steps: float = 0.4
    reweight: dict[str, float] = field(default_factory=dict)  # word -> scale c of its cross-attention map
    local_blend: Sequence[str] | None = None  # words whose attention defines the editable region
    blend_threshold: float = 0.3
    blend_start: float = 0.2  # fraction of steps before LocalBlend starts (the null-text notebook's 0.2)
    self_resolution_fraction: float = 0.25  # self maps injected at feature sides <= this * latent side
    # Where the reference code (google/prompt-to-prompt) and an earlier course version differ, the reference
    # is the default and the other a named option (notebook 02 says so):
    blend_maps: str = "running"  # "running": the maps summed over all steps so far | "step": this step's only
    blend_edited: bool = True  # LocalBlend reads the maps after the edit (the reference) or before it
    blend_upsample: str = "nearest"  # the mask to latent size: "nearest" (reference) | "bilinear"
    refine_pads: str = "reference"  # refinement: target pad j reads source j | "shifted" by the length change
    windows: str = "reference"  # cross int(f (T+1)) steps, self and blend int(f T) | "round": round(f T) for all

    def __post_init__(self):
        if self.kind not in ("swap", "refine", "reweight"):
            raise ValueError(f"kind must be 'swap', 'refine' or 'reweight', got {self.kind!r}")
        for name in ("cross_replace_steps", "self_replace_steps", "blend_start"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} is a fraction of the steps in [0, 1], got {v}")
        checks.fraction(self.blend_threshold, "blend_threshold (of the map's maximum; 1 or more marks nothing)",
                        open_high=True)
        checks.fraction(self.self_resolution_fraction, "self_resolution_fraction", open_low=True)
        for w, c in self.reweight.items():
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not -2.0 <= c <= 5.0:
                raise ValueError(f"re-weighting scale for {w!r} should be in [-2, 5], got {c}")
        if self.kind == "reweight" and not self.reweight:
            raise ValueError("a 'reweight' edit needs reweight={'word': scale}")
        for name, allowed in (("blend_maps", ("running", "step")), ("blend_upsample", ("nearest", "bilinear")),
                              ("refine_pads", ("reference", "shifted")), ("windows", ("reference", "round"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def step_windows(self, num_steps: int) -> dict[str, int]:
        """The fractions as step indices for a run of ``num_steps`` steps: cross-attention maps are
        replaced in steps ``< cross``, self-attention maps injected in steps ``< self``, and LocalBlend
        acts from step ``blend_from`` on. As the reference code counts them: ``int(f * (T + 1))`` cross
        steps (its alpha schedule has T + 1 entries), ``int(f * T)`` self and blend steps
        (``windows="round"``: ``round(f * T)`` for all three; the two agree at 0.8 / 0.4 and T = 50)."""
        if self.windows == "round":
            steps = lambda fraction: int(round(fraction * num_steps))
            return {"cross": steps(self.cross_replace_steps), "self": steps(self.self_replace_steps),
                    "blend_from": steps(self.blend_start)}
        return {"cross": int(self.cross_replace_steps * (num_steps + 1)), "self": int(self.self_replace_steps * num_steps),
                "blend_from": int(self.blend_start * num_steps)}


def tokens(tokenizer, prompt: str) -> list[str]:
    return [t.replace("</w>", "") for t in tokenizer.convert_ids_to_tokens(tokenizer(prompt).input_ids)]


def word_positions(tokenizer, prompt: str, word: str) -> list[int]:
    """Token positions (in the padded sequence) of ``word``'s tokens in ``prompt``."""
    toks = tokens(tokenizer, prompt)
    wtoks = tokens(tokenizer, word)[1:-1]
    pos = [i for i in range(len(toks) - len(wtoks) + 1) if toks[i:i + len(wtoks)] == wtoks]
    if not pos:
        raise ValueError(f"word {word!r} is not in the prompt {prompt!r} (tokens: {toks[1:-1]})")
    return [p + j for p in pos for j in range(len(wtoks))]


def swap_mapping(tokenizer, source: str, target: str, length: int) -> torch.Tensor:
    """Identity mapping for a word swap; a clear error when the token lists do not line up."""
    s, t = tokens(tokenizer, source), tokens(tokenizer, target)
    if len(s) != len(t):
        raise ValueError(
            "a word swap needs prompts with the same number of tokens, so that each target token has a "
            f"source token:\n  source ({len(s) - 2} tokens): {s[1:-1]}\n  target ({len(t) - 2} tokens): {t[1:-1]}\n"
            "use kind='refine' for prompts that add or remove words")
    return torch.arange(length)


def refine_mapping(tokenizer, source: str, target: str, length: int,
                   pads: str = "reference") -> tuple[torch.Tensor, torch.Tensor]:
    """(mapper, alpha): for each target position the aligned source position, and 1 where aligned.

    The prompts' tokens (start and end included) are aligned; each padding position j of the target
    reads the source's position j, as in the reference code's ``seq_aligner`` (``pads="shifted"``: the
    padded sequences are aligned as a whole, so after an insertion or deletion the pads are shifted by
    the length change and, in a deletion, the last pad is left with alpha 0)."""
    if pads == "shifted":
        tok = lambda p: tokenizer(p, padding="max_length", max_length=length, truncation=True).input_ids
        s, t = tok(source), tok(target)
        mapper, alpha = torch.arange(length), torch.zeros(length)
    else:
        s, t = tokenizer(source).input_ids[:length], tokenizer(target).input_ids[:length]
        mapper, alpha = torch.arange(length), torch.ones(length)  # pads: j -> j
        alpha[:len(t)] = 0.0
    for a, b, n in difflib.SequenceMatcher(a=s, b=t, autojunk=False).get_matching_blocks():
        mapper[b:b + n] = torch.arange(a, a + n)
        alpha[b:b + n] = 1.0
    return mapper, alpha


def blend_resolution(unet) -> int:
    """The side of the cross-attention maps LocalBlend reads: of the sides this UNet has, the one nearest
    a quarter of the latent's side, and at least 8 where the UNet has 8 (the reference code's 16x16 of
    SD's 64x64 latents; tiny-sd's 16x16 latents: 8x8). Always a side that exists."""
    side = unet.config.sample_size
    side = side if isinstance(side, int) else side[0]
    have = sorted({layer.resolution for layer in unet_layers(unet).values() if layer.is_cross}, reverse=True)
    if not have:
        raise ValueError("this UNet has no cross-attention layers: LocalBlend has no maps to read")
    want = max(side // 4, min(8, side))
    return min(have, key=lambda r: (abs(math.log(r / want)), -r))


class P2PController(Controller):
    """The edit as a controller: built from the pipeline (tokenizer, latent size), the prompts and the
    edit; its step windows are set when a run begins (:meth:`begin`, from the run's step count)."""

    def __init__(self, pipe, prompts: Sequence[str], edit: P2PEdit):
        super().__init__()
        if len(prompts) < 2:
            raise ValueError("Prompt-to-Prompt needs a source prompt and at least one target prompt")
        self.edit, self.prompts = edit, checks.prompts(pipe.tokenizer, prompts)
        tok = pipe.tokenizer
        length = tok.model_max_length
        src = prompts[0]
        mappers, alphas, eqs = [], [], []
        for tgt in prompts[1:]:
            if edit.kind == "refine":
                m, a = refine_mapping(tok, src, tgt, length, edit.refine_pads)
            else:
                m, a = swap_mapping(tok, src, tgt, length), torch.ones(length)
            eq = torch.ones(length)
            for word, c in edit.reweight.items():
                eq[word_positions(tok, tgt, word)] = c
            mappers.append(m)
            alphas.append(a)
            eqs.append(eq)
        self.mappers, self.alphas, self.equalizers = torch.stack(mappers), torch.stack(alphas), torch.stack(eqs)
        side = pipe.unet.config.sample_size
        self.self_max_res = max(1, int(side * edit.self_resolution_fraction))
        self.blend_res = blend_resolution(pipe.unet)
        self.blend_words = None
        if edit.local_blend:
            self.blend_words = torch.zeros(len(prompts), length)
            for i, p in enumerate(prompts):
                for w in edit.local_blend:
                    try:
                        self.blend_words[i, word_positions(tok, p, w)] = 1.0
                    except ValueError:
                        pass
            if not self.blend_words.any():
                raise ValueError(f"none of the LocalBlend words {list(edit.local_blend)} is in the prompts")
        self.step_maps: list[torch.Tensor] = []
        self.blend_sum: torch.Tensor | None = None  # LocalBlend's maps summed over the steps so far

    def begin(self, layout, num_steps: int):
        super().begin(layout, num_steps)
        self.blend_sum, self.step_maps = None, []
        w = self.step_windows(num_steps)
        self.cross_until, self.self_until, self.blend_from = w["cross"], w["self"], w["blend_from"]

    def step_windows(self, num_steps: int) -> dict[str, int]:
        """``cross``, ``self`` and ``blend_from`` as step indices (see :meth:`P2PEdit.step_windows`)."""
        return self.edit.step_windows(num_steps)

    # cross-attention: maps replaced, aligned or re-weighted within the window
    def wants_probs(self, layer: Layer) -> bool:
        if not layer.is_cross:
            return False
        blend = self.blend_words is not None and layer.resolution == self.blend_res
        return self.step < self.cross_until or blend

    def edit_probs(self, layer: Layer, probs):
        halves = self.layout.split(probs)  # (halves, n, heads, queries, keys)
        cond = halves[-1]
        blend = self.blend_words is not None and layer.resolution == self.blend_res
        if blend and not self.edit.blend_edited:
            self.step_maps.append(cond.mean(1).detach())
        if self.step < self.cross_until:
            src, tgt = cond[0], cond[1:]
            m = self.mappers.to(probs.device)
            a, eq = (x.to(probs.device, probs.dtype) for x in (self.alphas, self.equalizers))
            mapped = torch.stack([src[..., mi] for mi in m])  # (targets, heads, queries, keys)
            new = mapped * a[:, None, None, :] + tgt * (1 - a[:, None, None, :])
            new = new * eq[:, None, None, :]
            halves = halves.clone()
            halves[-1, 1:] = new
            probs = self.layout.merge(halves)
        if blend and self.edit.blend_edited:  # the maps the layer used, as the reference code stores them
            self.step_maps.append(self.layout.split(probs)[-1].mean(1).detach())
        return probs

    # self-attention: SDPA(q_src, k_src, v_tgt) in low-resolution layers within the window
    def edit_qkv(self, layer: Layer, q, k, v):
        if layer.is_self and self.step < self.self_until and layer.resolution <= self.self_max_res:
            q = self.layout.copy_source(q, conditional_only=True)
            k = self.layout.copy_source(k, conditional_only=True)
        return q, k, v

    def set_step(self, index: int):
        super().set_step(index)
        self.step_maps = []

    def blend_maps(self) -> torch.Tensor | None:
        """This step's maps at the blend resolution, averaged over layers, added to the running sum;
        returns the maps LocalBlend reads (the sum, or with ``blend_maps="step"`` this step's)."""
        if self.blend_words is None or not self.step_maps:
            return None
        maps = torch.stack(self.step_maps).mean(0)  # (n, queries, keys)
        self.step_maps = []  # counted once
        self.blend_sum = maps if self.blend_sum is None else self.blend_sum + maps
        return self.blend_sum if self.edit.blend_maps == "running" else maps

    def blend_mask(self, latent_hw: tuple[int, int], maps: torch.Tensor | None = None) -> torch.Tensor | None:
        """LocalBlend's mask (n, 1, h, w) from the maps of the blend words (default :meth:`blend_maps`), or None."""
        maps = self.blend_maps() if maps is None else maps
        if maps is None:
            return None
        side = int(round(math.sqrt(maps.shape[1])))
        w = self.blend_words.to(maps.device, maps.dtype)
        m = (maps * w[:, None, :]).sum(-1).view(-1, 1, side, side)
        m = F.max_pool2d(m, 3, 1, padding=1)
        if self.edit.blend_upsample == "nearest":
            m = F.interpolate(m, size=latent_hw, mode="nearest")
        else:
            m = F.interpolate(m, size=latent_hw, mode="bilinear", align_corners=False)
        m = m / m.amax((2, 3), keepdim=True).clamp_min(1e-8)
        m = (m > self.edit.blend_threshold).float()
        return ((m[:1] + m[1:]) > 0).float()  # union of the source's and each target's region

    def blend_latents(self, i: int, t, z: torch.Tensor) -> torch.Tensor | None:
        """LocalBlend as the sampling loop's callback: from step ``blend_from`` on, each target keeps
        the source's latent outside the blend mask (None: leave the latents as they are)."""
        if self.edit.local_blend is None:
            return None
        maps = self.blend_maps()  # every step's maps count towards the running sum, also before blend_from
        if i < self.blend_from or maps is None:
            return None
        mask = self.blend_mask(z.shape[-2:], maps)
        if mask is None:
            return None
        return torch.cat([z[:1], z[:1] + mask.to(z.dtype) * (z[1:] - z[:1])])


@torch.no_grad()
def p2p_edit(pipe, source_prompt: str, target_prompts: str | Sequence[str], edit: P2PEdit | None = None,
             num_inference_steps: int = 50, guidance_scale: float = 7.5, latents: torch.Tensor | None = None,
             generator: torch.Generator | None = None, uncond_embeddings=None, progress: bool = True,
             output: str = "pil"):
    """Generate the source and the edited targets from the same starting latent.

    ``latents``: a random z_T (from ``generator`` if None) or an inverted one for a real image;
    ``uncond_embeddings``: per-step unconditional embeddings from null-text inversion.
    Returns [source, *targets] as PIL images (or a tensor with ``output="tensor"``).
    """
    edit = edit or P2PEdit()
    targets = [target_prompts] if isinstance(target_prompts, str) else list(target_prompts)
    prompts = [source_prompt, *targets]
    ctl = P2PController(pipe, prompts, edit)
    return sample(pipe, prompts, num_inference_steps, guidance_scale, latents=latents, generator=generator,
                  uncond_embeddings=uncond_embeddings, callback=ctl.blend_latents, controllers=ctl,
                  progress=progress, output=output)
