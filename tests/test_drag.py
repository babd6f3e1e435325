"""DragDiffusion's parts and driver, and the point-picking widget's callbacks (synthetic events)."""
import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.attention import attention_control
from course_lib.ui import DragPicker
from course_lib.methods.drag import (DragConfig, ReferenceLatentControl, bilinear, check_mask, check_points,
                                     denoise_from, drag_edit, leading_edge, motion_supervision_loss, move_handles,
                                     optimize_latent, stretch_handles, track_points)
from course_lib.sampling import encode_text
from course_lib.testing import random_pipeline

torch.set_num_threads(1)

QUICK = dict(lora_steps=2, lora_rank=2, lora_batch=1, num_inference_steps=4, drag_step=3, max_iterations=3)


def _image(size=64):
    a = np.full((size, size, 3), 180, np.uint8)
    a[20:40, 10:30] = (200, 30, 30)
    return Image.fromarray(a)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ----------------------------------------------------------------------------- input checks
def test_bad_points_and_masks_are_clear_errors():
    with pytest.raises(ValueError, match="outside"):
        check_points([(10, 70)], [(20, 20)], 64)
    with pytest.raises(ValueError, match="outside"):
        check_points([(10, 10)], [(-1, 20)], 64)
    with pytest.raises(ValueError, match="2 handle points but 1 target"):
        check_points([(1, 1), (2, 2)], [(3, 3)], 64)
    with pytest.raises(ValueError, match="no handle"):
        check_points([], [], 64)
    with pytest.raises(ValueError, match=r"\(x, y\) pairs"):
        check_points([(1, 2, 3)], [(1, 2, 3)], 64)
    h, g = check_points((5, 6), (7, 8), 64)  # one pair without the outer list
    assert h.shape == g.shape == (1, 2)
    with pytest.raises(ValueError, match="empty"):
        check_mask(np.zeros((64, 64), bool), 64)
    with pytest.raises(ValueError, match="mask"):
        check_mask(np.ones((32, 32), bool), 64)
    assert check_mask(None, 64) is None
    m = check_mask(Image.fromarray(np.full((64, 64), 255, np.uint8)), 64)
    assert m.dtype == bool and m.all()


def test_drag_edit_rejects_bad_input_before_any_work(random_tiny):
    pipe = random_tiny
    cfg = DragConfig(**QUICK)
    with pytest.raises(ValueError, match="outside"):
        drag_edit(pipe, _image(), [(64, 10)], [(20, 10)], config=cfg, progress=False)
    with pytest.raises(ValueError, match="target"):
        drag_edit(pipe, _image(), [(10, 10), (12, 12)], [(20, 10)], config=cfg, progress=False)
    with pytest.raises(ValueError, match="empty"):
        drag_edit(pipe, _image(), [(10, 10)], [(20, 10)], mask=np.zeros((64, 64)), config=cfg, progress=False)
    with pytest.raises(ValueError, match="resize"):
        drag_edit(pipe, _image(80), [(10, 10)], [(20, 10)], config=cfg, progress=False)
    with pytest.raises(ValueError, match="drag_step"):
        DragConfig(num_inference_steps=10, drag_step=20)


# ----------------------------------------------------------------------------- motion supervision and tracking
def test_bilinear_reads_pixels_and_midpoints():
    f = torch.arange(16.0).view(1, 1, 4, 4)
    assert bilinear(f, torch.tensor([[2.0, 1.0]])).item() == 6.0  # x=2, y=1
    assert bilinear(f, torch.tensor([[2.5, 1.0]])).item() == 6.5


