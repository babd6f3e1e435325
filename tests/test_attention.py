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
