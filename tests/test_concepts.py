import pytest
import torch

from course_lib.methods.concepts import (ConceptData, ConceptTokenError, ConceptTraining, TI_TOKEN,
                                         check_concept_token, concept_references, learn_concept,
                                         learned_embedding, load_concept, save_concept)
from course_lib.sampling import encode_text, initial_latents, sample
from course_lib.testing import random_pipeline


def small_data(token="sks", n=2):
    d = concept_references(n, token=token)
    return ConceptData(d.images, d.prompts, d.class_prompts)


def test_references_and_prompts():
    d = concept_references(4)
    assert len(d.images) == 4 and all(im.size == (64, 64) for im in d.images)
    assert all(p.split().count("sks") == 1 and "heart" not in p for p in d.prompts)
    assert all("sks" not in p and "shape" in p for p in d.class_prompts)


def test_colliding_tokens_are_refused():
    pipe = random_pipeline("tiny-sd")
    with pytest.raises(ConceptTokenError, match="already uses in its captions"):
        check_concept_token(pipe.tokenizer, "red")
    with pytest.raises(ConceptTokenError, match="already in the tokenizer's vocabulary"):
        check_concept_token(pipe.tokenizer, "sks", "textual_inversion")
    with pytest.raises(ConceptTokenError, match="without spaces"):
        check_concept_token(pipe.tokenizer, "my concept")
    with pytest.raises(ConceptTokenError, match="tokens for this tokenizer"):
        check_concept_token(pipe.tokenizer, "zqxjvw")
    check_concept_token(pipe.tokenizer, "sks")
    check_concept_token(pipe.tokenizer, TI_TOKEN, "textual_inversion")
    with pytest.raises(ConceptTokenError):
        learn_concept(pipe, config=ConceptTraining(method="dreambooth", token="heart", steps=1), progress=False)


@pytest.mark.parametrize("kind", ["tiny-sd", "sd15", "sd21"])
def test_dreambooth_full_changes_the_unet_and_reloads(kind, tmp_path):
    pipe = random_pipeline(kind)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    te_before = pipe.text_encoder.get_input_embeddings().weight.clone()
    cfg = ConceptTraining(method="dreambooth", steps=2, batch=2, class_images=2, lr=1e-3)
    pipe, losses = learn_concept(pipe, small_data(), cfg, progress=False)
    assert len(losses) == 2 and all(l == l for l in losses)
    assert any((pipe.unet.state_dict()[k] - v).abs().max() > 0 for k, v in before.items())
    torch.testing.assert_close(pipe.text_encoder.get_input_embeddings().weight, te_before)  # text encoder frozen
    if kind == "tiny-sd":
        save_concept(pipe, tmp_path / "db", "dreambooth")
        again = load_concept(pipe, tmp_path / "db", "dreambooth")
        z = initial_latents(pipe, 1, torch.Generator().manual_seed(0))
        a = sample(pipe, "a sks shape on a white background", 2, 7.5, latents=z, output="latent", progress=False)
        b = sample(again, "a sks shape on a white background", 2, 7.5, latents=z, output="latent", progress=False)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lora_trains_only_adapters_and_round_trips_through_diffusers(tmp_path):
    pipe = random_pipeline("tiny-sd")
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    z = initial_latents(pipe, 1, torch.Generator().manual_seed(0))
    prompt = "a sks shape on a white background"
    before = sample(pipe, prompt, 2, 7.5, latents=z, output="latent", progress=False)
    cfg = ConceptTraining(method="lora", steps=3, batch=2, class_images=2, lr=5e-2)
    pipe, _ = learn_concept(pipe, small_data(), cfg, progress=False)
    after = sample(pipe, prompt, 2, 7.5, latents=z, output="latent", progress=False)
    assert (after - before).abs().max() > 1e-3
    sd = pipe.unet.state_dict()
    for k, v in base.items():  # the base weights are untouched (peft renames wrapped layers' keys)
        k2 = k if k in sd else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        torch.testing.assert_close(sd[k2], v)
    save_concept(pipe, tmp_path / "lora", "lora")
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").exists()
    fresh = random_pipeline("tiny-sd")
    load_concept(fresh, tmp_path / "lora", "lora")
    again = sample(fresh, prompt, 2, 7.5, latents=z, output="latent", progress=False)
    torch.testing.assert_close(again, after, atol=1e-4, rtol=1e-4)


def test_textual_inversion_trains_one_embedding_and_loads_with_diffusers(tmp_path):
    pipe = random_pipeline("tiny-sd")
    unet_before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    n_before = len(pipe.tokenizer)
    old_rows = pipe.text_encoder.get_input_embeddings().weight.clone()
    cfg = ConceptTraining(method="textual_inversion", steps=3, batch=2, lr=5e-2)
    pipe, _ = learn_concept(pipe, small_data(TI_TOKEN), cfg, progress=False)
    assert len(pipe.tokenizer) == n_before + 1
    w = pipe.text_encoder.get_input_embeddings().weight
    torch.testing.assert_close(w[:n_before], old_rows)  # only the new row changed
    init = old_rows[pipe.tokenizer("shape", add_special_tokens=False).input_ids[0]]
    assert (w[n_before] - init).abs().max() > 1e-3
    for k, v in unet_before.items():
        torch.testing.assert_close(pipe.unet.state_dict()[k], v)
    save_concept(pipe, tmp_path / "ti", "textual_inversion")
    fresh = random_pipeline("tiny-sd")
    load_concept(fresh, tmp_path / "ti", "textual_inversion")
    torch.testing.assert_close(learned_embedding(fresh), learned_embedding(pipe))
    prompt = f"a {TI_TOKEN} shape on a white background"
    torch.testing.assert_close(encode_text(fresh, prompt), encode_text(pipe, prompt), atol=1e-5, rtol=1e-5)