def test_motion_supervision_loss_decreases_and_moves_the_feature():
    """Optimising a feature map with the loss (reference fixed by stop-gradient) moves a bump's
    content towards the target: the loss falls and the bump's centre of mass shifts right."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    bump = torch.exp(-((xx - 6) ** 2 + (yy - 8) ** 2) / 4.0)
    feat = torch.stack([bump, bump * 0.5])[None].clone().requires_grad_(True)
    h, g = torch.tensor([[6.0, 8.0]]), torch.tensor([[12.0, 8.0]])
    opt = torch.optim.Adam([feat], lr=0.02)
    losses = []
    for _ in range(40):
        loss = motion_supervision_loss(feat, h, g, r1=2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    m = feat.detach()[0, 0].clamp_min(0)
    cx = (m * xx).sum() / m.sum()
    assert cx > 6.3
    # a handle already at its target contributes nothing
    assert motion_supervision_loss(feat, g, g, r1=1, stop_distance=1.0).item() == 0.0


def test_point_tracking_finds_a_known_shift():
    torch.manual_seed(0)
    feat0 = torch.randn(1, 8, 20, 20)
    shifted = torch.roll(feat0, shifts=(1, 2), dims=(2, 3))  # content moves 2 right, 1 down
    h0 = torch.tensor([[7.0, 9.0], [12.0, 5.0]])
    new = track_points(feat0, shifted, h0.clone(), h0, r2=3)
    torch.testing.assert_close(new, h0 + torch.tensor([2.0, 1.0]))
    # with tie-breaking a clear match still wins, and in a flat region the handle stays put
    torch.testing.assert_close(track_points(feat0, shifted, h0.clone(), h0, r2=3, tie_break=0.05),
                               h0 + torch.tensor([2.0, 1.0]))
    flat = torch.ones(1, 4, 12, 12) + 1e-4 * torch.randn(1, 4, 12, 12)
    start = torch.tensor([[6.0, 6.0]])
    assert torch.equal(track_points(flat, flat + 1e-4 * torch.randn_like(flat), start.clone(), start, r2=3,
                                    tie_break=0.05), start)
    # outside the search radius it cannot be found
    far = torch.roll(feat0, shifts=(0, 6), dims=(2, 3))
    assert not torch.equal(track_points(feat0, far, h0.clone(), h0, r2=2), h0 + torch.tensor([6.0, 0.0]))


def test_move_handles_are_the_centroid_and_points_inside_the_edges():
    mask = np.zeros((32, 32), bool)
    mask[10:20, 4:14] = True  # x in [4, 14), y in [10, 20): centroid (9, 15)
    right = move_handles(mask, (5, 0))
    # centroid; leading 1-px band centre x 13, 3 px in; trailing band x 5, 3 px in; sides y 19 and 11, 3 px in
    np.testing.assert_allclose(right, [[9, 15], [10, 15], [8, 15], [9, 16], [9, 14]])
    up = move_handles(mask, (0, -1), inset=2)
    np.testing.assert_allclose(up[1:3], [[9.0, 13.0], [9.0, 17.0]])
    for d in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        for x, y in move_handles(mask, d):
            assert mask[int(y), int(x)], f"every handle for {d} should lie on the object"
    with pytest.raises(ValueError, match="empty"):
        move_handles(np.zeros((8, 8), bool), (1, 0))


def test_stretch_handles_lie_on_the_leading_edge():
    mask = np.zeros((32, 32), bool)
    mask[10:20, 4:14] = True
    # the leading edge's centre, then the outermost points 0.8 x half the height (3.6 px) above and below
    np.testing.assert_allclose(stretch_handles(mask, (1, 0)), [[13, 15], [13, 11], [13, 19]])
    np.testing.assert_allclose(stretch_handles(mask, (0, -2))[0], leading_edge(mask, (0, -1)))
    # a triangle pointing right: its tip is the first handle; lines beside the tip that miss the object
    # give no handle, and every handle is on the object's outline along the drag
    tri = np.zeros((32, 32), bool)
    for x in range(4, 24):
        half = (24 - x) // 2
        tri[16 - half:17 + half, x] = True
    h = stretch_handles(tri, (1, 0))
    assert 1 <= len(h) <= 3 and h[0][0] == pytest.approx(leading_edge(tri, (1, 0))[0])
    for x, y in h:
        assert tri[int(y), int(x)] and not tri[int(y), min(int(x) + 2, 31)]
    with pytest.raises(ValueError, match="empty"):
        stretch_handles(np.zeros((8, 8), bool), (1, 0))


# ----------------------------------------------------------------------------- reference-latent control
def test_reference_latent_control_swaps_keys_and_values(random_tiny):
    """With the control, an edited branch whose latent equals the reference gives exactly the
    reference's output, and a different latent is pulled towards the reference."""
    pipe = random_tiny
    cond = encode_text(pipe, "a red square").expand(2, -1, -1)
    torch.manual_seed(0)
    ref, other = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    ctl = ReferenceLatentControl(places=("down", "mid", "up"))
    from course_lib.attention import BatchLayout
    ctl.begin(BatchLayout(2, guidance=False), 1)
    with torch.no_grad():
        plain = pipe.unet(torch.cat([ref, other]), 500, encoder_hidden_states=cond).sample
        with attention_control(pipe.unet, ctl):
            ctrl = pipe.unet(torch.cat([ref, other]), 500, encoder_hidden_states=cond).sample
    torch.testing.assert_close(ctrl[0], plain[0])  # the reference branch is unchanged
    assert not torch.allclose(ctrl[1], plain[1])
    assert all(type(p).__name__ != "CourseAttnProcessor" for p in pipe.unet.attn_processors.values())


