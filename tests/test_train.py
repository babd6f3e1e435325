import json

import pytest
import torch

from course_tools.train import common
from course_tools.train.common import EMA, cosine_lr, load_checkpoint, save_checkpoint


def test_checkpoints_round_trip_model_optimizer_and_ema(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ema = EMA(model)
    for step in range(3):
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model, step)
    save_checkpoint(tmp_path / "ckpt", model, opt, 3, ema, extra={"note": "x"})
    assert not (tmp_path / "ckpt" / "tmp").exists()
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    ema2 = EMA(model2)
    state = load_checkpoint(tmp_path / "ckpt", model2, opt2, ema2)
    assert state == {"step": 3, "note": "x"}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    for k in ema.shadow:
        assert torch.equal(ema.shadow[k], ema2.shadow[k])
    # the restored optimiser continues exactly like the original
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (model2, opt2)):
        m(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b)
    assert load_checkpoint(tmp_path / "none", model2, opt2) == {}


def test_learning_rate_schedule():
    assert cosine_lr(0, 1000, 1.0, warmup=100) == pytest.approx(0.01)
    assert cosine_lr(99, 1000, 1.0, warmup=100) == pytest.approx(1.0)
    assert cosine_lr(1000, 1000, 1.0, warmup=100) == pytest.approx(0.05)
    assert cosine_lr(500, 1000, 1.0, warmup=100) < cosine_lr(200, 1000, 1.0, warmup=100)


def test_a_spent_time_budget_stops_the_run_and_says_so_once(capsys):
    assert common.Budget(None).left() and common.Budget(10).left()
    assert capsys.readouterr().out == ""
    spent = common.Budget(0)
    assert not spent.left() and not spent.left()
    out = capsys.readouterr().out
    assert out.count("time budget (0 min) is spent") == 1 and "--minutes" in out


def test_clip_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from transformers import CLIPModel

    from course_tools.train.clip import train_clip
    monkeypatch.setattr(common, "RUNS", tmp_path)
    final = train_clip(out=tmp_path / "clip", minutes=None, steps=2, batch=8, n_scenes=32)
    assert json.loads((tmp_path / "clip" / "ckpt" / "state.json").read_text())["step"] == 2
    train_clip(out=tmp_path / "clip", minutes=None, steps=3, batch=8, n_scenes=32)
    assert json.loads((tmp_path / "clip" / "ckpt" / "state.json").read_text())["step"] == 3
    model = CLIPModel.from_pretrained(final)
    assert model.config.text_config.hidden_size == 128


