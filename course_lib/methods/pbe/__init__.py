"""Paint by Example (Yang et al., CVPR 2023): exemplar-guided inpainting.

Inputs: a source image x_s, a binary mask m (1 = the region to repaint) and a reference image x_r.
The output keeps x_s where m = 0 and shows the reference's object, adapted to the scene, where m = 1.

The model, as the paper builds it and :mod:`course_tools.train.pbe` trains it on Shapes World:

- a **9-channel inpainting UNet** (noisy latent z_t, masked-image latent E(x_s * (1 - m)), the
  keep-mask at latent size), initialised from the text-to-image UNet with zero weights for the 5
  new input channels;
- an **image-embedding bottleneck**: the CLIP image encoder's class token only, passed through a
  mapper (diffusers' ``PaintByExampleMapper``: single-token transformer blocks), a LayerNorm and a
  projection to the UNet's cross-attention width — one token, so the model cannot copy pixels;
  the **naive** variant conditions on all patch tokens instead (and learns copy-paste, paper Fig. 3);
- a **learnable null vector** v that replaces the condition in 20% of training samples, so that
  guidance eps~ = eps(v) + s (eps(c) - eps(v)) controls how close the result stays to the exemplar.

The bottleneck model is diffusers' ``PaintByExamplePipeline`` (``image_encoder`` a
``PaintByExampleImageEncoder``); :func:`load_pbe` loads the course's tiny one or the released
``Fantasy-Studio/Paint-by-Example`` checkpoint by hub id, and :func:`paint_by_example` runs either
(and the naive variant) through the course's own sampling loop.

The module is split by job: :mod:`.model` (encoders, the inpainting UNet, the pipeline, the trained
parameters), :mod:`.checkpoints` (the course's weights, saving and loading), :mod:`.inpaint`
(inference: :func:`paint_by_example`) and :mod:`.data` (the self-supervised training pairs); every
name is importable from ``course_lib.methods.pbe`` as well.
"""
from .checkpoints import (RELEASED, TINY, base_fingerprint, from_pretrained_pbe, load_pbe, save_pbe, tiny_pipeline,
                          trained_on)
from .data import PbEData, augment_reference, bezier_mask, boxable, object_box, self_supervised_sample
from .inpaint import (MAX_ZOOM, ZOOM_CONTEXT, check_image, check_mask, check_reference, encode_reference, mask_image,
                      mask_inputs, model_size, paint_by_example, paint_by_example_zoomed, zoom_box)
from .model import (ENCODER_PARTS, UNET_PARTS, NaiveImageEncoder, build_image_encoder, build_pipeline,
                    image_encoder_class, image_encoder_config, inpainting_unet, load_trainable_state,
                    trainable_names, trainable_state, vision_tower)

__all__ = ["RELEASED", "TINY", "base_fingerprint", "from_pretrained_pbe", "load_pbe", "save_pbe", "tiny_pipeline",
           "trained_on", "PbEData", "augment_reference", "bezier_mask", "boxable", "object_box",
           "self_supervised_sample", "MAX_ZOOM", "ZOOM_CONTEXT", "check_image", "check_mask", "check_reference",
           "encode_reference", "mask_image", "mask_inputs", "model_size", "paint_by_example",
           "paint_by_example_zoomed", "zoom_box", "ENCODER_PARTS", "UNET_PARTS", "NaiveImageEncoder",
           "build_image_encoder", "build_pipeline", "image_encoder_class", "image_encoder_config", "inpainting_unet",
           "load_trainable_state", "trainable_names", "trainable_state", "vision_tower"]
