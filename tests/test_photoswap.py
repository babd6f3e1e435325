import pytest
import torch

from course_lib.attention import Layer
from course_lib.methods.photoswap import (PhotoswapConfig, PhotoswapController, concept_prompt, photoswap)
from course_lib.sampling import initial_latents, sample
from course_lib.testing import random_pipeline

SRC = "a large red star on a gray background"
TGT = "a large sks shape on a gray background"


@pytest.fixture(scope="module", params=["tiny-sd", "sd15", "sd21"])
def pipe(request):
    return random_pipeline(request.param)


def test_paper_lambdas_scale_with_the_step_count():
    assert PhotoswapConfig().steps(50) == {"lambda_M": 25, "lambda_A": 20, "lambda_phi": 10}
    assert PhotoswapConfig().steps(20) == {"lambda_M": 10, "lambda_A": 8, "lambda_phi": 4}
    assert PhotoswapConfig(lambda_M=3).steps(20)["lambda_M"] == 3


def test_lambdas_beyond_the_step_count_are_refused(pipe):
    with pytest.raises(ValueError, match="lambda_A=30.*more steps than the run has \\(20\\)"):
        PhotoswapConfig(lambda_A=30).steps(20)
    with pytest.raises(ValueError, match="lambda_phi"):
        photoswap(pipe, SRC, TGT, PhotoswapConfig(lambda_phi=5), num_inference_steps=4, progress=False)
    with pytest.raises(ValueError, match="integer"):
        PhotoswapConfig(lambda_M=2.5)
    with pytest.raises(ValueError, match="integer"):
        PhotoswapConfig(lambda_M=-1)


def test_all_lambdas_zero_reproduces_the_plain_target_generation(pipe):
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(3))
    cfg = PhotoswapConfig(lambda_M=0, lambda_A=0, lambda_phi=0)
    src, tgt = photoswap(pipe, SRC, TGT, cfg, num_inference_steps=3, latents=z, output="tensor", progress=False)
    plain = sample(pipe, [SRC, TGT], 3, 7.5, latents=z, output="tensor", progress=False)
    torch.testing.assert_close(tgt, plain[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(src, plain[0], atol=1e-5, rtol=0)


def test_each_swap_changes_the_target_but_never_the_source(pipe):
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(4))
    base = photoswap(pipe, SRC, TGT, PhotoswapConfig(0, 0, 0), num_inference_steps=3, latents=z, output="latent",
                     progress=False)
    for cfg in (PhotoswapConfig(3, 0, 0), PhotoswapConfig(0, 3, 0), PhotoswapConfig(0, 0, 3)):
        out = photoswap(pipe, SRC, TGT, cfg, num_inference_steps=3, latents=z, output="latent", progress=False)
        torch.testing.assert_close(out[0], base[0], atol=2e-4, rtol=0)  # probs path vs SDPA: float noise only
        assert (out[1] - base[1]).abs().max() > 1e-2, cfg


def test_full_phi_swap_with_identical_prompts_keeps_target_equal_to_source(pipe):
    # with the same prompt, swapping every self-attention output changes nothing: target == source
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(5))
    src, tgt = photoswap(pipe, SRC, SRC, PhotoswapConfig(3, 3, 3), num_inference_steps=3, latents=z,
                         output="latent", progress=False)
    torch.testing.assert_close(src, tgt, atol=1e-5, rtol=0)