@pytest.mark.parametrize("kind", ["tiny", "sd15"])
def test_reference_latent_control_levels_pick_the_decoder_layers(kind, random_tiny):
    """levels=(0,) keeps the decoder's self-attention at the latent's full resolution only (tiny-sd's
    last up block, SD 1.5's last); None keeps every decoder level, as the reference code's layers do."""
    from course_lib.attention.layers import unet_layers
    unet = random_tiny.unet if kind == "tiny" else random_pipeline("sd15", sample_size=8).unet
    layers = list(unet_layers(unet).values())
    n_up = len(unet.config.up_block_types)
    full = [str(l) for l in layers if ReferenceLatentControl(levels=(0,)).applies(l)]
    every = [str(l) for l in layers if ReferenceLatentControl(levels=None).applies(l)]
    assert full and all(x.startswith(f"up{n_up - 1}.") and " self " in x for x in full)
    assert set(full) < set(every) and all(x.startswith("up") and " self " in x for x in every)
    assert DragConfig().control_levels == (0,)
    with pytest.raises(ValueError, match="control_levels"):
        DragConfig(control_levels=(-1,))


def test_scaled_defaults_keep_the_reference_code_on_sd_and_scale_to_tiny_sd(random_tiny):
    """The LoRA rank and the supervision grid default to the reference code's on SD 1.5 (rank 16, 256 px
    at 512) and scale with the UNet's width and the VAE's factor on tiny-sd (rank 4, 64 px at 64)."""
    from types import SimpleNamespace as NS
    from course_lib.methods.drag import lora_rank, supervision_scale
    cfg = DragConfig()
    sd15 = NS(unet=NS(config=NS(block_out_channels=[320, 640, 1280, 1280])), vae_scale_factor=8)
    assert lora_rank(sd15.unet, cfg) == 16 and supervision_scale(sd15, cfg) == 0.5
    assert lora_rank(random_tiny.unet, cfg) == 4 and supervision_scale(random_tiny, cfg) == 1.0
    given = DragConfig(lora_rank=8, supervision_scale=0.25)
    assert lora_rank(sd15.unet, given) == 8 and supervision_scale(sd15, given) == 0.25
    for bad in (dict(lora_rank=0), dict(supervision_scale=0.0)):
        with pytest.raises(ValueError):
            DragConfig(**bad)