def test_unet_and_text_encoder_train_together_and_resume(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import CLIPTextModel

    from course_tools.train import unet as unet_mod
    monkeypatch.setattr(common, "RUNS", tmp_path)
    monkeypatch.setattr(unet_mod, "RUNS", tmp_path)
    out = tmp_path / "unet-text"
    unet_mod.train_unet(out=out, minutes=None, steps=2, batch=4, n_scenes=16, train_text=True, bf16=False)
    state = json.loads((out / "ckpt" / "state.json").read_text())
    assert state["step"] == 2 and state["train_text"] is True
    w = load_file(out / "ckpt" / "model.safetensors")
    assert any(k.startswith("unet.") for k in w) and any(k.startswith("text.") for k in w)
    start = CLIPTextModel.from_pretrained(unet_mod.Path(unet_mod.__file__).resolve().parents[2] / "data/models/tiny-clip")
    key = next(k for k in start.state_dict() if k.endswith("token_embedding.weight"))
    assert not torch.equal(w["text." + key], start.state_dict()[key]), "the text encoder did not train"
    # a checkpoint continues only with the oversampling it was trained with (its card reports one)
    with pytest.raises(ValueError, match=r"trained with no --oversample \(this run: --oversample hexagon:2\): continue it"):
        unet_mod.train_unet(out=out, minutes=None, steps=3, batch=4, n_scenes=16, train_text=True, bf16=False,
                            oversample={"hexagon": 2})
    assert json.loads((out / "ckpt" / "state.json").read_text())["step"] == 2
    unet_mod.train_unet(out=out, minutes=None, steps=3, batch=4, n_scenes=16, train_text=True, bf16=False)
    assert json.loads((out / "ckpt" / "state.json").read_text())["step"] == 3


def test_word_similarity_sees_words_apart():
    from course_lib import load_pipeline
    from course_tools.train.unet import word_similarity
    pipe = load_pipeline("tiny-sd", device="cpu", dtype="float32")
    words = ["circle", "square", "red"]
    m = word_similarity(pipe.text_encoder, pipe.tokenizer, words)
    torch.testing.assert_close(m.diagonal(), torch.ones(3))
    torch.testing.assert_close(m, m.T)
    assert m[0, 1] < 0.999


def test_shipped_text_encoder_keeps_shape_words_apart():
    """The refined text tower (train stage clip-text): no two shape words share their hidden state."""
    from course_lib import load_pipeline
    from course_lib.shapes.vocab import SHAPES
    from course_tools.train.unet import word_similarity
    pipe = load_pipeline("tiny-sd", device="cpu", dtype="float32")
    m = word_similarity(pipe.text_encoder, pipe.tokenizer, list(SHAPES))
    assert m[~torch.eye(len(SHAPES), dtype=bool)].max() < 0.8


def test_hard_negatives_change_exactly_one_attribute():
    import random

    from course_lib.shapes.vocab import COLOR_NAMES, SHAPES
    from course_tools.train.clip_text import hard_negative
    rng = random.Random(0)
    cap = "a red star left of a blue circle on a white background"
    for _ in range(20):
        neg = hard_negative(cap, "shape", rng)
        diff = [(a, b) for a, b in zip(cap.split(), neg.split()) if a != b]
        assert len(diff) == 1 and diff[0][0] in SHAPES and diff[0][1] in SHAPES
        neg = hard_negative(cap, "color", rng)
        diff = [(a, b) for a, b in zip(cap.split(), neg.split()) if a != b]
        assert len(diff) == 1 and diff[0][1] in COLOR_NAMES
    assert hard_negative(cap, "binding", rng) == "a blue star left of a red circle on a white background"
    # commas survive, and a caption with one object has no binding to swap
    three = "a yellow triangle, a small purple hexagon and a green circle on a gray background"
    assert "," in hard_negative(three, "shape", rng)
    one = "a red star on a white background"
    assert hard_negative(one, "binding", rng) == one


def test_text_refinement_trains_only_the_text_tower_and_resumes(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import CLIPModel

    from course_tools.train import clip_text
    monkeypatch.setattr(common, "RUNS", tmp_path)
    monkeypatch.setattr(clip_text, "RUNS", tmp_path)
    out = tmp_path / "clip-text"
    final = clip_text.refine_text(out=out, minutes=None, steps=2, batch=4, n_scenes=16)
    assert json.loads((out / "ckpt" / "state.json").read_text())["step"] == 2
    head = load_file(out / "ckpt" / "model.safetensors")
    assert "head.weight" in head and not any(k.startswith("vision") for k in head)
    start = CLIPModel.from_pretrained(clip_text.Path(clip_text.__file__).resolve().parents[2] / "data/models/tiny-clip")
    new = CLIPModel.from_pretrained(final)
    a, b = start.state_dict(), new.state_dict()
    assert all(torch.equal(a[k].float(), b[k].float()) for k in a if k.startswith(("vision_model", "visual_projection")))
    assert not torch.equal(a["text_model.embeddings.token_embedding.weight"].float(),
                           b["text_model.embeddings.token_embedding.weight"].float())
    clip_text.refine_text(out=out, minutes=None, steps=3, batch=4, n_scenes=16)
    assert json.loads((out / "ckpt" / "state.json").read_text())["step"] == 3


def test_unet_cache_encodes_captions_again_when_the_text_encoder_changes(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import CLIPModel

    from course_tools.train import unet as unet_mod
    monkeypatch.setattr(common, "RUNS", tmp_path)
    models = unet_mod.Path(unet_mod.__file__).resolve().parents[2] / "data" / "models"
    cache = tmp_path / "cache.safetensors"
    first = unet_mod.prepare_cache(models / "tiny-clip", models / "tiny-sd" / "vae", 8, cache)
    again = unet_mod.prepare_cache(models / "tiny-clip", models / "tiny-sd" / "vae", 8, cache)
    assert torch.equal(first["embeddings"], again["embeddings"])
    changed = CLIPModel.from_pretrained(models / "tiny-clip")
    with torch.no_grad():
        changed.text_model.embeddings.token_embedding.weight.mul_(1.5)
    changed.save_pretrained(tmp_path / "clip2")
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"):
        if (models / "tiny-clip" / f).exists():
            (tmp_path / "clip2" / f).write_bytes((models / "tiny-clip" / f).read_bytes())
    third = unet_mod.prepare_cache(tmp_path / "clip2", models / "tiny-sd" / "vae", 8, cache)
    assert torch.equal(third["latents"], first["latents"])  # latents kept, captions encoded again
    assert not torch.equal(third["embeddings"], first["embeddings"])
    assert torch.equal(load_file(cache)["embeddings"], third["embeddings"])


def test_earlier_runs_follow_the_recorded_chain_and_the_files_beside_it(tmp_path):
    from course_tools.train.unet import earlier_runs
    first, second = tmp_path / "a" / "ckpt", tmp_path / "b" / "ckpt"
    first.mkdir(parents=True), second.mkdir(parents=True)
    (first / "state.json").write_text(json.dumps({"step": 7000, "seconds_total": 600.0, "text": "runs/clip/final"}))
    # the second run recorded where it started, but not the first run's text tower
    (second / "state.json").write_text(json.dumps({
        "step": 6000, "seconds_total": 300.0, "text": "runs/clip-text/final",
        "init": {"from": str(first / "ema.safetensors"), "step": 7000, "seconds_total": 600.0}}))
    # a third run whose record stops at the second (an older version wrote no chain)
    state = {"step": 10, "init": {"from": str(second / "ema.safetensors"), "step": 6000, "seconds_total": 300.0}}
    chain = earlier_runs(state)
    assert [r["step"] for r in chain] == [7000, 6000]
    assert [r["text"] for r in chain] == ["runs/clip/final", "runs/clip-text/final"]
    assert earlier_runs({"step": 5}) == []


def test_attribute_targets_name_every_shape_and_colour_of_the_caption():
    from course_lib.shapes.vocab import COLOR_NAMES, SHAPES
    from course_tools.train.clip_vision import attribute_targets
    s, c = attribute_targets(["a red star left of a blue circle on a gray background",
                              "a large green hexagon on a white background"])
    assert s[0, SHAPES.index("star")] == 1 and s[0, SHAPES.index("circle")] == 1 and s[0].sum() == 2
    assert c[0, COLOR_NAMES.index("red")] == 1 and c[0, COLOR_NAMES.index("blue")] == 1 and c[0].sum() == 2
    assert s[1].sum() == 1 and c[1, COLOR_NAMES.index("green")] == 1


def test_vision_refinement_trains_only_the_vision_tower_and_resumes(tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import CLIPModel

    from course_tools.train import clip_vision, unet
    monkeypatch.setattr(common, "RUNS", tmp_path)
    monkeypatch.setattr(clip_vision, "RUNS", tmp_path)
    monkeypatch.setattr(unet, "RUNS", tmp_path)  # no refined text tower here: start from the shipped tiny-clip
    out = tmp_path / "clip-vision"
    final = clip_vision.refine_vision(out=out, minutes=None, steps=2, batch=4, n_scenes=16, progress=False)
    assert clip_vision.vision_source() == final
    state = json.loads((out / "ckpt" / "state.json").read_text())
    assert state["step"] == 2 and state["seconds_total"] > 0
    w = load_file(out / "ckpt" / "model.safetensors")
    assert "heads.shape.weight" in w and not any(k.startswith("text") for k in w)
    start = CLIPModel.from_pretrained(unet.text_source())
    new = CLIPModel.from_pretrained(final)
    a, b = start.state_dict(), new.state_dict()
    assert all(torch.equal(a[k].float(), b[k].float()) for k in a if k.startswith(("text_model", "text_projection")))
    assert not torch.equal(a["visual_projection.weight"].float(), b["visual_projection.weight"].float())
    clip_vision.refine_vision(out=out, minutes=None, steps=3, batch=4, n_scenes=16, progress=False)
    assert json.loads((out / "ckpt" / "state.json").read_text())["step"] == 3
    probe = clip_vision.class_token_probe(new, n=36)
    assert set(probe) == {"shape", "color"} and all(0 <= v <= 1 for v in probe.values())


def test_card_paragraph_on_the_vision_refinement_measures_the_probe_before_and_after():
    from course_lib.models import MODELS_DIR, load_clip
    from course_tools.train.card import vision_refinement_text
    clip, _, _ = load_clip("tiny-clip", device="cpu", dtype="float32")
    state = {"step": 400, "seconds_total": 600.0, "batch": 128, "lr": 3e-4, "text": str(MODELS_DIR / "tiny-clip")}
    text = vision_refinement_text(clip, state, n_probe=36)
    assert "400 steps (10 minutes" in text and "before it" in text and "36 exemplars" in text
    assert "before it" not in vision_refinement_text(clip, {**state, "text": "/nowhere"}, n_probe=36)


def test_decoder_fine_tune_keeps_the_encoder_and_resumes(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    from course_tools.train import vae as vae_mod
    monkeypatch.setattr(common, "RUNS", tmp_path)
    monkeypatch.setattr(vae_mod, "RUNS", tmp_path)  # no VAE run here: starts from the shipped VAE
    src = AutoencoderKL.from_pretrained(vae_mod.decoder_source(), torch_dtype=torch.float32)
    final = vae_mod.train_decoder(out=tmp_path / "dec", minutes=None, steps=2, batch=4, n_scenes=16, lr=1e-3, bf16=False)
    assert json.loads((tmp_path / "dec" / "ckpt" / "state.json").read_text())["step"] == 2
    tuned = AutoencoderKL.from_pretrained(final, torch_dtype=torch.float32)
    a, b = src.state_dict(), tuned.state_dict()
    for k in a:
        if k.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(a[k], b[k]), f"{k} moved: the latents would no longer fit the UNet"
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder.")), "the decoder did not train"
    vae_mod.train_decoder(out=tmp_path / "dec", minutes=None, steps=3, batch=4, n_scenes=16, bf16=False)
    assert json.loads((tmp_path / "dec" / "ckpt" / "state.json").read_text())["step"] == 3


def test_edge_loss_measures_edges_not_levels():
    import torch.nn.functional as F

    from course_tools.train.vae import edge_loss
    x = -torch.ones(1, 3, 32, 32)
    x[..., 8:24, 8:24] = 1.0  # a sharp square
    blurred = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    assert edge_loss(x, x) == 0
    assert edge_loss(x + 0.2, x) < 1e-6  # a uniform shift of level keeps every edge
    assert edge_loss(blurred, x) > 0.05  # blurring the corners and sides does not


def test_oversampling_weights_scenes_by_the_shapes_they_name():
    from course_tools.train.unet import scene_weights
    caps = ["a red hexagon on a white background", "a blue star to the left of a red hexagon",
            "a green circle on a gray background", "a small yellow star, a green cross and a red circle"]
    w = scene_weights(caps, {"hexagon": 3, "star": 2})
    assert w.tolist() == [3.0, 3.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="no Shapes World shape"):
        scene_weights(caps, {"hexagons": 2})
    with pytest.raises(ValueError, match="positive"):
        scene_weights(caps, {"star": 0})


def test_earlier_runs_follow_the_record_shipped_with_the_models(tmp_path):
    """A run started from the shipped UNet (``--init-from data/models/tiny-sd/unet``) on a machine
    without runs/ still knows the chain of runs behind those weights."""
    from course_tools.train.unet import earlier_runs
    (tmp_path / "tiny-sd" / "unet").mkdir(parents=True)
    (tmp_path / "tiny-sd" / "training.json").write_text(json.dumps({"unet": {
        "step": 300, "seconds_total": 120.0, "text": "runs/clip-text/final",
        "init": {"from": str(tmp_path / "gone" / "ema.safetensors"), "step": 700, "seconds_total": 60.0, "init": None}}}))
    state = {"step": 5, "init": {"from": str(tmp_path / "tiny-sd" / "unet"), "step": None, "seconds_total": None}}
    chain = earlier_runs(state)
    assert [r["step"] for r in chain] == [700, 300]
    assert chain[1]["text"] == "runs/clip-text/final"


def test_assemble_in_place_without_runs_keeps_the_shipped_parts_and_records(tmp_path, monkeypatch):
    """On a machine with only the shipped models and a new UNet run: assemble over the shipped folder
    reads every part before replacing it, keeps the VAE and tiny-clip, and writes the records."""
    import shutil

    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from course_tools.train import assemble as asm
    from course_tools.train import unet as unet_mod
    shipped = asm.MODELS
    models, runs = tmp_path / "models", tmp_path / "runs"
    for part in ("tiny-sd", "tiny-clip"):
        shutil.copytree(shipped / part, models / part)
    for mod in (common, unet_mod, asm):
        monkeypatch.setattr(mod, "RUNS", runs)
    monkeypatch.setattr(common, "MODELS", models)
    monkeypatch.setattr(asm, "MODELS", models)
    monkeypatch.setattr(asm, "text_source", lambda: models / "tiny-clip")
    monkeypatch.setattr(asm, "vision_source", lambda: models / "tiny-clip")
    unet_mod.train_unet(out=runs / "unet", minutes=None, steps=1, batch=2, n_scenes=8, bf16=False,
                        init_from=models / "tiny-sd" / "unet")
    vae_before = load_file(models / "tiny-sd" / "vae" / "diffusion_pytorch_model.safetensors")
    clip_before = load_file(models / "tiny-clip" / "model.safetensors")
    asm.assemble(out=models)
    pipe = StableDiffusionPipeline.from_pretrained(models / "tiny-sd", safety_checker=None)
    assert pipe.unet.config.in_channels == 4
    vae_after = load_file(models / "tiny-sd" / "vae" / "diffusion_pytorch_model.safetensors")
    assert vae_after.keys() == vae_before.keys() and all(torch.equal(vae_after[k], vae_before[k]) for k in vae_before)
    clip_after = load_file(models / "tiny-clip" / "model.safetensors")
    assert all(torch.equal(clip_after[k], clip_before[k]) for k in clip_before)
    records = json.loads((models / "tiny-sd" / "training.json").read_text())
    assert records["unet"]["step"] == 1  # the new run, which started from the shipped one
    assert records["unet"]["init"]["from"] == str(models / "tiny-sd" / "unet")
    shipped_records = json.loads((shipped / "tiny-sd" / "training.json").read_text())
    assert records["unet"]["init"]["step"] == shipped_records["unet"]["step"]
    assert records["vae"] == shipped_records["vae"]  # a stage not run here keeps its shipped record
    assert records["unet"]["text"] == shipped_records["unet"]["text"]


def test_a_vae_refit_to_a_world_starts_from_the_given_vae_and_keeps_its_world(tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    from course_tools.train import vae as vae_mod
    monkeypatch.setattr(common, "RUNS", tmp_path)
    shipped = vae_mod.MODELS / "tiny-sd" / "vae"
    final = vae_mod.train_vae(out=tmp_path / "vae", minutes=None, steps=2, batch=4, n_scenes=12, bf16=False,
                              world="ground", init_from=shipped, edge_weight=0.5)
    state = json.loads((tmp_path / "vae" / "ckpt" / "state.json").read_text())
    assert state["step"] == 2 and state["world"] == "ground" and state["edge_weight"] == 0.5
    assert (tmp_path / "data" / "scenes_ground_0_12_64.npz").exists()  # the world's own scenes
    src = AutoencoderKL.from_pretrained(shipped, torch_dtype=torch.float32).state_dict()
    tuned = AutoencoderKL.from_pretrained(final, torch_dtype=torch.float32).state_dict()
    # a refit of the shipped VAE: close to it (not a fresh one), and the encoder moved too
    assert max((src[k].float() - tuned[k]).abs().max().item() for k in src) < 0.05
    assert any(not torch.equal(src[k].float(), tuned[k]) for k in src if k.startswith("encoder."))
    with pytest.raises(ValueError, match="--world|world"):
        vae_mod.train_vae(out=tmp_path / "vae", minutes=None, steps=3, batch=4, n_scenes=12, bf16=False,
                          world="clutter", init_from=shipped)


def test_world_candidates_are_exported_in_fp16_with_their_records(tmp_path):
    from safetensors.torch import load_file, save_file

    from course_tools.train.worlds import export
    runs = tmp_path / "runs"
    (runs / "unet" / "ckpt").mkdir(parents=True)
    save_file({"w": torch.ones(2, 2)}, runs / "unet" / "ckpt" / "ema.safetensors")
    (runs / "unet" / "ckpt" / "state.json").write_text(json.dumps({"step": 7, "world": "hills"}))
    rec = export("hills", runs, tmp_path)
    assert rec == {"world": "hills", "unet": {"step": 7, "world": "hills"}}  # no VAE run: none exported
    assert load_file(tmp_path / "hills-unet.safetensors")["w"].dtype == torch.float16
    assert not (tmp_path / "hills-vae.safetensors").exists()
