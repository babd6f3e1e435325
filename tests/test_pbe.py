import re

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.methods import pbe
from course_lib.methods.pbe import (bezier_mask, build_pipeline, check_mask, inpainting_unet, mask_image, tiny_pipeline,
                                    paint_by_example, save_pbe, self_supervised_sample, trainable_names)
from course_lib.models import load_clip
from course_lib.shapes import make_scene, single_object
from course_lib.shapes.world import background_image
from course_lib.testing import random_pipeline
from course_lib.methods.pbe.inpaint import check_reference


@pytest.fixture(scope="module")
def clip():
    return load_clip("tiny-clip", device="cpu", dtype="float32")


@pytest.fixture(scope="module", params=["tiny-sd", "sd15", "sd21"])
def pipe(request, clip):
    model, _, proc = clip
    return build_pipeline(random_pipeline(request.param), model, proc, "bottleneck")


def scene_inputs(size=64):
    s = make_scene(3, size, n_objects=1)
    m = np.zeros((size, size), bool)
    x0, y0, x1, y1 = s.objects[0].bbox
    m[y0:y1, x0:x1] = True
    ref = single_object("star", "blue", "white", image_size=size, size="large").image
    return s.image, m, ref


def test_inpainting_unet_starts_as_the_text_to_image_unet():
    sd = random_pipeline("tiny-sd")
    unet9 = inpainting_unet(sd.unet)
    assert unet9.config.in_channels == 9 and unet9.conv_in.weight[:, 4:].abs().max() == 0
    z, extra = torch.randn(2, 4, 16, 16), torch.randn(2, 5, 16, 16)
    emb = torch.randn(2, 3, sd.unet.config.cross_attention_dim)
    with torch.no_grad():
        a = sd.unet(z, 10, encoder_hidden_states=emb).sample
        b = unet9(torch.cat([z, extra], 1), 10, encoder_hidden_states=emb).sample
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bottleneck_is_one_token_naive_is_all_tokens(clip):
    model, _, proc = clip
    sd = random_pipeline("tiny-sd")
    b = build_pipeline(sd, model, proc, "bottleneck")
    n = build_pipeline(sd, model, proc, "naive")
    ref = single_object("star", "blue").image
    cb, nb = pbe.encode_reference(b, ref)
    cn, nn_ = pbe.encode_reference(n, ref)
    n_patches = (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    assert cb.shape == (1, 1, sd.unet.config.cross_attention_dim)
    assert cn.shape == (1, n_patches + 1, sd.unet.config.cross_attention_dim)
    assert nn_.shape == cn.shape  # the null vector is repeated to the condition's length
    from diffusers.pipelines.deprecated.paint_by_example.image_encoder import PaintByExampleImageEncoder
    assert isinstance(b.image_encoder, PaintByExampleImageEncoder)
    # the vision tower is tiny-clip's
    with torch.no_grad():
        px = proc(images=ref, return_tensors="pt").pixel_values
        torch.testing.assert_close(b.image_encoder.model(pixel_values=px).pooler_output,
                                   model.vision_model(pixel_values=px).pooler_output)
    with pytest.raises(ValueError, match="variant"):
        build_pipeline(sd, model, proc, "clever")


def test_a_wide_reference_is_squeezed_whole_as_in_training_not_centre_cropped(clip):
    model, _, proc = clip
    b = build_pipeline(random_pipeline("tiny-sd"), model, proc, "bottleneck")
    wide = Image.new("RGB", (96, 32), "white")
    wide.paste(single_object("star", "blue", "white", image_size=32).image, (0, 0))  # the star at the left end
    side = proc.crop_size["width"]
    cond, _ = pbe.encode_reference(b, wide)
    squeezed, _ = pbe.encode_reference(b, wide.resize((side, side), Image.BICUBIC))
    cropped, _ = pbe.encode_reference(b, wide.crop((32, 0, 64, 32)))  # what a centre crop keeps: no star
    torch.testing.assert_close(cond, squeezed)
    assert not torch.allclose(cond, cropped, atol=1e-3)


def test_saved_pipeline_loads_with_diffusers_and_matches_the_course_loop(clip, tmp_path, monkeypatch):
    from diffusers import PaintByExamplePipeline
    from diffusers.pipelines.deprecated.paint_by_example import pipeline_paint_by_example as ppe

    model, _, proc = clip
    p = build_pipeline(random_pipeline("tiny-sd"), model, proc, "bottleneck")
    save_pbe(p, tmp_path / "pbe")
    again = PaintByExamplePipeline.from_pretrained(tmp_path / "pbe")
    again.scheduler = type(p.scheduler).from_config(again.scheduler.config)
    assert type(again.scheduler).__name__ == "DDIMScheduler"
    assert type(pbe.load_pbe(str(tmp_path / "pbe"), device="cpu").image_encoder).__name__ == "PaintByExampleImageEncoder"
    assert type(again.image_encoder).__name__ == "PaintByExampleImageEncoder"
    for part in ("unet", "image_encoder", "vae"):
        theirs_sd = getattr(again, part).state_dict()
        for k, v in getattr(p, part).state_dict().items():
            torch.testing.assert_close(theirs_sd[k], v)
    image, m, ref = scene_inputs()
    z = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    ours = paint_by_example(again, image, m, ref, num_inference_steps=3, guidance_scale=5.0, latents=z, output="tensor")
    real = ppe.retrieve_latents
    monkeypatch.setattr(ppe, "retrieve_latents", lambda out, generator=None: real(out, generator, "argmax"))
    theirs = again(example_image=ref, image=image, mask_image=mask_image(m), num_inference_steps=3,
                   guidance_scale=5.0, latents=z, output_type="pt").images
    torch.testing.assert_close(ours, theirs.float(), atol=2e-3, rtol=0)
    naive = build_pipeline(random_pipeline("tiny-sd"), model, proc, "naive")
    with pytest.raises(ValueError, match="only the bottleneck"):
        save_pbe(naive, tmp_path / "naive")


def test_layouts_run(pipe):
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    image = make_scene(1, size).image
    m = np.zeros((size, size), bool)
    m[size // 4: size // 2, size // 4: size // 2] = True
    out = paint_by_example(pipe, image, m, single_object("circle", "red").image, num_inference_steps=2,
                           num_images=2, generator=torch.Generator().manual_seed(0))
    assert len(out) == 2 and out[0].size == (size, size)


def test_bad_inputs_are_refused_or_converted(clip):
    model, _, proc = clip
    p = build_pipeline(random_pipeline("tiny-sd"), model, proc, "bottleneck")
    image, m, ref = scene_inputs()
    with pytest.raises(ValueError, match="is 32x32 but the image is 64x64"):
        paint_by_example(p, image, np.ones((32, 32), bool), ref, num_inference_steps=1)
    with pytest.raises(ValueError, match="mask is empty"):
        paint_by_example(p, image, np.zeros((64, 64), bool), ref, num_inference_steps=1)
    assert check_mask(np.ones((64, 64, 3)), 64).all()  # H x W x C: the first channel (documented)
    with pytest.raises(ValueError, match="one channel"):
        check_mask(np.ones((2, 64, 64, 3)), 64)
    with pytest.raises(ValueError, match="48x48 but this model works at 64x64"):
        paint_by_example(p, image.resize((48, 48)), m, ref, num_inference_steps=1)
    with pytest.raises(TypeError, match="reference must be a PIL image, a NumPy array or a tensor"):
        paint_by_example(p, image, m, "star.png", num_inference_steps=1)
    assert check_reference(np.asarray(ref)).size == ref.size  # a uint8 array, as drag and Imagic take
    # documented conversions: a grey / RGBA / palette reference of any size, a PIL mask of any mode
    z = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    base = paint_by_example(p, image, m, ref, num_inference_steps=1, latents=z, output="latent")
    same = paint_by_example(p, image, mask_image(m).convert("RGB"), ref.convert("RGBA").resize((100, 100)),
                            num_inference_steps=1, latents=z, output="latent")
    assert torch.isfinite(same).all() and same.shape == base.shape
    gray = paint_by_example(p, image, mask_image(m).convert("1"), ref.convert("L"), num_inference_steps=1, latents=z,
                            output="latent")
    assert torch.isfinite(gray).all()
    assert (check_mask(mask_image(m), 64) == m).all()


def test_bezier_masks_stay_inside_the_box_and_differ_from_it():
    rng = np.random.default_rng(0)
    box = (10, 12, 40, 50)
    inside = np.zeros((64, 64), bool)
    inside[12:50, 10:40] = True
    fills = []
    for _ in range(20):
        m = bezier_mask(box, 64, rng)
        assert m.any() and not (m & ~inside).any()
        fills.append(m.sum() / inside.sum())
    assert 0.4 < np.mean(fills) < 1.0 and np.std(fills) > 0.01  # irregular, not the box


def test_covering_bezier_masks_hide_the_whole_box_and_bulge_out_of_it():
    rng = np.random.default_rng(0)
    box = (10, 12, 40, 50)
    inside = np.zeros((64, 64), bool)
    inside[12:50, 10:40] = True
    grown = [bezier_mask(box, 64, rng, cover=True) for _ in range(20)]
    assert all((m & inside).sum() == inside.sum() for m in grown)  # no pixel of the box stays visible
    extra = [(m & ~inside).sum() / inside.sum() for m in grown]
    assert min(extra) > 0 and np.std(extra) > 0.01  # irregular outside the box


def test_self_supervised_sample():
    s = make_scene(5, n_objects=1)
    box = pbe.object_box(s.objects[0].bbox, 64)
    rng = np.random.default_rng(1)
    d = self_supervised_sample(s.image, box, rng, augment=False, bezier=False)
    x0, y0, x1, y1 = box
    assert d.mask.sum() == (x1 - x0) * (y1 - y0) and d.reference.size == (64, 64)
    assert np.allclose(np.asarray(d.reference, float), np.asarray(s.image.crop(box).resize((64, 64), Image.BICUBIC), float))
    aug = [self_supervised_sample(s.image, box, rng) for _ in range(6)]
    assert any(not np.array_equal(np.asarray(a.reference), np.asarray(d.reference)) for a in aug)
    with pytest.raises(ValueError, match="not inside"):
        self_supervised_sample(s.image, (50, 50, 70, 60), rng)


def test_trainable_parts():
    for parts in ("all", "attention"):
        assert trainable_names("unet.conv_in.weight", parts)
        assert trainable_names("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", parts)
        assert trainable_names("image_encoder.uncond_vector", parts) and trainable_names("image_encoder.proj_out.weight", parts)
        assert not trainable_names("image_encoder.model.encoder.layers.0.mlp.fc1.weight", parts)
    assert trainable_names("unet.down_blocks.0.resnets.0.conv1.weight", "all")
    assert not trainable_names("unet.down_blocks.0.resnets.0.conv1.weight", "attention")
    with pytest.raises(ValueError, match="unet_parts"):
        trainable_names("unet.conv_in.weight", "resnets")
    tower = "image_encoder.model.encoder.layers.0.mlp.fc1.weight"
    assert trainable_names(tower, "all", encoder="all") and trainable_names(tower, "attention", encoder="all")
    assert not trainable_names("unet.down_blocks.0.resnets.0.conv1.weight", "attention", encoder="all")
    with pytest.raises(ValueError, match="encoder"):
        trainable_names("unet.conv_in.weight", "all", encoder="tower")


def test_training_loop_runs_and_saves(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import course_tools.train.pbe as tp
    monkeypatch.setattr(tp, "RUNS", tmp_path / "runs")
    out = tp.train_pbe("bottleneck", minutes=None, steps=2, batch=2, n_scenes=8, out=tmp_path / "w", progress=False,
                       bf16=False, unet_parts="attention")
    w = load_file(out)
    assert w and all(v.dtype == torch.float16 for v in w.values())
    assert any(k.startswith("image_encoder.mapper") for k in w) and "unet.conv_in.weight" in w
    assert not any(".resnets." in k for k in w)
    # resumes from its checkpoint
    tp.train_pbe("bottleneck", minutes=None, steps=3, batch=2, n_scenes=8, out=tmp_path / "w", progress=False,
                 bf16=False, unet_parts="attention")
    import json
    assert json.loads((tmp_path / "w" / "bottleneck.json").read_text())["steps"] == 3
    # a checkpoint of other UNet parts is moved aside, not resumed; "all" stores the whole UNet
    w = load_file(tp.train_pbe("bottleneck", minutes=None, steps=1, batch=2, n_scenes=8, out=tmp_path / "w",
                               progress=False, bf16=False, unet_parts="all"))
    assert any(".resnets." in k for k in w)
    assert json.loads((tmp_path / "w" / "bottleneck.json").read_text())["steps"] == 1
    assert (tmp_path / "runs" / f"pbe-bottleneck-{tp.base_fingerprint()}-attention" / "state.json").exists()
    # a checkpoint trained on other tiny-sd weights is moved aside, not resumed
    old_base = tp.base_fingerprint()
    monkeypatch.setattr(tp, "base_fingerprint", lambda: "another-model")
    tp.train_pbe("bottleneck", minutes=None, steps=1, batch=2, n_scenes=8, out=tmp_path / "w", progress=False, bf16=False)
    assert json.loads((tmp_path / "w" / "bottleneck.json").read_text())["steps"] == 1
    assert (tmp_path / "runs" / f"pbe-bottleneck-{old_base}-all" / "state.json").exists()


def test_the_training_loss_is_the_paper_s_by_default_and_can_weigh_the_mask_and_the_noise_level():
    from course_tools.train.pbe import pbe_loss
    g = torch.Generator().manual_seed(0)
    pred, noise = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    keep = torch.ones(4, 1, 8, 8)
    keep[:, :, 2:5, 2:5] = 0  # the masked cells
    t, snr = torch.tensor([0, 10, 500, 999]), torch.logspace(3, -3, 1000)
    plain = pbe_loss(pred, noise, keep, t, snr)
    assert torch.allclose(plain, torch.nn.functional.mse_loss(pred, noise))
    # an error only under the mask counts more with a mask weight, one only outside it less
    inside, outside = torch.zeros_like(pred), torch.zeros_like(pred)
    inside[:, :, 2:5, 2:5], outside[:, :, 6:, 6:] = 1, 1
    for err, grows in ((inside, True), (outside, False)):
        a, b = pbe_loss(err, torch.zeros_like(err), keep, t, snr), pbe_loss(err, torch.zeros_like(err), keep, t, snr, mask_weight=4)
        assert (b > a) if grows else (b < a)
    # the weights are normalised per pair: an error everywhere keeps its loss
    assert torch.allclose(pbe_loss(pred, pred + 1, keep, t, snr, mask_weight=4), torch.tensor(1.0))
    # min-SNR: low-noise pairs (high SNR) turned down by gamma / SNR, noisy ones (SNR < gamma) kept
    per = ((pred - noise) ** 2).mean((1, 2, 3))
    w = torch.clamp(snr[t], max=5.0) / snr[t]
    assert torch.allclose(pbe_loss(pred, noise, keep, t, snr, snr_gamma=5.0), (w * per).mean())
    assert w[0] < 0.01 and w[-1] == 1


def test_training_refuses_bad_loss_weights():
    import course_tools.train.pbe as tp
    with pytest.raises(ValueError, match="snr_gamma"):
        tp.train_pbe("bottleneck", steps=1, snr_gamma=0)
    with pytest.raises(ValueError, match="mask_weight"):
        tp.train_pbe("bottleneck", steps=1, mask_weight=0.5)


def test_a_run_with_loss_weights_records_them_and_the_card_gives_its_command(tmp_path, monkeypatch):
    import json

    import course_tools.train.pbe as tp
    monkeypatch.setattr(tp, "RUNS", tmp_path / "runs")
    tp.train_pbe("bottleneck", minutes=None, steps=1, batch=2, n_scenes=8, out=tmp_path / "w", progress=False,
                 bf16=False, unet_parts="attention", snr_gamma=5.0, mask_weight=4.0)
    record = json.loads((tmp_path / "w" / "bottleneck.json").read_text())
    assert record["snr_gamma"] == 5.0 and record["mask_weight"] == 4.0
    assert tp._commands(record)[-1].endswith("--snr-gamma 5 --mask-weight 4")
    assert "min-SNR-5 loss weighting; loss under the mask weighted 4x" in tp._stages(record)
    # its checkpoint is continued with the same loss, masks and oversampling only, and a refusal writes nothing
    run = tmp_path / "runs" / "pbe-bottleneck"
    before = (run / "state.json").read_text()
    same = dict(minutes=None, steps=2, batch=2, n_scenes=8, out=tmp_path / "w", progress=False, bf16=False,
                unet_parts="attention")
    for other, said in [({}, "--snr-gamma 5 --mask-weight 4 (this run: the plain loss"),
                        ({"snr_gamma": 5.0, "mask_weight": 4.0, "cover_masks": True}, "no --cover-masks (this run: --cover-masks)"),
                        ({"snr_gamma": 5.0, "mask_weight": 4.0, "oversample": {"star": 2}}, "no --oversample (this run: --oversample star:2)")]:
        with pytest.raises(ValueError, match=f"trained with {re.escape(said)}.*continue it with the same settings"):
            tp.train_pbe("bottleneck", **same, **other)
        assert (run / "state.json").read_text() == before
    tp.train_pbe("bottleneck", **same, snr_gamma=5.0, mask_weight=4.0)
    assert json.loads((tmp_path / "w" / "bottleneck.json").read_text())["steps"] == 2


def test_training_pairs_know_their_object_s_shape_and_oversampling_draws_it_more_often(tmp_path, monkeypatch):
    import course_tools.train.pbe as tp
    from course_lib.methods.pbe import object_box
    monkeypatch.setattr(tp, "RUNS", tmp_path / "runs")
    images, boxes = tp.pbe_dataset(12)
    cache = tmp_path / "runs" / "data" / "pbe_0_12.npz"
    np.savez(cache, images=images, boxes=boxes)  # a cache written before the shapes were kept
    images2, boxes2, shapes = tp.pbe_dataset(12, shapes=True)
    assert (images2 == images).all() and (boxes2 == boxes).all() and len(shapes) == 12
    assert "shapes" in np.load(cache)  # rendered again and cached with them
    seed = 0
    for img, box, shape in zip(images2, boxes2, shapes):  # each shape is that of the boxed object
        while not (np.asarray(make_scene(seed).image) == img).all():
            seed += 1
        s = make_scene(seed)
        assert shape in {o.shape for o in s.objects if tuple(object_box(o.bbox, s.size)) == tuple(box)}
        seed += 1
    assert tp.pair_weights(shapes, None) is None
    w = tp.pair_weights(["star", "circle", "circle", "hexagon"], {"star": 3, "hexagon": 2})
    assert np.allclose(w, [3 / 7, 1 / 7, 1 / 7, 2 / 7])
    with pytest.raises(ValueError, match="no Shapes World shape"):
        tp.pair_weights(shapes, {"stars": 2})
    with pytest.raises(ValueError, match="positive"):
        tp.train_pbe("bottleneck", minutes=None, steps=1, batch=2, n_scenes=8, out=tmp_path / "w", progress=False,
                     oversample={"star": -1})
    # the pairs are drawn with those weights: only stars when only stars weigh
    proc = load_clip("tiny-clip", device="cpu", dtype="float32")[2]
    only = np.where(shapes == shapes[0], 1.0, 0.0)
    idx, keep, px = tp._pairs(images2, boxes2, proc, 16, np.random.default_rng(0), True, True, only / only.sum())
    assert set(shapes[idx.numpy()]) == {shapes[0]} and keep.shape == (16, 1, 64, 64) and len(px) == 16
    cmd = tp._commands({"variant": "bottleneck", "steps": 5, "batch": 2, "lr": 1e-4, "minutes": 1,
                        "oversample": {"star": 2.5, "hexagon": 2}})[0]
    assert cmd.endswith("--oversample star:2.5,hexagon:2")
    # a card names the tower each stage was trained on, when a later stage changed it
    old = {"variant": "bottleneck", "steps": 5, "batch": 2, "lr": 1e-4, "minutes": 1,
           "tower": {"sha256": "a", "record": {"steps": 1500}}}
    new = {**old, "previous": old, "tower": {"sha256": "b", "record": {"steps": 3000}}}
    first, last = tp._commands(new)
    assert "--tower <the tower of pbe-tower --steps 1500>" in first and "--tower runs/pbe-tower/tower.safetensors" in last
    assert tp._stages(new).endswith("vision tower refined 1,500 steps; then 5 x 2, lr 0.0001, 1 min on a 2-core CPU, "
                                    "6,000 scenes; vision tower refined 3,000 steps")


def test_object_crops_carry_the_labels_of_the_objects_they_show():
    from course_lib.shapes import vocab as V
    from course_tools.train.pbe_tower import LABELS, object_crops
    crops, labels = object_crops(range(5), min_side=8)
    expected = [o for seed in range(5) for o in make_scene(seed).objects
                if min(o.bbox[2] - o.bbox[0], o.bbox[3] - o.bbox[1]) >= 8]  # written out: the test checks boxable too
    assert len(crops) == len(expected) and set(labels) == set(LABELS)
    for crop, o, k in zip(crops, expected, range(len(crops))):
        x0, y0, x1, y1 = pbe.object_box(o.bbox, 64)
        assert crop.size == (x1 - x0, y1 - y0)
        assert (V.SHAPES[labels["shape"][k]], V.COLOR_NAMES[labels["color"][k]]) == (o.shape, o.color)


def test_shape_axes_tells_a_line_from_shapes_equally_apart(clip, monkeypatch):
    import course_tools.train.pbe_tower as pt
    _, _, proc = clip
    rng = np.random.default_rng(0)
    line = rng.normal(size=16)
    for tokens, lo, hi in (  # canonical exemplars' tokens: colour by colour, shape by shape
            (np.stack([c + k * line for c in rng.normal(size=(6, 16)) for k in range(6)]), 0.999, 1.0),
            (np.stack([c + e for c in rng.normal(size=(6, 16)) for e in 10 * np.eye(16)[:6]]), 0.19, 0.21)):
        monkeypatch.setattr(pt, "class_tokens", lambda tower, proc, crops, t=tokens: t[:len(crops)])
        assert lo <= pt.shape_axes(None, proc) <= hi


def test_a_refined_tower_travels_with_paint_by_example_s_trained_parts(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import course_tools.train.pbe as tp
    from course_tools.train.pbe_tower import load_tower, refine_tower
    monkeypatch.setattr(tp, "RUNS", tmp_path / "runs")
    path = refine_tower(out=tmp_path / "tower", minutes=None, steps=2, batch=4, n_scenes=6, progress=False,
                        probe_scenes=60)
    import json
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["steps"] == 2 and {"shape", "color", "pattern", "shape_axis"} <= set(record["before"])
    refined, _ = load_tower(path)
    shipped = load_clip("tiny-clip", device="cpu", dtype="float32")[0].vision_model
    key = "encoder.layers.0.mlp.fc1.weight"
    assert not torch.equal(refined.state_dict()[key], shipped.state_dict()[key])

    w = load_file(tp.train_pbe("bottleneck", minutes=None, steps=1, batch=2, n_scenes=8, out=tmp_path / "w",
                               progress=False, bf16=False, unet_parts="attention", tower=path))
    stored = {k[len("image_encoder.model."):]: v for k, v in w.items() if k.startswith("image_encoder.model.")}
    stored = {k.removeprefix("vision_model."): v for k, v in stored.items()}
    assert stored.keys() == refined.state_dict().keys()
    torch.testing.assert_close(stored[key].float(), refined.state_dict()[key].half().float())  # frozen, as trained
    p = tiny_pipeline("bottleneck", weights=tmp_path / "w" / "bottleneck.safetensors", folder=tmp_path / "folder")
    loaded = pbe.vision_tower(p.image_encoder)
    torch.testing.assert_close(loaded.state_dict()[key], refined.state_dict()[key].half().float())
    import shutil
    shutil.copytree(tmp_path / "w", tmp_path / "w1")
    record = json.loads((tmp_path / "w" / "bottleneck.json").read_text())
    assert record["tower"]["record"]["steps"] == 2 and "refined on object crops" in (tmp_path / "w" / "README.md").read_text()
    # a checkpoint trained with another tower (here: tiny-clip's) is moved aside, not resumed
    tp.train_pbe("bottleneck", minutes=None, steps=2, batch=2, n_scenes=8, out=tmp_path / "w", progress=False,
                 bf16=False, unet_parts="attention")
    assert json.loads((tmp_path / "w" / "bottleneck.json").read_text())["steps"] == 2
    assert "image_encoder.model.post_layernorm.weight" not in load_file(tmp_path / "w" / "bottleneck.safetensors")
    shutil.rmtree(tmp_path / "runs")  # no checkpoint: the run starts from init_from
    with pytest.raises(ValueError, match="refined vision tower"):  # continuing them needs the tower named
        tp.train_pbe("bottleneck", minutes=None, steps=1, batch=2, n_scenes=8, out=tmp_path / "w2", progress=False,
                     bf16=False, unet_parts="attention", init_from=tmp_path / "w1" / "bottleneck.safetensors")
    with pytest.raises(FileNotFoundError, match="pbe-tower"):
        tp.train_pbe("bottleneck", steps=1, tower=tmp_path / "missing.safetensors")


def test_blend_known_keeps_the_latent_outside_the_mask(clip):
    model, _, proc = clip
    p = build_pipeline(random_pipeline("tiny-sd"), model, proc, "bottleneck")
    image, m, ref = scene_inputs()
    z = paint_by_example(p, image, m, ref, num_inference_steps=2, blend_known=True, output="latent",
                         generator=torch.Generator().manual_seed(0))
    keep, _ = pbe.mask_inputs(p, image, m)
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        z_src = p.vae.encode(x).latent_dist.mode() * p.vae.config.scaling_factor
    k = keep.bool().expand_as(z)
    torch.testing.assert_close(z[k], z_src.expand_as(z)[k])
    assert (z[~k] - z_src.expand_as(z)[~k]).abs().max() > 1e-3


def test_zoomed_painting_paints_a_crop_at_the_model_s_size_and_keeps_the_source_outside_the_mask(clip, monkeypatch):
    model, _, proc = clip
    p = build_pipeline(random_pipeline("tiny-sd"), model, proc, "bottleneck")
    image, m, ref = scene_inputs()
    # the crop: context times the mask box's longer side, holding the box, inside the image
    ys, xs = np.nonzero(m)
    side = max(xs.max() - xs.min(), ys.max() - ys.min()) + 1
    x0, y0, x1, y1 = pbe.zoom_box(m, 1.75)
    assert x1 - x0 == y1 - y0 == min(64, round(1.75 * side)) > side
    assert 0 <= x0 <= xs.min() and xs.max() < x1 <= 64 and 0 <= y0 <= ys.min() and ys.max() < y1 <= 64
    corner = np.zeros((64, 64), bool)
    corner[62, 61] = True  # enlarged at most MAX_ZOOM times, and moved inside the image
    assert pbe.zoom_box(corner) == (64 - 64 // pbe.MAX_ZOOM,) * 2 + (64, 64)
    with pytest.raises(ValueError, match="at least 1"):
        pbe.zoom_box(m, 0.5)
    # the model paints the crop enlarged to its own size, where the mask takes a larger share
    seen, plain = {}, pbe.paint_by_example

    def spy(pipe, img, mask, *a, **k):
        seen.update(size=img.size, share=np.asarray(mask).mean())
        return plain(pipe, img, mask, *a, **k)
    monkeypatch.setattr(pbe.inpaint, "paint_by_example", spy)
    outs = pbe.paint_by_example_zoomed(p, image, m, ref, 2, num_images=2, generator=torch.Generator().manual_seed(0))
    assert seen["size"] == (64, 64) and len(outs) == 2
    assert seen["share"] > m.mean() and abs(seen["share"] - m[y0:y1, x0:x1].mean()) < 0.02
    src = np.asarray(image)
    for out in outs:
        a = np.asarray(out)
        assert (a[~m] == src[~m]).all() and (a[m] != src[m]).any()
    # a mask whose crop is the whole image is painted as by paint_by_example
    big = np.zeros((64, 64), bool)
    big[4:60, 10:50] = True
    assert pbe.zoom_box(big) == (0, 0, 64, 64)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    zoomed = np.asarray(pbe.paint_by_example_zoomed(p, image, big, ref, 2, latents=z)[0])
    assert (zoomed[big] == np.asarray(plain(p, image, big, ref, 2, latents=z)[0])[big]).all()
    with pytest.raises(ValueError, match="PIL images"):
        pbe.paint_by_example_zoomed(p, image, m, ref, 1, output="latent")
    with pytest.raises(ValueError, match="empty"):
        pbe.paint_by_example_zoomed(p, image, np.zeros((64, 64), bool), ref, 1)


def test_zoomed_painting_runs_at_every_architecture_s_size(pipe):
    size = pbe.model_size(pipe)
    image, m, ref = scene_inputs(size)
    out = pbe.paint_by_example_zoomed(pipe, image, m, ref, 1, generator=torch.Generator().manual_seed(0))[0]
    assert out.size == (size, size) and (np.asarray(out)[~m] == np.asarray(image)[~m]).all()


def test_shipped_weights_load_and_run():
    for variant in ("bottleneck", "naive"):
        if not (pbe.TINY / f"{variant}.safetensors").exists():
            pytest.skip("no shipped Paint by Example weights")
        p = tiny_pipeline(variant, device="cpu", dtype=torch.float32)
        image, m, ref = scene_inputs()
        out = paint_by_example(p, image, m, ref, num_inference_steps=10, blend_known=True,
                               generator=torch.Generator().manual_seed(0))[0]
        from scipy import ndimage

        from course_lib.metrics import psnr
        # the known region is kept. Blending works on 4x4-pixel latent cells and the VAE decoder spreads
        # what is painted into its neighbours, so the check leaves out a band of one latent cell around
        # the mask. (The VAE's own reconstruction of this scene scores 48 dB there; these weights 42.)
        assert psnr(image, out, ~ndimage.binary_dilation(m, iterations=4)) > 35, variant


def test_shipped_weights_were_trained_on_the_shipped_tiny_sd():
    # the trained parts (input convolution, attention, encoder head) only fit the UNet they were trained with
    for variant in ("bottleneck", "naive"):
        w = pbe.TINY / f"{variant}.safetensors"
        if not w.exists():
            pytest.skip("no shipped Paint by Example weights")
        assert pbe.trained_on(w) == pbe.base_fingerprint(), \
            f"{w} was trained on other tiny-sd or tiny-clip weights: retrain with `python -m course_tools.train pbe --method {variant}`"


def test_released_checkpoint_is_loaded_by_hub_id_or_refused_clearly_offline():
    from course_lib.models import ModelNotAvailable
    with pytest.raises(ModelNotAvailable, match="Fantasy-Studio/Paint-by-Example"):
        pbe.load_pbe("paint-by-example", device="cpu")


def test_fingerprint_follows_the_unet_and_vae_encoder_but_not_the_decoder(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    (tmp_path / "tiny-sd" / "unet").mkdir(parents=True)
    (tmp_path / "tiny-sd" / "vae").mkdir(parents=True)
    (tmp_path / "tiny-clip").mkdir()
    (tmp_path / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"unet")
    (tmp_path / "tiny-clip" / "model.safetensors").write_bytes(b"clip")
    monkeypatch.setattr(pbe.checkpoints, "MODELS_DIR", tmp_path)
    vae_file = tmp_path / "tiny-sd" / "vae" / "diffusion_pytorch_model.safetensors"

    def fp(enc, dec, unet=b"unet"):
        (tmp_path / "tiny-sd" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(unet)
        save_file({"encoder.conv_in.weight": torch.full((2, 2), enc, dtype=torch.float16),
                   "quant_conv.bias": torch.zeros(2, dtype=torch.float16),
                   "decoder.conv_out.weight": torch.full((2, 2), dec, dtype=torch.float16)}, vae_file)
        return pbe.base_fingerprint()

    base = fp(1.0, 1.0)
    assert fp(1.0, 2.0) == base  # a fine-tuned decoder leaves the latents the parts learned on
    assert fp(3.0, 1.0) != base  # another encoder does not
    assert fp(1.0, 1.0, unet=b"other unet") != base


def test_fitted_masks_cover_the_object_with_the_exemplars_proportions():
    from course_lib.evaluate import fitted_box, pbe_cases

    assert fitted_box((20, 30, 44, 38), (0, 0, 30, 30), 64) == (20, 22, 44, 46)  # wide box, square exemplar
    assert fitted_box((50, 2, 60, 12), (0, 0, 30, 20), 64) == (48, 2, 63, 12)    # kept inside the image
    assert fitted_box((0, 0, 10, 60), (0, 0, 20, 10), 64) == (0, 0, 64, 60)      # too big: covering wins
    for (s, m, ref, sh, c), (_, fm, fref, _, _) in zip(pbe_cases(4, offset=90_000), pbe_cases(4, offset=90_000, mask="fitted")):
        assert (fm | ~m).all() and fref.size == ref.size  # covers the object's box; same exemplar
        ys, xs = np.where(fm)
        w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        assert abs(w / h - ref.size[0] / ref.size[1]) < 0.15 or w == 64 or h == 64
    with pytest.raises(ValueError, match="mask"):
        pbe_cases(1, mask="circle")


def test_a_perfect_paint_scores_and_a_wrong_one_does_not():
    from course_lib.evaluate import pbe_cases, pbe_scores
    from course_tools.bench.pbe import perfect_paint
    from course_lib.models import load_pipeline

    pipe = load_pipeline("tiny-sd")
    for s, m, ref, sh, c in pbe_cases(3):
        right = perfect_paint(s, sh, c)
        assert right.size == s.image.size and pbe_scores(s.image, right, m, sh, c)["shape+color"]
        assert (np.asarray(right)[~m] == np.asarray(s.image)[~m]).all()  # only the object's box changed
        assert pbe_scores(s.image, perfect_paint(s, sh, c, pipe), m, sh, c)["color"]  # the VAE keeps the colour
        other = next(x for x in ("square", "circle") if x != sh)
        assert not pbe_scores(s.image, perfect_paint(s, other, c), m, sh, c)["shape+color"]
        # around the new object the mask shows the scene's background again; a wrong one scores low
        assert pbe_scores(s.image, right, m, sh, c, s.spec.background)["bg_in"] > 40
        wrong = np.asarray(right).copy()
        bare = m & (wrong == np.asarray(background_image(s.spec.background))).all(-1)  # the mask's background pixels
        wrong[bare] = np.asarray(background_image("gray" if s.spec.background == "checkered" else "checkered"))[bare]
        assert pbe_scores(s.image, Image.fromarray(wrong), m, sh, c, s.spec.background)["bg_in"] < 20


def test_the_validation_cases_are_not_the_bench_s_and_every_case_is_scored_once():
    import inspect

    from course_lib.evaluate import pbe_cases
    from course_tools.bench import pbe as bp
    bench = inspect.signature(pbe_cases).parameters["offset"].default  # the bench's cases start there
    assert all(off >= bench + bp.BENCH_CASES or off + 40 <= bench for off in bp.VALIDATION_OFFSETS)
    assert all(b - a >= 40 for a, b in zip(bp.VALIDATION_OFFSETS, bp.VALIDATION_OFFSETS[1:]))
    res = bp.validation(guidance=(5.0,), steps=2, n=2, offsets=(90_000,), progress=False)
    r = res[5.0]
    assert set(res) == {5.0} and 0 <= r["share"] <= 1
    assert sum(t for _, t in r["by_shape"].values()) == 2
    assert sum(k for k, _ in r["by_shape"].values()) == round(2 * r["share"])


def test_the_card_gives_the_measured_table_with_its_case_count_and_the_zoomed_column_where_recorded(tmp_path):
    import json
    import shutil

    from course_tools.train.pbe import write_card
    for variant in ("bottleneck", "naive"):
        shutil.copy(pbe.TINY / f"{variant}.json", tmp_path)
    measured = {"shape+color": 70, "color": 100, "bg": 51.3, "blend_shape+color": 65, "blend_color": 95, "blend_bg": 49.7}
    for variant, zoom in (("bottleneck", {"zoom_shape+color": 85, "zoom_color": 100}), ("naive", {})):
        record = json.loads((tmp_path / f"{variant}.json").read_text())
        record["measured"] = {**measured, "cases": 100, **zoom, **({"zoom_context": 1.75} if zoom else {})}
        (tmp_path / f"{variant}.json").write_text(json.dumps(record))
    write_card(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "(100 held-out cases" in card and "zoomed" not in card  # one variant lacks the zoomed figures
    record = json.loads((tmp_path / "naive.json").read_text())
    record["measured"].update({"zoom_shape+color": 25, "zoom_color": 100, "zoom_context": 1.75})
    (tmp_path / "naive.json").write_text(json.dumps(record))
    write_card(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "1.75 times its side" in card and "| 65% / 95% / 49.7 dB | 85% / 100% |" in card
    assert "| 65% / 95% / 49.7 dB | 25% / 100% |" in card


def test_the_seam_row_passes_a_perfect_paint_and_fails_a_flat_patch_around_the_object():
    from course_lib.evaluate import SEAM_BAR, background_by_kind, pbe_cases, pbe_scores, seam_row
    from course_tools.bench.pbe import perfect_paint
    cases = pbe_cases(12)
    kinds = {s.spec.background for s, *_ in cases}
    assert {"checkered", "gradient"} <= kinds
    perfect, flat = [], []
    for s, m, ref, sh, c in cases:
        right = perfect_paint(s, sh, c)
        perfect.append(pbe_scores(s.image, right, m, sh, c, s.spec.background))
        # the seam of a zoomed painting: the mask's background painted one flat tone around the new object
        a = np.asarray(right).copy()
        bare = m & (a == np.asarray(background_image(s.spec.background))).all(-1)
        a[bare] = a[bare].mean(0).astype(np.uint8)
        flat.append(pbe_scores(s.image, Image.fromarray(a), m, sh, c, s.spec.background))
    good, bad = seam_row("perfect", perfect, cases), seam_row("flat", flat, cases)
    assert good.bar == SEAM_BAR == 35 and good.passed and good.value >= 40
    assert set(background_by_kind(perfect, cases)) == kinds
    by_kind = background_by_kind(flat, cases)
    assert not bad.passed and bad.value == min(by_kind.values()) and max(by_kind["checkered"], by_kind["gradient"]) < 25
    # plain backgrounds hide no seam: a flat patch on them is the background itself
    assert min(by_kind[k] for k in kinds & {"white", "gray"}) > 40
    assert seam_row("nothing read", [{"bg_in": float("nan")}], cases[:1]).passed is False


def test_feathered_zoomed_painting_blends_into_the_whole_image_painting_at_the_mask_s_edge(clip):
    from scipy import ndimage
    model, _, proc = clip
    p = build_pipeline(random_pipeline("tiny-sd"), model, proc, "bottleneck")
    image, m, ref = scene_inputs()
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    whole = np.asarray(paint_by_example(p, image, m, ref, 2, latents=z)[0], float)
    zoomed = np.asarray(pbe.paint_by_example_zoomed(p, image, m, ref, 2, latents=z)[0], float)
    out = np.asarray(pbe.paint_by_example_zoomed(p, image, m, ref, 2, feather=3, latents=z)[0], float)
    alpha = np.clip(ndimage.distance_transform_edt(m) / 3, 0, 1)[..., None]
    assert (out[~m] == np.asarray(image)[~m]).all()
    assert np.abs(out - np.where(m[..., None], alpha * zoomed + (1 - alpha) * whole, out)).max() <= 0.5
    deep = ndimage.distance_transform_edt(m) >= 3
    assert (out[deep] == zoomed[deep]).all() and not (out[m & ~deep] == zoomed[m & ~deep]).all()
    # the same noise from a generator as from latents drawn from it
    again = pbe.paint_by_example_zoomed(p, image, m, ref, 2, feather=3, generator=torch.Generator().manual_seed(3))[0]
    assert (np.asarray(again) == out).all()
    with pytest.raises(ValueError, match="feather"):
        pbe.paint_by_example_zoomed(p, image, m, ref, 1, feather=-1)


def test_repainting_starts_from_the_given_image_part_of_the_way_down(clip, monkeypatch):
    import course_lib.methods.pbe.inpaint as inp
    model, _, proc = clip
    p = build_pipeline(random_pipeline("tiny-sd"), model, proc, "bottleneck")
    image, m, ref = scene_inputs()
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(4))
    starts, real = [], inp.denoise
    monkeypatch.setattr(inp, "denoise", lambda *a, **k: starts.append(k["start_index"]) or real(*a, **k))
    plain = paint_by_example(p, image, m, ref, 10, latents=z, output="latent")
    full = paint_by_example(p, image, m, ref, 10, latents=z, init_image=image, strength=1.0, output="latent")
    torch.testing.assert_close(plain, full)  # strength 1: the init image is noised away, plain painting
    other = make_scene(11, n_objects=1).image
    half = paint_by_example(p, image, m, ref, 10, latents=z, init_image=other, strength=0.3, output="latent")
    assert starts == [0, 0, 7] and not torch.allclose(half, plain)
    out = pbe.paint_by_example_zoomed(p, image, m, ref, 10, repaint=0.5, latents=z)[0]
    zoomed = pbe.paint_by_example_zoomed(p, image, m, ref, 10, latents=z)[0]
    again = paint_by_example(p, image, m, ref, 10, latents=z, init_image=zoomed, strength=0.5)[0]
    assert (np.asarray(out)[~m] == np.asarray(image)[~m]).all() and (np.asarray(out)[m] == np.asarray(again)[m]).all()
    assert starts[-1] == 5
    for bad, said in ((dict(strength=0.0), "strength"), (dict(strength=0.5, num_images=2, init_image=[image] * 3), "init_image")):
        with pytest.raises(ValueError, match=said):
            paint_by_example(p, image, m, ref, 2, **{"init_image": image, **bad})
    with pytest.raises(ValueError, match="repaint"):
        pbe.paint_by_example_zoomed(p, image, m, ref, 1, repaint=1.0)


def test_the_bench_runs_a_part_of_its_modes_with_a_seam_row_for_each_and_refuses_unknown_ones(monkeypatch):
    import course_tools.bench.pbe as bp
    monkeypatch.setattr(bp, "tiny_pipeline", lambda variant: "pipe")
    seen = []

    def fake(pipe, cases, steps, **kw):
        seen.append(kw)
        return [{"shape+color": True, "color": True, "bg": 40.0, "bg_in": 45.0, "fill": 0.5} for _ in cases], 0.1
    monkeypatch.setattr(bp, "paint_cases", fake)
    rows = bp.pbe_suite(smoke=True, modes=("zoomed+repaint",), variants=("bottleneck",), n=4)
    assert seen == [bp.MODES["zoomed+repaint"][1]] and seen[0]["repaint"] == bp.ZOOM_REPAINT
    seam = [r for r in rows if "worst background kind" in r.name]
    assert len(seam) == 1 and seam[0].bar == bp.SEAM_BAR and seam[0].passed
    assert bp.DEFAULT_MODES[0] == "whole" and set(bp.DEFAULT_MODES) <= set(bp.MODES)
    with pytest.raises(ValueError, match="unknown modes"):
        bp.pbe_suite(smoke=True, modes=("sideways",), n=1)


def test_the_tiny_pipeline_is_written_and_read_back_without_library_messages(tmp_path):
    """A learner's first run of notebook 05 writes the shipped Paint by Example as a diffusers folder and
    reads it back: nothing of what diffusers and transformers say on the way reaches the output; the
    libraries' verbosity is restored afterwards."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("from diffusers.utils import logging as d; from transformers.utils import logging as t; "
            "before = (d.get_verbosity(), t.get_verbosity()); "
            "from course_lib.methods.pbe import tiny_pipeline; "
            f"p = tiny_pipeline('bottleneck', folder={str(tmp_path / 'pbe')!r}); "
            "assert (d.get_verbosity(), t.get_verbosity()) == before, 'verbosity restored'; "
            "assert type(p).__name__ == 'PaintByExamplePipeline'")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "pbe" / "model_index.json").exists()
    assert r.stderr.strip() == "" and r.stdout.strip() == ""