def test_processors_and_unet_restored_after_an_exception(random_tiny):
    pipe = random_tiny
    procs = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    original = pipe.unet

    class Boom(ReferenceLatentControl):
        def edit_qkv(self, layer, q, k, v):
            raise RuntimeError("boom")

    z = torch.randn(2, 4, 16, 16)
    with pytest.raises(RuntimeError, match="boom"):
        denoise_from(pipe, z, encode_text(pipe, ""), 0, 2, 1.0, [Boom()])
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == procs
    assert pipe.unet is original


# ----------------------------------------------------------------------------- the driver
def test_latent_optimisation_stays_within_max_drift(random_tiny):
    pipe = random_tiny
    z_t = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    pipe.scheduler.set_timesteps(4)
    t, cond = pipe.scheduler.timesteps[1], encode_text(pipe, "a red square")
    h, g = torch.tensor([[20.0, 30.0]]), torch.tensor([[40.0, 30.0]])
    drift = {}
    for bound in (None, 0.01):
        config = DragConfig(**{**QUICK, "max_drift": bound, "lr": 0.05})
        z, *_ = optimize_latent(pipe, z_t, t, cond, h.clone(), g, None, config, progress=False)
        drift[bound] = float((z - z_t).abs().max())
    assert drift[None] > 0.03  # Adam moves elements about lr per step
    assert drift[0.01] <= 0.01 + 1e-6
    with pytest.raises(ValueError, match="max_drift"):
        DragConfig(max_drift=0)


def test_drag_edit_runs_and_leaves_the_pipeline(random_tiny):
    pipe = random_tiny
    before = _snapshot(pipe.unet)
    mask = np.zeros((64, 64), bool)
    mask[10:50, 5:45] = True
    r = drag_edit(pipe, _image(), [(20, 30), (15, 25)], [(26, 30), (15, 20)], mask=mask, prompt="a red square",
                  config=DragConfig(**QUICK), progress=False)
    assert r.image.size == (64, 64) and r.reconstruction.size == (64, 64)
    assert r.handles.shape == (2, 2) and 1 <= r.iterations <= 3
    assert len(r.handle_paths) == r.iterations + 1  # the start, then one per tracking step
    assert r.unet is not None and r.unet is not pipe.unet
    assert {k: v for k, v in _snapshot(pipe.unet).items()}.keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in _snapshot(pipe.unet).items())
    assert set(r.seconds) >= {"lora", "optimise", "denoise", "total"}


def test_denoise_from_the_inverted_step_reconstructs(tiny_sd):
    """DDIM inversion to step t and denoising from timesteps[T - t] retrace each other (trained model)."""
    from course_lib.inversion import ddim_invert
    from course_lib.metrics import psnr
    from course_lib.sampling import decode, to_pil
    from course_lib.shapes import single_object

    s = single_object("square", "red", "white")
    traj = ddim_invert(tiny_sd, s.image, s.caption, 10, 1.0, progress=False)
    z = denoise_from(tiny_sd, traj[7], encode_text(tiny_sd, s.caption), 3, 10)
    assert psnr(s.image, to_pil(decode(tiny_sd, z))[0]) > 30


@pytest.mark.parametrize("kind", ["sd15", "sd21"])
def test_drag_runs_on_sd_layouts(kind):
    pipe = random_pipeline(kind, sample_size=8)
    for block in ("up_blocks.1", "up_blocks.2"):
        r = drag_edit(pipe, _image(64), [(20, 30)], [(28, 30)], config=DragConfig(**QUICK, feature_block=block),
                      progress=False)
        assert r.image.size == (64, 64)
    with pytest.raises(ValueError, match="no module"):
        drag_edit(pipe, _image(64), [(20, 30)], [(28, 30)], config=DragConfig(**QUICK, feature_block="up_blocks.9",
                                                                              use_lora=False), progress=False)


