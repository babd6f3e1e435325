import pytest
import torch

from course_lib.attention import AttentionStore, Controller, attention_control, unet_layers
from course_lib.sampling import initial_latents, sample
from course_lib.testing import random_pipeline


@pytest.fixture(scope="module", params=["tiny-sd", "sd15", "sd21"])
def pipe(request):
    return random_pipeline(request.param)


def test_layer_parsing(pipe):
    layers = unet_layers(pipe.unet)
    n_blocks = len(pipe.unet.config.block_out_channels)
    size = pipe.unet.config.sample_size
    assert layers and all(l.kind in ("self", "cross") for l in layers.values())
    assert sum(l.is_self for l in layers.values()) == sum(l.is_cross for l in layers.values())
    for l in layers.values():
        assert ("attn1" in l.name) == l.is_self
        assert l.resolution == size // 2 ** l.level
    mids = [l for l in layers.values() if l.place == "mid"]
    assert mids and all(l.level == n_blocks - 1 for l in mids)
    # the highest-resolution up block's layers sit at the full latent size
    assert max(l.resolution for l in layers.values() if l.place == "up") == size


class Boom(Controller):
    def edit_qkv(self, layer, q, k, v):
        raise RuntimeError("boom")


def test_processors_are_restored_after_an_exception(pipe):
    before = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    with pytest.raises(RuntimeError, match="boom"):
        sample(pipe, "a red circle", 2, 7.5, generator=torch.Generator().manual_seed(0),
               controllers=Boom(), progress=False)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before
    with pytest.raises(KeyError):
        with attention_control(pipe.unet, Controller()):
            raise KeyError("inside")
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before


def test_a_controller_that_edits_nothing_reproduces_the_pipeline(pipe):
    z = initial_latents(pipe, 2, torch.Generator().manual_seed(1))
    prompts = ["a red circle on a white background", "a blue star on a gray background"]
    plain = sample(pipe, prompts, 3, 7.5, latents=z, output="tensor", progress=False)
    with_ctl = sample(pipe, prompts, 3, 7.5, latents=z, output="tensor", progress=False, controllers=Controller())
    torch.testing.assert_close(with_ctl, plain, atol=1e-5, rtol=0)


def test_explicit_probabilities_equal_sdpa(pipe):
    """A store reads maps in every layer (explicit softmax path): the images must not change."""
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(2))
    plain = sample(pipe, "a green star", 3, 7.5, latents=z, output="tensor", progress=False)
    store = AttentionStore(kinds=("cross", "self"), per_step=True)
    probed = sample(pipe, "a green star", 3, 7.5, latents=z, output="tensor", progress=False, controllers=store)
    torch.testing.assert_close(probed, plain, atol=1e-4, rtol=0)
    m = store.mean("cross")
    assert m.shape[0] == 1 and m.shape[1] == m.shape[2]
    torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)), atol=1e-4, rtol=0)
    assert set(store.steps) == {0, 1, 2}
    s = store.mean("self")
    assert s.shape[-1] == s.shape[1] * s.shape[2]


def test_p2p_keeps_the_source_and_runs_every_edit_kind(pipe):
    from course_lib.methods.p2p import P2PEdit, p2p_edit
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(3))
    src = "a red circle on a white background"
    plain = sample(pipe, src, 3, 7.5, latents=z, output="tensor", progress=False)
    for edit, tgt in [(P2PEdit(local_blend=["circle"]), "a blue circle on a white background"),
                      (P2PEdit(kind="refine"), "a large red striped circle on a white background"),
                      (P2PEdit(kind="reweight", reweight={"red": 2.0}), src)]:
        out = p2p_edit(pipe, src, [tgt], edit, 3, latents=z, output="tensor", progress=False)
        assert out.shape[0] == 2
        torch.testing.assert_close(out[0], plain[0], atol=1e-4, rtol=0)


