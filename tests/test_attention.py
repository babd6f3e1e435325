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
    """A controller that asks for the probabilities in every layer takes the explicit softmax path:
    the images must not change (beyond float rounding)."""
    class Explicit(Controller):
        def wants_probs(self, layer):
            return True

    z = initial_latents(pipe, 1, torch.Generator().manual_seed(2))
    plain = sample(pipe, "a green star", 3, 7.5, latents=z, output="tensor", progress=False)
    explicit = sample(pipe, "a green star", 3, 7.5, latents=z, output="tensor", progress=False, controllers=Explicit())
    torch.testing.assert_close(explicit, plain, atol=1e-4, rtol=0)


def test_the_store_only_looks(pipe):
    """The store reads every layer's maps beside the fast path: the images are exactly the plain ones."""
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(2))
    plain = sample(pipe, "a green star", 3, 7.5, latents=z, output="tensor", progress=False)
    store = AttentionStore(kinds=("cross", "self"), per_step=True)
    probed = sample(pipe, "a green star", 3, 7.5, latents=z, output="tensor", progress=False, controllers=store)
    assert torch.equal(probed, plain)
    m = store.mean("cross")
    assert m.shape[0] == 1 and m.shape[1] == m.shape[2] and m.device.type == "cpu"
    torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)), atol=1e-4, rtol=0)
    assert set(store.steps) == {0, 1, 2}
    s = store.mean("self")
    assert s.shape[-1] == s.shape[1] * s.shape[2]


def test_store_keeps_maps_per_step_only_at_the_sides_asked_for(pipe):
    from course_lib.attention import BatchLayout, attention_probs, head_mean_probs
    side = pipe.unet.config.sample_size
    store = AttentionStore(kinds=("cross", "self"), per_step=(side,))
    sample(pipe, "a green star", 3, 7.5, generator=torch.Generator().manual_seed(2), progress=False,
           output="latent", controllers=store)
    assert {r for _, r in store.steps[0]} == {side} and len({r for _, r in store.sums}) > 1
    torch.testing.assert_close(sum(store.at_step(i, "self", side) for i in range(3)) / 3, store.mean("self", side))
    with pytest.raises(ValueError, match="per step"):
        store.at_step(0, "cross", min(r for _, r in store.sums))
    # the maps of the conditional half, averaged over heads, in blocks of queries or at once
    layout = BatchLayout(2, guidance=True)
    q, k = torch.randn(4, 8, 100, 16), torch.randn(4, 8, 30, 16)
    full = layout.split(attention_probs(q, k, 0.25))[-1].mean(1)
    torch.testing.assert_close(head_mean_probs(layout.split(q)[-1], layout.split(k)[-1], 0.25, max_elements=5000), full)


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
    ctl = P2PController(pipe, [src, tgt], edit)
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


# ----------------------------------------------------------------------------- the one loop and the controller lifecycle
class Lifecycle(Controller):
    """Logs what the loop tells it."""

    def __init__(self):
        super().__init__()
        self.log = []

    def begin(self, layout, num_steps):
        super().begin(layout, num_steps)
        self.log.append(("begin", layout.n, layout.guidance, num_steps))

    def set_step(self, index):
        super().set_step(index)
        self.log.append(("step", index))

    def end(self):
        self.log.append(("end",))


def test_the_loop_tells_controllers_the_layout_and_step_count_once_and_every_step(random_tiny):
    from course_lib.sampling import denoise, encode_text
    pipe = random_tiny
    ctl = Lifecycle()
    sample(pipe, ["a red circle", "a blue star"], 4, 7.5, generator=torch.Generator().manual_seed(0),
           controllers=ctl, progress=False, output="latent")
    assert ctl.log == [("begin", 2, True, 4), ("step", 0), ("step", 1), ("step", 2), ("step", 3), ("end",)]
    # started late (DragDiffusion's denoising): the same count, the steps from start_index on
    ctl.log = []
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    denoise(pipe, z, encode_text(pipe, "a red circle"), None, 5, 1.0, start_index=3, controllers=ctl)
    assert ctl.log == [("begin", 1, False, 5), ("step", 3), ("step", 4), ("end",)]
    assert all(type(p).__name__ != "CourseAttnProcessor" for p in pipe.unet.attn_processors.values())


def test_denoise_from_a_late_step_equals_the_end_of_a_full_run(random_tiny):
    from course_lib.sampling import denoise, encode_text
    pipe = random_tiny
    cond = encode_text(pipe, "a red circle")
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    seen = {}

    def keep(i, t, zz):
        seen[i] = zz.clone()

    full = denoise(pipe, z, cond, None, 6, 1.0, callback=keep)
    late = denoise(pipe, seen[2], cond, None, 6, 1.0, start_index=3)
    assert torch.equal(full, late)


def test_copy_source_fills_the_targets_in_both_halves_or_the_conditional_one():
    from course_lib.attention import BatchLayout
    layout = BatchLayout(3, guidance=True)
    x = torch.arange(6.0)[:, None].expand(6, 2)  # (halves * n, ...): uncond 0 1 2, cond 3 4 5
    assert layout.copy_source(x)[:, 0].tolist() == [0, 0, 0, 3, 3, 3]
    assert layout.copy_source(x, conditional_only=True)[:, 0].tolist() == [0, 1, 2, 3, 3, 3]
    assert x[:, 0].tolist() == [0, 1, 2, 3, 4, 5]  # the input is not changed


def test_step_windows_are_a_function_of_the_config_and_the_run_s_step_count(pipe):
    """One controller serves runs of any length: the windows are set when a run begins."""
    from course_lib.attention import BatchLayout
    from course_lib.methods.p2p import P2PController, P2PEdit
    from course_lib.methods.photoswap import PhotoswapConfig, PhotoswapController
    from course_lib.methods.pnp import PnPConfig, PnPController
    edit = P2PEdit(cross_replace_steps=0.5, self_replace_steps=0.25, blend_start=0.2)
    assert edit.step_windows(20) == {"cross": 10, "self": 5, "blend_from": 4}
    ctl = P2PController(pipe, ["a red circle", "a blue circle"], edit)
    for steps in (20, 8):
        ctl.begin(BatchLayout(2), steps)
        # the reference code's counts: int(f (T + 1)) cross steps, int(f T) self and blend steps
        assert (ctl.cross_until, ctl.self_until, ctl.blend_from) == (int(0.5 * (steps + 1)), int(0.25 * steps),
                                                                      int(0.2 * steps))
    ps = PhotoswapController(pipe, "a red circle", "a blue circle", PhotoswapConfig(lambda_phi=2))
    ps.begin(BatchLayout(2), 50)
    # the paper's lambda_A, lambda_M; phi in steps 0..lambda_phi (the reference code's <=)
    assert (ps.cross_until, ps.self_until, ps.phi_until) == (20, 25, 3)
    assert ps.step_windows(10) == {"cross": 4, "self": 5, "phi": 3, "blend_from": 2}
    assert PnPConfig(feature_steps=0.8, attention_steps=0.5).step_windows(10) == {"feature": 8, "attention": 5}
    pnp = PnPController(PnPConfig())
    pnp.begin(BatchLayout(2), 5)
    assert (pnp.feature_until, pnp.attention_until) == (4, 2)
