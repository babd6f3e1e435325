"""Imagic and the one-image fine-tuning helpers, on random tiny pipelines (quality does not matter here)."""
import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.finetune import (check_image, diffusion_loss, lora_copy, lora_state_dict, trainable_copy,
                                 use_unet)
from course_lib.methods.imagic import (ImagicConfig, check_eta, imagic_edit, imagic_fit, imagic_sample,
                                       interpolate)
from course_lib.sampling import encode, encode_text
from course_lib.testing import random_pipeline

torch.set_num_threads(1)


def _image(size=64, seed=0):
    rng = np.random.default_rng(seed)
    a = np.zeros((size, size, 3), np.uint8) + 200
    a[size // 4: size // 2, size // 4: size // 2] = rng.integers(0, 255, 3)
    return Image.fromarray(a)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


QUICK = dict(embedding_steps=3, finetune_steps=3, num_inference_steps=3, batch=1)


def test_interpolation_endpoints_and_eta_range():
    e_tgt, e_opt = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    torch.testing.assert_close(interpolate(e_tgt, e_opt, 1.0), e_tgt)
    torch.testing.assert_close(interpolate(e_tgt, e_opt, 0.0), e_opt)
    torch.testing.assert_close(interpolate(e_tgt, e_opt, 0.25), 0.25 * e_tgt + 0.75 * e_opt)
    for bad in (-0.1, 1.6, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            check_eta(bad)
    with pytest.raises(ValueError, match="eta"):
        ImagicConfig(eta=2.0)
    with pytest.raises(ValueError, match="shape"):
        interpolate(e_tgt, torch.randn(1, 4, 8), 0.5)
    with pytest.raises(ValueError, match="finetune"):
        ImagicConfig(finetune="dreambooth")


def test_check_image_conversions_and_errors(random_tiny):
    rgba = _image().convert("RGBA")
    assert check_image(random_tiny, rgba).mode == "RGB"
    assert check_image(random_tiny, _image().convert("L")).mode == "RGB"
    assert check_image(random_tiny, np.asarray(_image())).size == (64, 64)
    with pytest.raises(ValueError, match="resize"):
        check_image(random_tiny, _image(48))
    with pytest.raises(ValueError, match="mode"):
        check_image(random_tiny, Image.new("I;16", (64, 64)))
    with pytest.raises(TypeError):
        check_image(random_tiny, "image.png")
    assert check_image(random_tiny, np.zeros((64, 64, 3), np.float32)).size == (64, 64)  # float: 0..1
    with pytest.raises(ValueError, match="divide a 0..255 image by 255"):
        check_image(random_tiny, np.full((64, 64, 3), 128.0, np.float32))


def test_embedding_optimisation_lowers_the_loss_and_leaves_the_model(random_tiny):
    pipe = random_tiny
    before = _snapshot(pipe.unet)
    cfg = ImagicConfig(embedding_steps=25, embedding_lr=5e-2, finetune="none", batch=4, num_inference_steps=2)
    res = imagic_fit(pipe, _image(), "a red square", cfg, progress=False)
    assert _same(before, _snapshot(pipe.unet))
    assert res.unet is None
    assert not torch.equal(res.optimized_embedding, res.target_embedding)
    # the optimised embedding fits the image better than the target text's (same (t, eps) draws)
    z0 = encode(pipe, _image())
    with torch.no_grad():
        losses = [np.mean([diffusion_loss(pipe, pipe.unet, z0, e, 8, torch.Generator().manual_seed(s)).item()
                           for s in range(4)]) for e in (res.target_embedding, res.optimized_embedding)]
    assert losses[1] < losses[0]


def test_full_finetuning_returns_a_copy(random_tiny):
    pipe = random_tiny
    before = _snapshot(pipe.unet)
    res = imagic_fit(pipe, _image(), "a red square", ImagicConfig(**QUICK, finetune_lr=1e-3), progress=False)
    assert _same(before, _snapshot(pipe.unet)), "the shared pipeline's UNet changed"
    assert res.unet is not pipe.unet
    assert not _same(before, _snapshot(res.unet)), "fine-tuning changed nothing"
    assert len(res.finetune_losses) == 3


def test_lora_finetuning_changes_only_the_adapter(random_tiny):
    pipe = random_tiny
    before = _snapshot(pipe.unet)
    res = imagic_fit(pipe, _image(), "a red square", ImagicConfig(**QUICK, finetune="lora", lora_rank=2),
                     progress=False)
    assert _same(before, _snapshot(pipe.unet))
    tuned = res.unet.state_dict()
    lora = {k for k in tuned if "lora_" in k}
    assert lora, "no LoRA weights in the fine-tuned copy"
    for k, v in tuned.items():  # base weights identical to the original's
        if "lora_" not in k:
            assert torch.equal(v, before[k.replace(".base_layer", "")]), k
    state = lora_state_dict(res.unet)
    assert state and all("lora" in k for k in state)
    assert any(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k), "lora_B stayed zero"


def test_lora_copy_starts_equal_to_the_original(random_tiny):
    pipe = random_tiny
    z = torch.randn(1, 4, 16, 16)
    cond = encode_text(pipe, "a circle")
    tuned = lora_copy(pipe.unet, rank=4).eval()
    with torch.no_grad():
        torch.testing.assert_close(tuned(z, 10, encoder_hidden_states=cond).sample,
                                   pipe.unet(z, 10, encoder_hidden_states=cond).sample)
    assert all(p.requires_grad == ("lora_" in n) for n, p in tuned.named_parameters())


def test_lora_copy_draws_its_adapter_from_its_seed_and_leaves_the_global_generator(random_tiny):
    """The same seed gives the same adapter whatever the global generator's state (torch seeds it
    differently in every process); another seed another adapter; the global state is untouched."""
    def adapter(seed):
        return {k: v.clone() for k, v in lora_copy(random_tiny.unet, rank=2, seed=seed).state_dict().items()
                if "lora_A" in k}
    torch.manual_seed(1)
    a = adapter(0)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = adapter(0)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = adapter(1)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_use_unet_restores_after_an_error(random_tiny):
    pipe = random_tiny
    original = pipe.unet
    copy = trainable_copy(pipe.unet)
    with pytest.raises(RuntimeError):
        with use_unet(pipe, copy):
            assert pipe.unet is copy
            raise RuntimeError("boom")
    assert pipe.unet is original


def test_failed_fit_leaves_the_pipeline_untouched(random_tiny):
    pipe = random_tiny
    before = _snapshot(pipe.unet)
    grads = [p.requires_grad for p in pipe.unet.parameters()]
    with pytest.raises(ValueError, match="resize"):
        imagic_fit(pipe, _image(32), "a red square", ImagicConfig(**QUICK), progress=False)
    with pytest.raises(ValueError, match="target text"):
        imagic_fit(pipe, _image(), "  ", ImagicConfig(**QUICK), progress=False)
    assert _same(before, _snapshot(pipe.unet))
    assert grads == [p.requires_grad for p in pipe.unet.parameters()]


def test_sampling_is_deterministic_and_eta_zero_differs_from_one(random_tiny):
    pipe = random_tiny
    res = imagic_fit(pipe, _image(), "a red square", ImagicConfig(**QUICK, embedding_lr=0.5), progress=False)
    a = imagic_sample(pipe, res, [0.0, 1.0], seed=3, output="tensor")
    b = imagic_sample(pipe, res, [0.0, 1.0], seed=3, output="tensor")
    assert a.shape == (2, 3, 64, 64)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])
    pre = imagic_sample(pipe, res, 0.0, seed=3, use_finetuned=False, output="tensor")
    assert not torch.allclose(pre[0], a[0]), "the fine-tuned copy was not used"


