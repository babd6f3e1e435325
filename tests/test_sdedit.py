import numpy as np
import pytest
import torch

from course_lib.methods.sdedit import sdedit
from course_lib.metrics import psnr
from course_lib.shapes import make_scene


def test_sdedit_keeps_less_of_the_image_the_more_it_noises(tiny_sd):
    scene = make_scene(10_000_007, n_objects=1)
    target = scene.spec.replace_object(0, color="blue" if scene.spec.objects[0].color != "blue" else "red").caption
    g = lambda: torch.Generator().manual_seed(0)
    # with its own caption, a little noise gives the image back; much noise draws it anew
    kept = [psnr(scene.image, sdedit(tiny_sd, scene.image, scene.caption, s, 10, generator=g())[0]) for s in (0.1, 0.9)]
    assert kept[0] > 35 and kept[0] > kept[1] + 5, kept
    a, b = sdedit(tiny_sd, scene.image, [scene.caption, target], 0.6, 10, generator=g())
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # one noise draw, two prompts


@pytest.mark.parametrize("kw, match", [(dict(strength=0), "strength"), (dict(strength=1.5), "strength"),
                                       (dict(num_inference_steps=0), "num_inference_steps"),
                                       (dict(output="latent"), "output")])
def test_sdedit_refuses_bad_settings(random_tiny, kw, match):
    with pytest.raises(ValueError, match=match):
        sdedit(random_tiny, np.zeros((64, 64, 3), np.uint8), "a red circle", **kw)
