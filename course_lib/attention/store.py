"""Reading attention: running means of cross- and self-attention maps (conditional half only)."""
from __future__ import annotations

import math
from collections import defaultdict

import torch

from .control import Controller
from .layers import Layer


class AttentionStore(Controller):
    """Keep running sums of attention probabilities, averaged over heads and layers.

    ``resolutions``: the feature-map sides to keep (``None`` = all); ``kinds``: ``"cross"`` and/or
    ``"self"``; ``per_step``: also keep one layer-averaged map per step (for "attention over the
    diffusion steps" figures). Only the conditional half of a guided batch is stored.
    """

    def __init__(self, resolutions: tuple[int, ...] | None = None, kinds=("cross",), per_step: bool = False,
                 places=("down", "mid", "up")):
        super().__init__()
        self.resolutions = None if resolutions is None else set(resolutions)
        self.kinds, self.places, self.per_step = set(kinds), set(places), per_step
        self.reset()

    def reset(self):
        self.sums: dict[tuple[str, int], torch.Tensor] = {}
        self.counts: dict[tuple[str, int], int] = defaultdict(int)
        self.steps: dict[int, dict[tuple[str, int], torch.Tensor]] = defaultdict(dict)
        self.step_counts: dict[int, dict[tuple[str, int], int]] = defaultdict(lambda: defaultdict(int))

    def applies(self, layer: Layer) -> bool:
        return layer.kind in self.kinds and layer.place in self.places

    def wants_probs(self, layer: Layer) -> bool:
        return self.resolutions is None or layer.resolution in self.resolutions

    def edit_probs(self, layer: Layer, probs):
        side = int(round(math.sqrt(probs.shape[-2])))
        cond = self.layout.split(probs)[-1].mean(1).detach().float().cpu()  # (n, queries, keys)
        key = (layer.kind, side)
        self.sums[key] = self.sums[key] + cond if key in self.sums else cond.clone()
        self.counts[key] += 1
        if self.per_step:
            s = self.steps[self.step]
            s[key] = s[key] + cond if key in s else cond.clone()
            self.step_counts[self.step][key] += 1
        return probs

    # -- reading the maps
    def mean(self, kind: str = "cross", resolution: int | None = None) -> torch.Tensor:
        """Mean map over steps, layers and heads: (n_prompts, side, side, keys)."""
        key = self._key(kind, resolution)
        m = self.sums[key] / self.counts[key]
        return m.view(m.shape[0], key[1], key[1], m.shape[-1])

    def at_step(self, step: int, kind: str = "cross", resolution: int | None = None) -> torch.Tensor:
        if not self.per_step:
            raise ValueError("create the store with per_step=True to read maps per step")
        key = self._key(kind, resolution)
        m = self.steps[step][key] / self.step_counts[step][key]
        return m.view(m.shape[0], key[1], key[1], m.shape[-1])

    def _key(self, kind, resolution):
        keys = sorted(k for k in self.sums if k[0] == kind)
        if not keys:
            raise ValueError(f"no {kind}-attention maps were stored; stored: {sorted(self.sums)}")
        if resolution is None:
            return keys[-1]
        if (kind, resolution) not in self.sums:
            raise ValueError(f"no {kind}-attention maps at {resolution}x{resolution}; stored: {sorted(self.sums)}")
        return (kind, resolution)

    def token_maps(self, pipe, prompt: str, index: int = 0, resolution: int | None = None):
        """[(token, side x side map)] of the prompt's words (start and end tokens left out)."""
        ids = pipe.tokenizer(prompt).input_ids
        toks = pipe.tokenizer.convert_ids_to_tokens(ids)
        m = self.mean("cross", resolution)[index]
        return [(t.replace("</w>", ""), m[..., i]) for i, t in enumerate(toks) if 0 < i < len(toks) - 1]
