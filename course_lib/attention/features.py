"""Reading and injecting UNet features (outputs of residual blocks) with forward hooks.

Plug-and-Play injects the source's decoder features into the target; DragDiffusion supervises
motion on them. Hooks are installed by :func:`course_lib.attention.attention_control` through
:meth:`Controller.attach` and always removed on exit.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch

from .control import Controller


def resolve_module(unet, name: str) -> torch.nn.Module:
    """``"up_blocks.1.resnets.1"`` -> that module, with an error listing what exists."""
    try:
        return unet.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the UNet has no module {name!r}; its residual blocks are {residual_blocks(unet)}") from None


def residual_blocks(unet) -> list[str]:
    """The names of the UNet's residual blocks (``down_blocks.0.resnets.0`` ... ``mid_block.resnets.0`` ...
    ``up_blocks.3.resnets.2``), in order."""
    return [n for n, _ in unet.named_modules()
            if re.fullmatch(r"(down_blocks|up_blocks)\.\d+\.resnets\.\d+|mid_block\.resnets\.\d+", n)]


class FeatureController(Controller):
    """Base for controllers that hook module outputs; ``on_feature(name, output)`` may replace them."""

    def __init__(self, modules: Sequence[str]):
        super().__init__()
        self.modules = list(modules)
        self._handles = []

    def attach(self, unet):
        mods = [(name, resolve_module(unet, name)) for name in self.modules]  # all found before any hook
        for name, mod in mods:
            self._handles.append(mod.register_forward_hook(
                lambda m, args, out, name=name: self.on_feature(name, out)))

    def detach(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    def on_feature(self, name: str, output):
        return None


class FeatureStore(FeatureController):
    """Keep the latest output of each hooked module (the conditional half; gradients kept if enabled)."""

    def __init__(self, modules: Sequence[str], detach: bool = True):
        super().__init__(modules)
        self.detach_outputs = detach
        self.features: dict[str, torch.Tensor] = {}

    def on_feature(self, name, output):
        x = self.layout.split(output)[-1]
        self.features[name] = x.detach() if self.detach_outputs else x
        return None
