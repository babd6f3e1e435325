"""Reading attention: running sums of cross- and self-attention maps (conditional half only), kept on
the device that makes them and moved to host memory only when read."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch

from .control import Controller
from .layers import Layer


class AttentionStore(Controller):
    """Keep running sums of attention probabilities, averaged over heads and layers.

    ``resolutions``: the feature-map sides to keep (``None`` = all); ``kinds``: ``"cross"`` and/or
    ``"self"``; ``per_step``: also keep one layer-averaged map per step (for "attention over the
    diffusion steps" figures): ``True`` at every side kept, or a tuple of sides (a map per step costs
    steps times the memory of the mean). Only the conditional half of a guided batch is stored.

    The store only reads: the layers it reads still compute their output with the fast path, and it
    sees each layer's maps after every other controller's edits (:meth:`Controller.read_maps`). The
    sums stay on the device the maps are made on, with no copy per step; :meth:`mean` and
    :meth:`at_step` return them in host memory.
    """

    def __init__(self, resolutions: tuple[int, ...] | None = None, kinds=("cross",),
                 per_step: bool | Sequence[int] = False, places=("down", "mid", "up")):
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

    def reads_maps(self, layer: Layer) -> bool:
        return self.resolutions is None or layer.resolution in self.resolutions

    def keeps_steps(self, side: int) -> bool:
        """Whether maps of this side are also kept per step."""
        return self.per_step is True or (bool(self.per_step) and side in set(self.per_step))

    def read_maps(self, layer: Layer, maps):
        side = int(round(math.sqrt(maps.shape[-2])))
        key = (layer.kind, side)
        _accumulate(self.sums, key, maps)
        self.counts[key] += 1
        if self.keeps_steps(side):
            _accumulate(self.steps[self.step], key, maps)
            self.step_counts[self.step][key] += 1

    # -- reading the maps
    def mean(self, kind: str = "cross", resolution: int | None = None) -> torch.Tensor:
        """Mean map over steps, layers and heads: (n_prompts, side, side, keys), in host memory."""
        key = self._key(kind, resolution)
        m = (self.sums[key] / self.counts[key]).cpu()
        return m.view(m.shape[0], key[1], key[1], m.shape[-1])

    def at_step(self, step: int, kind: str = "cross", resolution: int | None = None) -> torch.Tensor:
        """Mean map of one step over layers and heads: (n_prompts, side, side, keys), in host memory."""
        if not self.per_step:
            raise ValueError("create the store with per_step=True to read maps per step")
        key = self._key(kind, resolution)
        if key not in self.steps[step]:
            raise ValueError(f"no {kind}-attention maps at {key[1]}x{key[1]} were kept per step; "
                             f"per_step={self.per_step!r}")
        m = (self.steps[step][key] / self.step_counts[step][key]).cpu()
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


def _accumulate(sums: dict, key, maps: torch.Tensor):
    """sums[key] += maps, in place on the maps' device (the first maps are copied)."""
    if key in sums:
        sums[key].add_(maps)
    else:
        sums[key] = maps.detach().clone()