# ----------------------------------------------------------------------------- the widget's callbacks
def test_picker_clicks_alternate_handles_and_targets():
    p = DragPicker(_image())
    p.click(10, 12)
    assert p.handles == [(10.0, 12.0)] and p.targets == []
    assert "target" in p.message
    p.click(20, 12)
    p.click(30, 30)
    assert p.handles == [(10.0, 12.0), (30.0, 30.0)] and p.targets == [(20.0, 12.0)]
    with pytest.raises(ValueError, match="no target"):
        p.run()
    p.undo()  # removes the unpaired handle
    assert p.handles == [(10.0, 12.0)] and p.targets == [(20.0, 12.0)]
    p.undo()  # removes the target
    assert p.targets == []
    with pytest.raises(ValueError, match="outside"):
        p.click(64, 3)


def test_picker_regions_and_run_with_a_synthetic_drag():
    calls = []

    def fake_drag(image, handles, targets, mask):
        calls.append((handles, targets, mask))
        return type("R", (), {"image": image, "handles": np.asarray(targets)})()

    p = DragPicker(_image(), run_fn=fake_drag, brush=2)
    with pytest.raises(ValueError, match="no handle"):
        p.run()
    p.click(10, 10)
    p.click(20, 10)
    assert p.mask() is None  # whole image
    p.choose_region("box around the points")
    box = p.mask()
    assert box[10, 10] and box[10, 20] and not box[60, 60]
    p.set_mode("paint")
    p.click(40, 40)
    assert p.region == "painted" and p.painted[40, 40] and p.painted[40, 42] and not p.painted[40, 43]
    p.set_mode("erase")
    p.click(40, 40)
    assert not p.painted.any()
    p.set_mode("paint")
    p.click(15, 10)
    p.set_mode("points")
    res = p.run()
    assert calls[-1][0] == [(10.0, 10.0)] and calls[-1][1] == [(20.0, 10.0)]
    assert calls[-1][2][10, 15] and calls[-1][2].sum() == p.painted.sum()
    assert res is p.result
    fig = p.figure()
    assert len(fig.axes) == 2
    with pytest.raises(ValueError):
        p.set_mode("lasso")
    with pytest.raises(ValueError):
        p.choose_region("object")
    p.clear()
    assert p.handles == [] and not p.painted.any() and p.mask() is None


def test_picker_status_line_stays_true_after_undo_and_erase_reads_erased():
    p = DragPicker(_image(), brush=2)
    p.undo()
    assert p.message == "nothing to undo: no points: click a handle point"
    p.click(10, 12)
    p.click(20, 12)
    p.click(30, 30)
    p.undo()  # the unpaired handle goes: the pair is left, and the line says so
    assert p.message == "removed the last handle; 1 handle-target pair; click another handle or run"
    p.undo()  # the target goes: the first handle waits for its target again
    assert p.message == "removed the last target; handle 1 at (10, 12); now click its target"
    p.undo()
    assert p.message == "removed the last handle; no points: click a handle point" and p.handles == []
    p.set_mode("paint")
    assert p.click(40, 40).startswith("painted at (40, 40)")
    p.set_mode("erase")
    assert p.click(40, 40) == "erased at (40, 40); region: 0 pixels"
    p.choose_region("box around the points")  # a box needs points: the line says so, nothing raised
    assert "no points yet" in p.message and p.shown_mask() is None


def test_a_click_during_a_run_changes_nothing_and_a_click_after_keeps_the_result():
    seen = {}

    def fake_drag(image, handles, targets, mask):
        seen["progress"] = p.message  # what the status line shows while the drag runs
        seen["click"] = p.click(50, 50)  # a click that arrives during the run
        p.undo()
        return type("R", (), {"image": image, "handles": np.asarray(targets)})()

    p = DragPicker(_image(), run_fn=fake_drag)
    p.click(10, 10)
    p.click(20, 10)
    res = p.run()
    assert seen["progress"] == "running the drag: 0 s" and "changed nothing" in seen["click"]
    assert p.handles == [(10.0, 10.0)] and p.targets == [(20.0, 10.0)]  # neither the click nor the undo acted
    assert p.result is res and not p.running and p.message.startswith("done in") and not p.stale
    assert p.progress(12.3) == f"running the drag: 12 s (the last run took {p.last_seconds:.0f} s)"
    p.click(30, 30)  # after the run: the result stays on show, marked as made from earlier points
    assert p.result is res and p.stale
    fig = p.figure()
    assert len(fig.axes) == 2 and "earlier points" in fig.axes[1].get_title()
    p.undo()
    assert not p.stale  # back to the points it was made from
    p.choose_region("box around the points")
    assert p.stale  # the region changed
    p.clear()
    assert p.result is None and p.figure(before=False) is None


