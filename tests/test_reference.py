"""The course follows the reference code by default where it differed (each other choice is a named
option): Plug-and-Play's residual-branch injection and its layers, LocalBlend's running sum of edited
maps with nearest upsampling, refinement's padding, the step windows, Photoswap's phi swap."""
import pytest
import torch

from course_lib.attention import BatchLayout
from course_lib.methods.p2p import P2PController, P2PEdit, refine_mapping
from course_lib.methods.photoswap import PhotoswapConfig, PhotoswapController
from course_lib.methods.pnp import PnPConfig, PnPController, pnp_translate, reference_excluded
from course_lib.testing import random_pipeline


def _block_outputs(pipe, config, after="up_blocks.1.attentions.1"):
    """The output of ``up_blocks.1.resnets.1`` after any injection, as the next module (``after``) receives
    it (guided batch: 2 halves x [source, target]), at every UNet call of a PnP run."""
    seen = []
    keep = lambda m, args: seen.append(args[0].detach().clone()) if args[0].shape[0] == 4 else None  # not inversion
    handle = pipe.unet.get_submodule(after).register_forward_pre_hook(keep)
    img = torch.rand(1, 3, 64, 64)
    try:
        pnp_translate(pipe, img, "a red square", "a red circle", config=config, num_inference_steps=3, progress=False)
    finally:
        handle.remove()
    return seen


def test_pnp_injects_the_residual_branch_and_keeps_the_targets_skip_path(random_tiny):
    full = dict(feature_steps=1.0, attention_steps=0.0)
    out = _block_outputs(random_tiny, PnPConfig(feature_injection="output", **full))
    res = _block_outputs(random_tiny, PnPConfig(**full))
    # "output": the target's block output is the source's; "residual" (the reference): only the branch
    # before the skip is the source's, so the target's output differs by its own skip input
    for o, r in zip(out, res):
        halves_o, halves_r = o.view(2, 2, *o.shape[1:]), r.view(2, 2, *r.shape[1:])
        torch.testing.assert_close(halves_o[:, 1], halves_o[:, 0])
        assert not torch.allclose(halves_r[:, 1], halves_r[:, 0])
    block = random_tiny.unet.get_submodule("up_blocks.1.resnets.1")
    ctl = PnPController(PnPConfig())
    ctl.attach(random_tiny.unet)
    try:
        assert len(block.conv2._forward_hooks) == 1 and not block._forward_hooks
    finally:
        ctl.detach()
    assert not block.conv2._forward_hooks


@pytest.mark.parametrize("kind", ["tiny-sd", "sd15", "sd21"])
def test_pnp_attention_layers_leave_out_the_lowest_decoder_levels_first_transformer(kind):
    unet = random_pipeline(kind, sample_size=16 if kind != "tiny-sd" else None).unet
    assert reference_excluded(unet) == {"up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor"}
    ctl = PnPController(PnPConfig(attention_layers="all"))
    ctl.attach(unet)
    ctl.detach()
    assert ctl.excluded == set()


def test_windows_count_steps_as_the_reference_code():
    edit = P2PEdit(cross_replace_steps=0.35, self_replace_steps=0.35, blend_start=0.35)
    assert edit.step_windows(10) == {"cross": 3, "self": 3, "blend_from": 3}  # int(0.35 * 11), int(0.35 * 10)
    assert P2PEdit(cross_replace_steps=0.35, self_replace_steps=0.35, blend_start=0.35,
                   windows="round").step_windows(10) == {"cross": 4, "self": 4, "blend_from": 4}
    assert P2PEdit().step_windows(50) == P2PEdit(windows="round").step_windows(50) == \
        {"cross": 40, "self": 20, "blend_from": 10}
    assert PnPConfig(feature_steps=0.35, attention_steps=0.35).step_windows(10) == {"feature": 3, "attention": 3}
    assert PnPConfig(feature_steps=0.35, attention_steps=0.35, windows="round").step_windows(10) == \
        {"feature": 4, "attention": 4}


