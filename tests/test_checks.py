"""Bad inputs get a clear error that names the fix, or a documented conversion; nothing is left changed
after an error; no library call moves torch's global random generator."""
import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image

from course_lib import checks
from course_lib.attention import unet_layers
from course_lib.methods.drag import DragConfig, drag_edit
from course_lib.methods.imagic import ImagicConfig
from course_lib.methods.p2p import P2PController, P2PEdit, blend_resolution, p2p_edit
from course_lib.methods.photoswap import PhotoswapConfig, photoswap
from course_lib.methods.pnp import PnPConfig, pnp_translate
from course_lib.inversion import ddim_invert
from course_lib.sampling import sample, to_tensor
from course_lib.testing import random_pipeline


def _rgb(size=64, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


# ----------------------------------------------------------------------------- images: dtype decides the range
def test_uint8_and_float_images_read_the_same():
    a = np.asarray(_rgb())
    ref = checks.image_tensor(a)
    torch.testing.assert_close(checks.image_tensor(a.astype(np.float32) / 255), ref)
    torch.testing.assert_close(checks.image_tensor(torch.from_numpy(a).permute(2, 0, 1)), ref)
    torch.testing.assert_close(checks.image_tensor(Image.fromarray(a)), ref)
    # a dark uint8 image (maximum 1) is still 0..255, not 0..1
    dark = np.ones((64, 64, 3), np.uint8)
    assert float(checks.image_tensor(dark).max()) == pytest.approx(1 / 255)
    assert float(to_tensor(dark).max()) == pytest.approx(1 / 255)


@pytest.mark.parametrize("bad, match", [
    (np.full((64, 64, 3), 200.0, np.float32), "divide a 0..255 image by 255"),
    (torch.full((3, 64, 64), 255.0), "divide a 0..255 image by 255"),
    (np.zeros((64, 64, 3), bool), "mask, not an image"),
    (np.zeros((3, 64, 64), np.uint8), "channels first"),
    (np.full((64, 64, 3), 300, np.int64), "0..255"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
    (torch.zeros(2, 3, 64, 64), "batch of 2"),
    ("image.png", "PIL image, a NumPy array or a tensor"),
])
def test_bad_images_are_clear_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        checks.image_tensor(bad, 64)


def test_image_modes_are_converted_and_transparency_lies_over_white():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    assert checks.image(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert checks.image(Image.new("L", (64, 64), 7)).getpixel((3, 3)) == (7, 7, 7)
    assert checks.image(Image.new("P", (64, 64))).mode == "RGB"
    with pytest.raises(ValueError, match="mode 'I;16'"):
        checks.image(Image.new("I;16", (64, 64)))


def test_wrong_size_is_an_error_not_a_resize(random_tiny):
    for fn in (lambda im: ddim_invert(random_tiny, im, "", 2, progress=False),
               lambda im: pnp_translate(random_tiny, im, "a red circle", num_inference_steps=2, progress=False),
               lambda im: photoswap(random_tiny, "a red circle", "a red square", image=im, num_inference_steps=2,
                                    inversion="ddim", progress=False)):
        with pytest.raises(ValueError, match="63x63 but this model works at 64x64"):
            fn(_rgb(63))
        with pytest.raises(ValueError, match="512x512 but this model works at 64x64"):
            fn(_rgb(512))


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("make", [
    lambda m: m,  # bool
    lambda m: m.astype(np.uint8),  # 0/1
    lambda m: m.astype(np.uint8) * 255,  # 0/255
    lambda m: m.astype(np.float32),  # 0..1
    lambda m: torch.from_numpy(m)[None].float(),  # 1 x H x W tensor
    lambda m: Image.fromarray(m.astype(np.uint8) * 255),  # PIL L
    lambda m: np.repeat(m[..., None].astype(np.uint8) * 255, 3, -1),  # H x W x 3
])
def test_masks_of_every_form_read_the_same(make):
    m = np.zeros((64, 64), bool)
    m[10:20, 30:40] = True
    np.testing.assert_array_equal(checks.mask(make(m), 64), m)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((64, 64), np.uint8), "empty"),
    (np.zeros((32, 32), bool), "32x32 but the image is 64x64"),
    (np.full((64, 64), 2.0), "outside 0..1"),
    (np.full((64, 64), -3, np.int32), "integer values"),
])
def test_bad_masks_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        checks.mask(bad, 64)


def test_drag_reads_a_uint8_0_1_mask(random_tiny):
    from course_lib.methods.drag import check_mask
    m = np.zeros((64, 64), np.uint8)
    m[20:40, 20:40] = 1
    assert check_mask(m, 64).sum() == 400