@pytest.mark.parametrize("kind", ["sd15", "sd21"])
def test_imagic_runs_on_sd_layouts(kind):
    pipe = random_pipeline(kind, sample_size=8)
    before = _snapshot(pipe.unet)
    images, res = imagic_edit(pipe, _image(64), "a blue star", ImagicConfig(**QUICK, finetune="lora", lora_rank=2),
                              etas=[0.5], progress=False)
    assert images[0].size == (64, 64)
    assert _same(before, _snapshot(pipe.unet))
    assert res.seconds["embedding"] >= 0 and "sample" in res.seconds


def test_bench_reads_a_true_edit_as_succeeded_and_kept_and_the_input_as_not_edited():
    from course_lib.evaluate import edit_succeeded, held_out_scenes, imagic_case, object_kept
    from course_tools.bench.imagic import VALIDATION_OFFSET
    from course_lib.shapes.world import render_spec
    scenes = held_out_scenes(9, offset=VALIDATION_OFFSET)
    good = 0
    for i, s in enumerate(scenes):
        spec, kind, new = imagic_case(s, i)
        truth = render_spec(spec).image  # the edit done right: the oracle's ground truth
        assert not edit_succeeded(s.image, s.spec, kind, new), f"case {i} ({kind}): the input read as edited"
        if kind != "color":  # an unedited input still shows its object (a colour edit asks for the new colour)
            assert object_kept(s.image, s, kind, new)
        good += edit_succeeded(truth, s.spec, kind, new) and object_kept(truth, s, kind, new)
        other = scenes[(i + 1) % len(scenes)]
        if other.objects[0].shape != s.objects[0].shape:  # another object, elsewhere: not kept
            assert not object_kept(other.image, s, "aspect", "tall")
    assert good >= 8, f"only {good} of 9 true edits read as succeeded and kept"


