"""The six methods of the course, and SDEdit as the baseline for real images.

Each method is one driver function with one config object; everything else in its module is the
mechanism the notebooks open up (controllers, mappings, losses).

| method | driver | config |
|---|---|---|
| Prompt-to-Prompt (02) | :func:`p2p_edit` | :class:`P2PEdit` |
| Plug-and-Play (03) | :func:`pnp_translate` | :class:`PnPConfig` |
| SDEdit, the baseline (02, 03) | :func:`sdedit` | its arguments |
| Photoswap (04) | :func:`photoswap`, after :func:`learn_concept` / :func:`load_concept` | :class:`PhotoswapConfig`, :class:`ConceptTraining` |
| Paint by Example (05) | :func:`paint_by_example` (:func:`load_pbe` for the model) | its arguments |
| Imagic (06) | :func:`imagic_edit` (or :func:`imagic_fit` then :func:`imagic_sample`) | :class:`ImagicConfig` |
| DragDiffusion (07) | :func:`drag_edit` | :class:`DragConfig` |

Two drivers share their module's name: ``course_lib.methods.photoswap`` and ``course_lib.methods.sdedit``
are the functions; ``from course_lib.methods.photoswap import PhotoswapController`` still reads the module.
"""
from .concepts import ConceptData, ConceptTraining, concept_references, learn_concept, load_concept, save_concept
from .drag import DragConfig, DragResult, drag_edit, fit_identity_lora
from .imagic import ImagicConfig, ImagicResult, imagic_edit, imagic_fit, imagic_sample, interpolate
from .p2p import P2PController, P2PEdit, p2p_edit
from .pbe import load_pbe, paint_by_example, paint_by_example_zoomed, tiny_pipeline
from .photoswap import PhotoswapConfig, PhotoswapController, concept_prompt, invert_source, photoswap
from .pnp import PnPConfig, PnPController, pnp_translate
from .sdedit import sdedit

__all__ = ["P2PEdit", "P2PController", "p2p_edit",
           "PnPConfig", "PnPController", "pnp_translate",
           "sdedit",
           "PhotoswapConfig", "PhotoswapController", "photoswap", "invert_source", "concept_prompt",
           "ConceptData", "ConceptTraining", "concept_references", "learn_concept", "load_concept", "save_concept",
           "load_pbe", "paint_by_example", "paint_by_example_zoomed", "tiny_pipeline",
           "ImagicConfig", "ImagicResult", "imagic_edit", "imagic_fit", "imagic_sample", "interpolate",
           "DragConfig", "DragResult", "drag_edit", "fit_identity_lora"]