class Recorder(PhotoswapController):
    """Logs which swap acts in which layer at which step."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.log = set()

    def edit_qkv(self, layer: Layer, q, k, v):
        q2, k2, v2 = super().edit_qkv(layer, q, k, v)
        if q2 is not q:
            self.log.add(("M", self.step, layer.kind))
        return q2, k2, v2

    def edit_output(self, layer: Layer, out):
        o = super().edit_output(layer, out)
        if o is not out:
            self.log.add(("phi", self.step, layer.kind))
        return o

    def edit_probs(self, layer: Layer, probs):
        p = super().edit_probs(layer, probs)
        if p is not probs:
            self.log.add(("A", self.step, layer.kind))
        return p


def test_swaps_act_for_their_own_steps_and_never_on_the_cross_output(pipe):
    ctl = Recorder(pipe, SRC, TGT, PhotoswapConfig(lambda_M=4, lambda_A=3, lambda_phi=1))
    sample(pipe, [SRC, TGT], 5, 7.5, generator=torch.Generator().manual_seed(0), controllers=ctl, progress=False)
    steps = lambda kind: sorted({s for k, s, _ in ctl.log if k == kind})
    assert steps("phi") == [0, 1]  # steps 0..lambda_phi, as the reference code
    assert steps("M") == [2, 3]  # phi already holds M's effect in steps 0 and 1
    assert steps("A") == [0, 1, 2]
    assert {(k, lk) for k, _, lk in ctl.log} == {("phi", "self"), ("M", "self"), ("A", "cross")}


def test_processors_restored_after_an_exception(pipe):
    before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}

    def boom(i, t, z):
        raise RuntimeError("boom")

    import importlib
    ps = importlib.import_module("course_lib.methods.photoswap")  # the module: course_lib.methods.photoswap is the driver
    orig = ps.sample
    try:
        ps.sample = lambda *a, **k: orig(*a, **{**k, "callback": boom})
        with pytest.raises(RuntimeError, match="boom"):
            photoswap(pipe, SRC, TGT, num_inference_steps=2, progress=False)
    finally:
        ps.sample = orig
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before


def test_local_blend_keeps_latents_outside_the_subject():
    pipe = random_pipeline("tiny-sd")
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(6))
    cfg = PhotoswapConfig(local_blend=["star", "shape"], blend_threshold=0.99, blend_start=0.0)
    src, tgt = photoswap(pipe, SRC, TGT, cfg, num_inference_steps=3, latents=z, output="latent", progress=False)
    same = ((src - tgt).abs().amax(0) < 1e-6).float().mean()  # latent positions (all channels) left as the source's
    s0, t0 = photoswap(pipe, SRC, TGT, PhotoswapConfig(), num_inference_steps=3, latents=z, output="latent",
                       progress=False)
    assert ((s0 - t0).abs().amax(0) < 1e-6).float().mean() == 0  # without LocalBlend every position changes
    assert same > 0.1  # with it, positions outside the subject words' maps stay the source's
    with pytest.raises(ValueError, match="LocalBlend words"):
        photoswap(pipe, SRC, TGT, PhotoswapConfig(local_blend=["dog"]), num_inference_steps=2, progress=False)


def test_real_image_source_by_inversion(tiny_sd):
    from course_lib.shapes import single_object
    s = single_object("star", "red", "gray", size="large")
    src, tgt = photoswap(tiny_sd, SRC, TGT, PhotoswapConfig(), image=s.image, num_inference_steps=10,
                         inversion="negative-prompt", progress=False)
    from course_lib.metrics import psnr
    assert psnr(s.image, src) > 22  # negative-prompt inversion reconstructs the source
    with pytest.raises(ValueError, match="inversion must be"):
        photoswap(tiny_sd, SRC, TGT, image=s.image, num_inference_steps=2, inversion="magic", progress=False)


def test_concept_prompt():
    assert concept_prompt(SRC, ["red", "star"], ["sks", "shape"]) == TGT
    with pytest.raises(ValueError, match="not in the source prompt"):
        concept_prompt(SRC, ["blue"], ["sks"])


def test_lambda_sliders_callback():
    from course_lib.ui import PhotoswapSliders
    pipe = random_pipeline("tiny-sd")
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(7))
    w = PhotoswapSliders(pipe, SRC, TGT, 3, z)
    a = w.select(0, 0, 0)
    plain = sample(pipe, [SRC, TGT], 3, 7.5, latents=z, progress=False)[1]
    import numpy as np
    assert np.abs(np.asarray(a, float) - np.asarray(plain, float)).max() <= 1
    assert w.status.startswith("λ_M = 0, λ_A = 0, λ_φ = 0: generated in")
    assert w.pending((3, 3, 3)).startswith("generating") and w.pending((0, 0, 0)) is None
    b = w.select(3, 3, 3)
    assert w.current is b and len(w.cache) == 2 and w.select(3, 3, 3) is b
    assert w.status == "λ_M = 3, λ_A = 3, λ_φ = 3: looked up"
    with pytest.raises(ValueError, match="more steps than the run has"):
        w.select(4, 0, 0)
    assert len(w.cache) == 2 and w.key == (3, 3, 3)  # a refused setting changes nothing
    fig = w.figure(0, 0, 0, source_image=a)  # the static view: source and target, from the cache
    assert len(fig.axes) == 2 and w.status.endswith("looked up") and w.current is w.cache[(0, 0, 0)]
    box = w.widget(source_image=a)  # the ipywidgets wiring: sliders, a status line, the view, drawn once
    assert len(box.children[0].children) == 3 and box.children[1].value.endswith("looked up")


def test_box_iou_reads_place_and_size_not_outline():
    import numpy as np

    from course_lib.metrics import box_iou, mask_iou
    a = np.zeros((20, 20), bool)
    a[5:15, 5:15] = True
    disc = np.zeros((20, 20), bool)
    yy, xx = np.mgrid[:20, :20]
    disc[(yy - 9.5) ** 2 + (xx - 9.5) ** 2 <= 25] = True  # the circle inscribed in a's box
    assert box_iou(a, disc) == pytest.approx(1.0)
    assert mask_iou(a, disc) < 0.85
    b = np.zeros((20, 20), bool)
    b[5:15, 10:20] = True  # half overlapping: 50 / 150
    assert box_iou(a, b) == pytest.approx(1 / 3)
    assert box_iou(a, np.zeros_like(a)) == 0.0


def test_pose_ceiling_is_the_iou_of_a_perfect_swap():
    from course_tools.bench.photoswap import pose_ceiling
    from course_lib.shapes.world import single_object
    for shape in ("circle", "square", "star"):
        mask_i, box_i = pose_ceiling(single_object(shape, "red", "white", size="large"))
        assert 0.3 < mask_i < 0.9 and 0.3 < box_i < 1.0  # another outline: never the same pixels
    mask_i, box_i = pose_ceiling(single_object("heart", "blue", "white", size="large"))
    assert mask_i == pytest.approx(1.0) and box_i == pytest.approx(1.0)  # the concept's own shape: the same pixels