def test_choose_eta_takes_the_best_share_and_the_smaller_eta_on_a_tie():
    from course_tools.bench.imagic import choose_eta
    assert choose_eta({0.5: [False, False], 0.7: [True, False], 0.9: [True, True], 1.0: [True, True]}) == 0.9
    assert choose_eta({1.0: [True], 0.6: [True], 0.8: [False]}) == 0.6
    with pytest.raises(ValueError):
        choose_eta({0.7: []})


def test_eta_slider_looks_up_cached_etas_and_generates_the_others(random_tiny):
    from course_lib.ui import EtaSlider
    pipe = random_tiny
    res = imagic_fit(pipe, _image(), "a red square", ImagicConfig(**QUICK, embedding_lr=0.5), progress=False)
    strip = imagic_sample(pipe, res, [0.0, 1.0], seed=3)
    w = EtaSlider(pipe, res, seed=3, images={0.0: strip[0], 1.0: strip[1]}, describe=lambda im: "seen")
    assert w.select(1.0) is strip[1] and w.status == "eta = 1: looked up"
    mid = w.select(0.5)  # not cached: generated from the same z_T, then kept
    assert w.status.startswith("eta = 0.5: generated in") and w.cache[0.5] is mid and w.current is mid
    want = imagic_sample(pipe, res, 0.5, seed=3)[0]
    assert np.abs(np.asarray(mid, float) - np.asarray(want, float)).max() <= 1
    w.precompute([0.2, 0.5, 0.2])  # one new eta, generated once
    assert sorted(w.cache) == [0.0, 0.2, 0.5, 1.0]
    assert w.select(0.2000001) is w.cache[0.2] and w.status.endswith("looked up")
    with pytest.raises(ValueError, match="makes no sense"):
        w.select(2.0)
    fig = w.figure(0.0, source_image=_image())
    assert len(fig.axes) == 2 and "seen" in fig.axes[1].get_title()
    box = w.widget(source_image=_image(), eta=1.0)  # the ipywidgets wiring builds and draws once
    slider, status = box.children[0].children
    assert slider.value == 1.0 and status.value == "eta = 1: looked up"
    slider.value = 0.3  # a synthetic move to an eta not cached: generated, and the status says so
    assert 0.3 in w.cache and status.value.startswith("eta = 0.3: generated")
