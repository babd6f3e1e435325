"""The course's environment variables: a value the course cannot use is refused, naming the fix."""
import pytest

from course_lib.config import CourseConfig


@pytest.mark.parametrize("name, value, says", [
    ("COURSE_SEED", "abc", "COURSE_SEED='abc' is not a whole number"),
    ("COURSE_SEED", "1.5", "not a whole number"),
    ("COURSE_SMOKE", "maybe", "COURSE_SMOKE='maybe' is neither on nor off"),
    ("COURSE_DEVICE", "tpu", "cuda (or cuda:N), mps or cpu"),
    ("COURSE_DEVICE", "cpu:1", "cuda (or cuda:N), mps or cpu"),
    ("COURSE_DTYPE", "float8", "unknown dtype 'float8'"),
])
def test_unusable_settings_are_refused_with_the_fix(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        CourseConfig.from_env()


@pytest.mark.parametrize("value, smoke", [("1", True), ("yes", True), (" On ", True), ("0", False), ("", False),
                                          ("off", False)])
def test_on_and_off_are_read_in_their_usual_spellings(monkeypatch, value, smoke):
    monkeypatch.setenv("COURSE_SMOKE", value)
    monkeypatch.setenv("COURSE_SEED", " 12 ")
    monkeypatch.setenv("COURSE_DEVICE", "CPU")
    cfg = CourseConfig.from_env()
    assert cfg.smoke is smoke and cfg.seed == 12 and cfg.device == "cpu"


def test_a_device_this_machine_lacks_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    with pytest.raises(ValueError, match="this machine has no cuda device: unset it"):
        CourseConfig.from_env()


def test_pipelines_the_methods_are_not_written_for_are_refused_at_load(tmp_path):
    import json
    import shutil

    from course_lib.models import MODELS_DIR, ModelNotSupported, load_pipeline

    sdxl = tmp_path / "sdxl"
    sdxl.mkdir()
    (sdxl / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(ModelNotSupported, match="is a StableDiffusionXLPipeline; the course works with"):
        load_pipeline(str(sdxl), device="cpu")
    v = tmp_path / "v"
    shutil.copytree(MODELS_DIR / "tiny-sd", v)
    cfg = json.loads((v / "scheduler" / "scheduler_config.json").read_text())
    (v / "scheduler" / "scheduler_config.json").write_text(json.dumps({**cfg, "prediction_type": "v_prediction"}))
    with pytest.raises(ModelNotSupported, match="predicts 'v_prediction', not the noise"):
        load_pipeline(str(v), device="cpu")
    assert load_pipeline("tiny-sd", device="cpu").scheduler.config.prediction_type == "epsilon"
