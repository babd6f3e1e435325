"""Attention control: one mechanism for every method (see :mod:`course_lib.attention.control`).

- :class:`Controller`: the base every method's controller extends (three hooks: the maps, the
  attention output, the step); :func:`controlling` installs controllers for one denoising run and
  restores the UNet afterwards, :func:`attention_control` does the same around any code.
- :class:`AttentionStore`: keeps the attention maps (running means, on the device) for figures.
- :class:`FeatureController` and :class:`FeatureStore`: the same for residual-block features
  (Plug-and-Play's feature injection).
- :func:`unet_layers` / :func:`parse_layer`: which attention layer is where (place, level, resolution).
"""
from .control import (BatchLayout, Controller, CourseAttnProcessor, attention_control, attention_probs,
                      controlling, head_mean_probs)
from .features import FeatureController, FeatureStore, residual_blocks
from .layers import Layer, parse_layer, unet_layers
from .store import AttentionStore

__all__ = ["BatchLayout", "Controller", "CourseAttnProcessor", "attention_control", "attention_probs", "controlling",
           "head_mean_probs", "FeatureController", "FeatureStore", "residual_blocks", "Layer", "parse_layer",
           "unet_layers", "AttentionStore"]