def test_p2p_refuses_misaligned_swaps_with_both_token_lists(random_tiny):
    from course_lib.methods.p2p import P2PEdit, p2p_edit
    with pytest.raises(ValueError, match=r"source \(3 tokens\).*\n.*target \(4 tokens\)"):
        p2p_edit(random_tiny, "a red circle", "a large blue circle", P2PEdit(), 2, progress=False)
    with pytest.raises(ValueError, match="fraction"):
        P2PEdit(cross_replace_steps=1.5)
    with pytest.raises(ValueError, match="not in the prompt"):
        p2p_edit(random_tiny, "a red circle", "a red circle", P2PEdit(kind="reweight", reweight={"blue": 2}), 2,
                 progress=False)


def test_p2p_injects_source_maps_into_the_target(pipe):
    """Read the maps after the P2P controller: in the window the target's cross maps (and the
    low-resolution self maps) are exactly the source's."""
    from course_lib.methods.p2p import P2PController, P2PEdit
    src, tgt = "a red circle on a white background", "a blue star on a white background"
    edit = P2PEdit(cross_replace_steps=1.0, self_replace_steps=1.0)
    ctl = P2PController(pipe, [src, tgt], edit, 3)
    store = AttentionStore(kinds=("cross", "self"))
    sample(pipe, [src, tgt], 3, 7.5, generator=torch.Generator().manual_seed(0), controllers=[ctl, store],
           progress=False)
    cross = store.mean("cross")
    torch.testing.assert_close(cross[1], cross[0])
    low = min(r for kind, r in store.sums if kind == "self")
    assert low <= ctl.self_max_res
    selfm = store.mean("self", low)
    torch.testing.assert_close(selfm[1], selfm[0])


def test_pnp_runs_and_removes_its_hooks(pipe):
    from course_lib.methods.pnp import pnp_translate
    from course_lib.shapes import make_scene
    s = make_scene(1, size=pipe.unet.config.sample_size * pipe.vae_scale_factor)
    out = pnp_translate(pipe, s.image, ["a blue star"], num_inference_steps=3, progress=False, output="tensor")
    assert out.shape[0] == 2
    assert sum(len(m._forward_hooks) for m in pipe.unet.modules()) == 0


def test_null_text_and_negative_prompt_inversion_shapes(random_tiny):
    from course_lib.inversion import negative_prompt_inversion, null_text_inversion
    from course_lib.shapes import make_scene
    s = make_scene(2)
    zT, u = null_text_inversion(random_tiny, s.image, s.caption, 3, inner_steps=2, progress=False)
    assert zT.shape == (1, 4, 16, 16) and len(u) == 3 and u[0].shape == (1, 32, 128)
    zT2, u2 = negative_prompt_inversion(random_tiny, s.image, s.caption, 3, progress=False)
    torch.testing.assert_close(zT, zT2)
    assert len(u2) == 3


def test_null_text_inner_steps_set_how_exactly_the_source_comes_back(tiny_sd):
    """Null-text and DDIM inversion share z_T; more inner steps fit the unconditional embedding more
    tightly, so guided sampling retraces the source more exactly (the bench's NULL_TEXT_FEW trade-off)."""
    from course_lib.inversion import ddim_invert, null_text_inversion
    from course_lib.metrics import psnr
    from course_lib.sampling import sample
    from course_lib.shapes import make_scene
    s = make_scene(5, n_objects=1)
    rec = {}
    for k in (1, 10):
        zT, u = null_text_inversion(tiny_sd, s.image, s.caption, 10, 7.5, inner_steps=k, progress=False)
        rec[k] = psnr(s.image, sample(tiny_sd, s.caption, 10, 7.5, latents=zT, uncond_embeddings=u, progress=False)[0])
    torch.testing.assert_close(zT, ddim_invert(tiny_sd, s.image, s.caption, 10, 1.0, progress=False)[-1])
    assert rec[10] > rec[1] + 3, rec  # measured: 37.8 against 31.7 dB
