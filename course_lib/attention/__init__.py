"""Attention control: one mechanism for every method (see :mod:`course_lib.attention.control`)."""
from .control import (BatchLayout, Controller, CourseAttnProcessor, attention_control, attention_probs,
                      controlling, head_mean_probs)
from .layers import Layer, parse_layer, unet_layers
from .store import AttentionStore

__all__ = ["BatchLayout", "Controller", "CourseAttnProcessor", "attention_control", "attention_probs", "controlling",
           "head_mean_probs", "Layer", "parse_layer", "unet_layers", "AttentionStore"]