def test_refinement_pads_read_the_same_source_position(random_tiny):
    tok = random_tiny.tokenizer
    for src, tgt in (("a red circle", "a big red circle"), ("a big red circle", "a red circle")):
        m, a = refine_mapping(tok, src, tgt, 32)
        n = len(tok(tgt).input_ids)
        assert torch.equal(m[n:], torch.arange(n, 32)) and bool((a[n:] == 1).all())
        ms, as_ = refine_mapping(tok, src, tgt, 32, pads="shifted")
        assert not torch.equal(ms[n:], torch.arange(n, 32)) or not bool((as_[n:] == 1).all())
    # the new word keeps its own map
    m, a = refine_mapping(tok, "a red circle", "a big red circle", 32)
    assert a[2] == 0 and a[1] == 1 and m[3] == 2


def test_local_blend_reads_the_running_sum_of_the_edited_maps(random_tiny):
    ctl = P2PController(random_tiny, ["a red circle", "a red square"], P2PEdit(local_blend=["circle", "square"]))
    ctl.begin(BatchLayout(2, True), 10)
    first, second = torch.rand(2, 64, 32), torch.rand(2, 64, 32)
    ctl.step_maps = [first]
    assert torch.equal(ctl.blend_maps(), first)
    ctl.set_step(1)
    ctl.step_maps = [second]
    torch.testing.assert_close(ctl.blend_maps(), first + second)
    step_only = P2PController(random_tiny, ["a red circle", "a red square"],
                              P2PEdit(local_blend=["circle"], blend_maps="step"))
    step_only.begin(BatchLayout(2, True), 10)
    step_only.step_maps = [first]
    step_only.blend_maps()
    step_only.step_maps = [second]
    assert torch.equal(step_only.blend_maps(), second)


def test_local_blend_stores_the_maps_after_the_edit(random_tiny):
    from course_lib.attention import unet_layers
    layer = next(v for v in unet_layers(random_tiny.unet).values() if v.is_cross and v.resolution == 8)
    probs = torch.rand(4, 4, 64, 32).softmax(-1)  # (2 halves x 2 prompts, heads, queries, keys)
    for edited in (True, False):
        ctl = P2PController(random_tiny, ["a red circle", "a red square"],
                            P2PEdit(local_blend=["circle", "square"], blend_edited=edited))
        ctl.begin(BatchLayout(2, True), 10)
        out = ctl.edit_probs(layer, probs)
        want = (out if edited else probs).view(2, 2, 4, 64, 32)[-1].mean(1)
        torch.testing.assert_close(ctl.step_maps[0], want)
    assert not torch.allclose(out, probs)  # the word swap changed the target's maps


def test_photoswap_swaps_phi_in_both_halves_of_every_self_layer_through_lambda_phi(random_tiny):
    from course_lib.attention import unet_layers
    layers = [v for v in unet_layers(random_tiny.unet).values() if v.is_self]
    ctl = PhotoswapController(random_tiny, "a red star", "a sks shape",
                              PhotoswapConfig(lambda_phi=2, self_resolution_fraction=0.25))
    ctl.begin(BatchLayout(2, True), 10)
    assert ctl.phi_until == 3  # steps 0, 1 and 2: <= lambda_phi
    ctl.set_step(2)
    out = torch.rand(4, 2, 16, 8)
    for layer in layers:  # also those outside self_resolution_fraction
        new = ctl.edit_output(layer, out).view(2, 2, 2, 16, 8)
        torch.testing.assert_close(new[:, 1], new[:, 0])
    old = PhotoswapController(random_tiny, "a red star", "a sks shape",
                              PhotoswapConfig(lambda_phi=2, phi_halves="conditional", phi_window="exclusive"))
    old.begin(BatchLayout(2, True), 10)
    assert old.phi_until == 2
    old.set_step(1)
    new = old.edit_output(layers[0], out).view(2, 2, 2, 16, 8)
    assert not torch.allclose(new[0, 1], new[0, 0]) and torch.equal(new[1, 1], new[1, 0])


def test_photoswap_aligns_cross_maps_so_the_concept_token_keeps_its_map(random_tiny):
    ctl = PhotoswapController(random_tiny, "a red star", "a sks shape", PhotoswapConfig())
    assert ctl.edit.kind == "refine"
    a = ctl.alphas[0]
    assert a[1] == 1 and a[2] == 0 and a[3] == 0  # "a" from the source; "sks", "shape" their own
    swap = PhotoswapController(random_tiny, "a red star", "a sks shape", PhotoswapConfig(cross_alignment="swap"))
    assert swap.edit.kind == "swap" and bool((swap.alphas == 1).all())
