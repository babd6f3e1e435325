"""Shapes World: the procedural dataset every lesson is shown and measured on, and its oracle."""
from . import vocab
from .oracle import Reading, SeenObject, judge, read_image
from .world import (ObjectSpec, Scene, SceneSpec, concept_scene, isolated, make_scene, render_spec,
                    sample_scene, single_object)

__all__ = ["vocab", "read_image", "judge", "Reading", "SeenObject", "ObjectSpec", "SceneSpec", "Scene",
           "make_scene", "sample_scene", "render_spec", "single_object", "concept_scene", "isolated"]