def test_picker_progress_line_names_the_lora_fit_of_a_first_run():
    p = DragPicker(_image(), pipe=object())
    assert p.progress(3.2) == "running the drag: 3 s (fitting the identity LoRA first)"
    assert DragPicker(_image(), pipe=object(), lora_unet=object()).progress(0) == "running the drag: 0 s"
    assert DragPicker(_image(), pipe=object(), config=DragConfig(**QUICK, use_lora=False)).progress(0) == \
        "running the drag: 0 s"

    def fails(*_):
        raise RuntimeError("out of memory")

    q = DragPicker(_image(), run_fn=fails)
    q.click(1, 1)
    q.click(5, 5)
    with pytest.raises(RuntimeError):
        q.run()
    assert q.message == "the drag failed: out of memory" and not q.running and q.result is None


def test_board_clicks_map_to_image_pixels():
    p = DragPicker(_image())
    assert p.board_scale() == 4  # a 64-pixel image on a 256-pixel board
    p.board_click((10 + 0.5) * 4, (20 + 0.5) * 4)  # the centre of pixel (10, 20) on the board
    assert p.handles == [(10.0, 20.0)]
    p.on_board_event({"type": "click", "dataX": 0, "dataY": 256})  # the board's corner: clamped into the image
    assert p.targets == [(0.0, 63.0)]


def test_picker_widget_typed_points_and_the_region_redraws():
    pytest.importorskip("ipywidgets")
    p = DragPicker(_image(), run_fn=lambda image, h, g, m: image)
    w = p.widget(events=False)  # the fallback: typed coordinates
    board = w.children[0].children[0]
    hint, x_in, y_in, typed = w.children[1].children
    assert "install ipyevents" in hint.value and board.width == "256"
    x_in.value, y_in.value = 27, 19
    typed.click()
    x_in.value = 40
    typed.click()
    assert p.handles == [(27.0, 19.0)] and p.targets == [(40.0, 19.0)]
    mode, region = w.children[2].children
    before = board.value
    region.value = "box around the points"  # the board shows the new region at once
    assert p.region == "box around the points" and board.value != before
    mode.value = "paint"
    x_in.value, y_in.value = 5, 5
    typed.click()
    assert p.region == region.value == "painted" and p.painted[5, 5]  # the chooser follows the state
    run_b, undo_b, _ = w.children[3].children
    status = w.children[4]
    run_b.click()
    assert p.result is not None and status.value.startswith("done in") and not run_b.disabled
    undo_b.click()
    assert status.value.startswith("removed the last target") and p.result is not None


def test_picker_widget_receives_clicks_on_the_image_with_ipyevents():
    pytest.importorskip("ipyevents")
    p = DragPicker(_image(), run_fn=lambda *a: None)
    w = p.widget()
    assert w.children[1].children[0].value.startswith("click on the image")
    p._listener._handle_mouse_msg(None, {"type": "click", "dataX": 42, "dataY": 82}, None)  # a synthetic click
    assert p.handles == [(10.0, 20.0)] and w.children[4].value.startswith("handle 1 at (10, 20)")


def _paint(scene, mask):
    """The scene's image with ``mask`` painted in its object's colour (the object itself erased first)."""
    img = np.asarray(scene.image).copy()
    o = scene.objects[0]
    colour = img[o.mask].mean(0)
    bg = img[~o.mask].reshape(-1, 3)
    img[o.mask] = np.median(bg, 0)
    img[mask] = colour
    return Image.fromarray(img.astype(np.uint8))