def test_paint_by_example_takes_a_uint8_array_as_drag_and_imagic_do():
    from course_lib.methods.pbe.inpaint import check_image
    pipe = random_pipeline("tiny-sd")
    assert check_image(pipe, np.asarray(_rgb())).size == (64, 64)


# ----------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("value, ok", [(50, 50), (50.0, 50), (np.int64(3), 3), (0, None), (-1, None), (2.5, None),
                                       (True, None), (float("nan"), None), ("50", None)])
def test_steps(value, ok):
    if ok is None:
        with pytest.raises((ValueError, TypeError), match="num_inference_steps"):
            checks.steps(value)
    else:
        assert checks.steps(value) == ok


@pytest.mark.parametrize("s", [float("nan"), -1.0, float("inf")])
def test_guidance_out_of_range_is_refused_not_read_as_one(random_tiny, s):
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
        sample(random_tiny, "a red circle", 2, s, generator=torch.Generator().manual_seed(0), progress=False)


def test_guidance_zero_is_the_unconditional_model(random_tiny):
    g = lambda: torch.Generator().manual_seed(0)
    a = sample(random_tiny, "a red circle", 2, 0.0, generator=g(), progress=False, output="latent")
    b = sample(random_tiny, "a blue star", 2, 0.0, generator=g(), progress=False, output="latent")
    c = sample(random_tiny, "a blue star", 2, 1.0, generator=g(), progress=False, output="latent")
    torch.testing.assert_close(a, b)  # the prompt plays no part
    assert not torch.allclose(b, c)


@pytest.mark.parametrize("steps", [0, -1, 2.5])
def test_bad_step_counts_are_clear_errors_everywhere(random_tiny, steps):
    g = torch.Generator().manual_seed(0)
    for fn in (lambda: sample(random_tiny, "a red circle", steps, generator=g, progress=False),
               lambda: p2p_edit(random_tiny, "a red circle", "a red square", num_inference_steps=steps, progress=False),
               lambda: photoswap(random_tiny, "a red circle", "a red square", num_inference_steps=steps, progress=False),
               lambda: ddim_invert(random_tiny, _rgb(), "", steps, progress=False)):
        with pytest.raises(ValueError, match="num_inference_steps must be"):
            fn()


@pytest.mark.parametrize("make", [
    lambda: P2PEdit(blend_threshold=2),
    lambda: P2PEdit(blend_threshold=1.0),
    lambda: P2PEdit(self_resolution_fraction=-1),
    lambda: P2PEdit(cross_replace_steps=float("nan")),
    lambda: PhotoswapConfig(blend_threshold=1.5),
    lambda: PnPConfig(feature_steps=1.5),
    lambda: DragConfig(lam=-1),
    lambda: DragConfig(lr=0),
    lambda: DragConfig(guidance_scale=float("nan")),
    lambda: ImagicConfig(guidance_scale=-2),
])
def test_out_of_range_settings_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_handles_on_their_targets_are_an_error_not_zero_iterations(random_tiny):
    with pytest.raises(ValueError, match="nothing to drag"):
        drag_edit(random_tiny, _rgb(), [(20, 20)], [(20, 20)], config=DragConfig(use_lora=False), progress=False)


# ----------------------------------------------------------------------------- prompts past the window
def test_prompts_past_the_token_window_are_refused(random_tiny):
    long = "a red circle " + "and a blue star " * 10
    assert len(random_tiny.tokenizer.tokenize(long)) + 2 > random_tiny.tokenizer.model_max_length
    with pytest.raises(ValueError, match="tokens; this text encoder reads 30"):
        sample(random_tiny, long, 2, progress=False)
    with pytest.raises(ValueError, match="tokens; this text encoder reads 30"):  # was an IndexError
        P2PController(random_tiny, ["a red circle", long], P2PEdit(kind="reweight", reweight={"star": 2.0}))
    with pytest.raises(ValueError, match="tokens; this text encoder reads 30"):
        p2p_edit(random_tiny, "a red circle", long, P2PEdit(local_blend=["star"]), num_inference_steps=2,
                 progress=False)


# ----------------------------------------------------------------------------- nothing left changed
def test_pnp_with_a_bad_feature_layer_leaves_no_hook(random_tiny):
    before = {n: len(m._forward_hooks) for n, m in random_tiny.unet.named_modules()}
    cfg = PnPConfig(feature_layers=("up_blocks.1.resnets.1", "up_blocks.7.resnets.0"))
    with pytest.raises(ValueError, match="up_blocks.1.resnets.0") as e:  # lists the decoder's blocks, not only the mid
        pnp_translate(random_tiny, _rgb(), "a red square", config=cfg, num_inference_steps=2, progress=False)
    assert "mid_block.resnets.0" in str(e.value) and "down_blocks.0.resnets.0" in str(e.value)
    assert {n: len(m._forward_hooks) for n, m in random_tiny.unet.named_modules()} == before
    sample(random_tiny, "a red circle", 2, progress=False)  # the pipeline still samples


