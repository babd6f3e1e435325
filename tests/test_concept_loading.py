"""Loading the shipped concepts, as notebook 04 does, shows a learner no library message; only the two
messages that say nothing actionable are dropped, and only while a concept loads."""
import logging
import os
import subprocess
import sys
from pathlib import Path

from course_lib.methods.concepts import _quiet_concept_loading

ROOT = Path(__file__).resolve().parent.parent


def test_loading_the_shipped_concepts_prints_nothing():
    code = ("from course_lib import load_pipeline; from course_lib.models import MODELS_DIR; "
            "from course_lib.methods.concepts import load_concept; "
            "load_concept(load_pipeline(dtype='float32'), MODELS_DIR / 'concept-sks-lora', 'lora'); "
            "load_concept(load_pipeline(dtype='float32'), MODELS_DIR / 'concept-sks-ti', 'textual_inversion')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "notebooks", capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "" and r.stdout.strip() == ""


def test_only_the_load_messages_are_dropped_and_only_while_loading():
    lora = logging.getLogger("diffusers.loaders.lora_base")
    emb = logging.getLogger("transformers.modeling_utils")
    record = lambda logger, msg: logger.makeRecord(logger.name, logging.WARNING, __file__, 0, msg, None, None)
    no_text_keys = "No LoRA keys associated to CLIPTextModel found with the prefix='text_encoder'."
    new_rows = "The new embeddings will be initialized from a multivariate normal distribution that has old embeddings' mean"
    with _quiet_concept_loading():
        assert not lora.filter(record(lora, no_text_keys))
        assert not emb.filter(record(emb, new_rows))
        assert lora.filter(record(lora, "No LoRA keys associated to UNet2DConditionModel found"))
        assert emb.filter(record(emb, "Some weights of the model checkpoint were not used"))
    assert lora.filter(record(lora, no_text_keys)) and emb.filter(record(emb, new_rows))