def shift(mask, dx: int, dy: int):
    """``mask`` moved by (dx, dy) pixels; what leaves the picture is lost (no wrap-around)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def test_bench_drag_scores_read_a_perfect_edit_as_arrived():
    from course_lib.evaluate import drag_case, drag_scores, held_out_scenes
    scenes = held_out_scenes(8, offset=60_000)
    scored = 0
    for i, s in enumerate(scenes):
        kind, h, g, mask, d = case = drag_case(s, i)
        start = 100 * np.linalg.norm(h[0] - g[0]) / s.size
        assert drag_scores(s.image, s, case)[0] == pytest.approx(start, abs=1.5)  # nothing moved (the oracle reads to ~1 px)
        o = s.objects[0].mask
        dx, dy = (int(round(v)) for v in (g[0] - h[0]))
        if shift(o, dx, dy).sum() < o.sum():
            continue  # the drag would push the object out of the picture
        if kind == "move":  # the object translated by the drag
            done = shift(o, dx, dy)
        else:  # the object smeared along the drag: its leading edge moved, the rest stayed
            done = o.copy()
            for k in range(1, int(np.hypot(dx, dy)) + 1):
                done |= shift(o, int(d[0] * k), int(d[1] * k))
        dist = drag_scores(_paint(s, done), s, case)[0]
        assert dist < 1.5, f"case {i} ({kind}): a perfect edit scored {dist:.1f}% from the target"
        scored += 1
    assert scored >= 6


def test_the_shape_check_passes_a_translated_object_and_fails_a_blob():
    """A move that lands on target but turns the object into a blob passes the distance and fails the
    shape check (the bench reports both)."""
    from course_lib.evaluate import drag_case, drag_kept_shape, drag_scores, held_out_scenes
    from course_lib.shapes.world import single_object

    tri = single_object("triangle", "red", "white", size="large")
    assert drag_kept_shape(tri.image, tri)
    o = tri.objects[0].mask
    assert drag_kept_shape(_paint(tri, shift(o, 4, 0)), tri)  # moved, still a triangle
    ys, xs = np.nonzero(o)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[:o.shape[0], :o.shape[1]]
    blob = (yy - cy) ** 2 + (xx - cx - 4) ** 2 <= o.sum() / np.pi  # a disc of the same area, moved as far
    assert not drag_kept_shape(_paint(tri, blob), tri)
    assert not drag_kept_shape(Image.new("RGB", tri.image.size, "white"), tri)  # nothing left
    s = held_out_scenes(1, offset=60_000)[0]
    case = drag_case(s, 0)
    assert drag_kept_shape(s.image, s) and drag_scores(s.image, s, case)[1] == float("inf")


def test_bench_drag_cases_keep_the_drag_in_the_picture():
    from course_lib.evaluate import drag_case, held_out_scenes
    scenes = held_out_scenes(8, offset=60_000)
    assert scenes[0].objects[0].bbox[1] <= 2  # this object touches the top: no room for a 3 px margin there
    for i, s in enumerate(scenes):
        kind, h, g, mask, d = drag_case(s, i)
        assert len(h) == len(g) == (5 if kind == "move" else len(h)) and 1 <= len(h) <= 5
        assert (g >= 2).all() and (g <= s.size - 3).all(), f"case {i}: a target leaves the picture"
        x0, y0, x1, y1 = s.objects[0].bbox
        dx, dy = (g[0] - h[0]).round().astype(int)
        swept = np.zeros_like(mask)
        swept[min(y0, y0 + dy):max(y1, y1 + dy), min(x0, x0 + dx):max(x1, x1 + dx)] = True
        assert mask[swept].all(), f"case {i}: the editable region misses part of the object's path"
        assert np.allclose(g - h, g[0] - h[0]), "every handle moves by the same vector"