def test_library_calls_leave_the_global_generator_alone(tmp_path):
    from course_lib.methods.concepts import ConceptTraining, learn_concept, load_concept, save_concept
    pipe = random_pipeline("tiny-sd")
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    learn_concept(pipe, config=ConceptTraining(method="lora", steps=1, class_images=2, batch=1), progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    ti, fresh = random_pipeline("tiny-sd"), random_pipeline("tiny-sd")  # (these seed the global generator)
    state = torch.random.get_rng_state()
    learn_concept(ti, config=ConceptTraining(method="textual_inversion", steps=1, batch=1), progress=False)
    save_concept(ti, tmp_path / "ti", "textual_inversion")
    load_concept(fresh, tmp_path / "ti", "textual_inversion")
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_concept_token_is_never_a_word_the_model_knows(tmp_path):
    from course_lib.methods.concepts import ConceptTokenError, ConceptTraining, learn_concept, load_concept, \
        save_concept
    pipe = random_pipeline("tiny-sd")
    learn_concept(pipe, config=ConceptTraining(method="textual_inversion", steps=1, batch=1), progress=False)
    save_concept(pipe, tmp_path / "ti", "textual_inversion")
    with pytest.raises(ConceptTokenError, match="already in the tokenizer's vocabulary"):
        load_concept(random_pipeline("tiny-sd"), tmp_path / "ti", "textual_inversion", token="red")
    with pytest.raises(FileNotFoundError, match="learned_embeds.safetensors is missing"):
        load_concept(random_pipeline("tiny-sd"), tmp_path / "empty", "textual_inversion")


@pytest.mark.parametrize("method", ["lora", "dreambooth", "textual_inversion"])
def test_an_interrupted_learn_concept_puts_the_pipeline_back(method):
    from course_lib.methods import concepts
    pipe = random_pipeline("tiny-sd")
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    vocab = len(pipe.tokenizer)
    rows = pipe.text_encoder.get_input_embeddings().weight.shape[0]
    calls = {"n": 0}
    real = concepts.F.mse_loss

    def interrupt(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    concepts.F.mse_loss = interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            concepts.learn_concept(pipe, config=concepts.ConceptTraining(method=method, steps=5, class_images=2,
                                                                         batch=1), progress=False)
    finally:
        concepts.F.mse_loss = real
    assert not getattr(pipe.unet, "peft_config", None)
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert len(pipe.tokenizer) == vocab and pipe.text_encoder.get_input_embeddings().weight.shape[0] == rows
    assert not pipe.unet.training and not any(p.requires_grad for p in pipe.unet.parameters())


# ----------------------------------------------------------------------------- layouts
def test_local_blend_reads_a_resolution_the_unet_has():
    for size in (16, 24):
        pipe = random_pipeline("tiny-sd", sample_size=size)
        have = {layer.resolution for layer in unet_layers(pipe.unet).values() if layer.is_cross}
        assert blend_resolution(pipe.unet) in have
    assert blend_resolution(random_pipeline("tiny-sd").unet) == 8  # as before on tiny-sd


def test_local_blend_acts_at_24x24_latents():
    pipe = random_pipeline("tiny-sd", sample_size=24)
    g = lambda: torch.Generator().manual_seed(0)
    edit = P2PEdit(local_blend=["circle", "square"], blend_threshold=0.5, blend_start=0.0)
    out = p2p_edit(pipe, "a red circle", "a red square", edit, num_inference_steps=3, generator=g(),
                   progress=False, output="latent")
    plain = p2p_edit(pipe, "a red circle", "a red square", P2PEdit(), num_inference_steps=3, generator=g(),
                     progress=False, output="latent")
    assert not torch.allclose(out[1], plain[1])  # LocalBlend changed the target


def test_drag_control_levels_that_match_no_layer_are_refused():
    pipe = random_pipeline("tiny-sd")
    cfg = pipe.unet.config
    # an SDXL-style layout: no attention at full resolution
    pipe.unet = UNet2DConditionModel.from_config({**dict(cfg), "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D",
                                                                           "CrossAttnDownBlock2D"],
                                        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]})
    with pytest.raises(ValueError, match=r"match no self-attention layer of this UNet .* its levels there are \[1, 2\]"):
        drag_edit(pipe, _rgb(), [(20, 20)], [(28, 20)], config=DragConfig(use_lora=False), progress=False)
