"""The slider views of course_lib.ui on a tiny random pipeline (few steps): values precomputed or
looked up, the others generated on demand, the static figure drawn, the ipywidgets box built and
driven by synthetic slider moves."""
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")

from course_lib.inversion import ddim_invert
from course_lib.methods.p2p import P2PEdit, p2p_edit
from course_lib.methods.pnp import PnPConfig, pnp_translate
from course_lib.sampling import initial_latents
from course_lib.ui import P2PSliders, PnPSliders

torch.set_num_threads(1)

SRC = "a large red circle on a checkered background"
SWAP = "a large red star on a checkered background"
RW = "a large red striped circle on a checkered background"


def _close(a, b):
    return np.abs(np.asarray(a, float) - np.asarray(b, float)).max() <= 1


def _image(size=64):
    a = np.full((size, size, 3), 180, np.uint8)
    a[20:40, 10:30] = (200, 30, 30)
    return Image.fromarray(a)


def test_p2p_sliders_look_up_generate_and_share_step_windows(random_tiny):
    pipe = random_tiny
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(5))
    src, swapped = p2p_edit(pipe, SRC, SWAP, P2PEdit(cross_replace_steps=0.5, self_replace_steps=0.0), 3, latents=z,
                            progress=False)
    w = P2PSliders(pipe, SRC, SWAP, reweight_word="striped", reweight_prompt=RW, num_inference_steps=3, latents=z,
                   swaps={(0.5, 0.0): swapped}, sources={SRC: src}, describe=lambda im: "seen")
    # 0.5 and 0.6 inject the source's cross maps for the same int(f (T + 1)) = 2 of 3 steps: one image
    assert w.swap_key(0.5, 0.0) == w.swap_key(0.6, 0.0) == (2, 0)
    assert w.select_swap(0.6, 0.0) is swapped and w.status.endswith("looked up")
    full = w.select_swap(1.0, 0.4)  # not cached: generated from the same z_T, then kept
    assert w.status.startswith("swap τ_c = 1 (3 of 3 steps), τ_s = 0.4 (1 of 3): generated in")
    want = p2p_edit(pipe, SRC, SWAP, P2PEdit(cross_replace_steps=1.0, self_replace_steps=0.4), 3, latents=z,
                    progress=False)[1]
    assert _close(full, want) and w.swaps[(4, 1)] is full
    w.precompute(swaps=[(1.0, 0.4), (0.0, 0.0)], scales=[1.0, 2.0, 2.0])
    assert len(w.swaps) == 3 and sorted(w.scales) == [1.0, 2.0] and w.status == "ready"
    # c = 1 leaves the maps as they are: the re-weighted image is the prompt's own generation
    assert _close(w.scales[1.0], w.sources[RW])
    assert w.pending(1.0, 0.4, 2.0) is None and "generating" in w.pending(0.2, 0.4, 2.0)
    with pytest.raises(ValueError, match="fraction"):
        w.select_swap(1.5, 0.0)
    with pytest.raises(ValueError, match="re-weighting scale"):
        w.select_reweight(9.0)
    with pytest.raises(ValueError, match="not in"):
        P2PSliders(pipe, SRC, SWAP, reweight_word="dotted", num_inference_steps=3, latents=z)
    fig = w.figure(1.0, 0.4, 2.0)  # source, swap, re-weighting
    assert len(fig.axes) == 3 and "seen" in fig.axes[1].get_title() and "x 2" in fig.axes[2].get_title()
    assert w.status.endswith("looked up; 'striped' x 2: looked up")


def test_p2p_sliders_widget_builds_and_a_slider_move_generates(random_tiny):
    pytest.importorskip("ipywidgets")
    pipe = random_tiny
    w = P2PSliders(pipe, SRC, SWAP, reweight_word="striped", reweight_prompt=RW, num_inference_steps=2, seed=1)
    box = w.widget()
    (_, cross, self_), (_, c), status = box.children[0].children, box.children[1].children, box.children[2]
    assert (cross.value, self_.value, c.value) == (0.8, 0.4, 1.0) and "generated" in status.value
    cross.value = 0.0  # a synthetic move to a window not cached: generated, and the status says so
    assert (0, 0) in w.swaps and "generated" in status.value
    c.value = 2.0
    assert 2.0 in w.scales and "'striped' x 2: generated in" in status.value
    cross.value = 0.8  # back to cached values
    assert status.value.endswith("looked up; 'striped' x 2: looked up")


def test_pnp_sliders_look_up_generate_and_share_step_windows(random_tiny):
    pipe = random_tiny
    traj = ddim_invert(pipe, _image(), "", 4, progress=False)
    base = pnp_translate(pipe, _image(), SWAP, "", PnPConfig(), 4, trajectory=traj, progress=False)[1]
    w = PnPSliders(pipe, _image(), SWAP, num_inference_steps=4, trajectory=traj, images={(0.8, 0.5): base},
                   describe=lambda im: "seen")
    assert w.key(0.8, 0.5) == w.key(0.75, 0.5) == (3, 2)  # int(f T) steps
    assert w.select() is base and w.status == "τ_f = 0.8 (3 of 4 steps), τ_A = 0.5 (2 of 4): looked up"
    none = w.select(0.0, 0.0)
    assert w.status.startswith("τ_f = 0 (0 of 4 steps), τ_A = 0 (0 of 4): generated in") and w.current is none
    want = pnp_translate(pipe, _image(), SWAP, "", PnPConfig(feature_steps=0.0, attention_steps=0.0), 4,
                         trajectory=traj, progress=False)[1]
    assert _close(none, want)
    w.precompute([(0.0, 0.0), (0.5, 0.5), (0.6, 0.5)])  # 0.5 and 0.6 both give int(f T) = 2 steps: one run
    assert len(w.cache) == 3 and w.status == "ready"
    assert w.pending(0.6, 0.5) is None and "generating" in w.pending(1.0, 1.0)
    with pytest.raises(ValueError):
        w.select(0.5, -0.1)
    fig = w.figure(0.8, 0.5)
    assert len(fig.axes) == 2 and "seen" in fig.axes[1].get_title()
    # the trajectory is computed when not given
    assert len(PnPSliders(pipe, _image(), SWAP, num_inference_steps=2).trajectory) == 3


def test_pnp_sliders_widget_builds_and_a_slider_move_generates(random_tiny):
    pytest.importorskip("ipywidgets")
    pipe = random_tiny
    w = PnPSliders(pipe, _image(), SWAP, num_inference_steps=2)
    box = w.widget()
    (feature, attention), status = box.children[0].children, box.children[1]
    assert (feature.value, attention.value) == (0.8, 0.5) and "generated" in status.value
    feature.value = 0.0
    assert (0, 1) in w.cache and "generated" in status.value
    feature.value = 0.8  # back to a cached pair
    assert status.value.endswith("looked up")
