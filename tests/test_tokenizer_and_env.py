import re
import tomllib
from pathlib import Path

from transformers import CLIPTokenizer

from course_lib.shapes.vocab import CONCEPT_TOKEN, caption_words
from course_tools.train.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def test_every_caption_word_is_one_token(tmp_path):
    tok = CLIPTokenizer.from_pretrained(build_tokenizer(tmp_path / "tok"))
    for w in caption_words():
        assert len(tok(w).input_ids) == 3, w  # <bos> word <eos>
    ids = tok("a small red striped star left of a blue circle on a gray background").input_ids
    assert len(ids) == 16  # 14 words, each one token, and the start and end tokens
    assert tok.convert_ids_to_tokens(tok(CONCEPT_TOKEN).input_ids)[1] == CONCEPT_TOKEN + "</w>"
    # unknown words are split, never refused
    assert len(tok("a zebra").input_ids) > 4


def _names(reqs):
    return {re.split(r"[<>=!~ \[]", r.strip(), maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) | _names(project["optional-dependencies"]["dev"])
    env, in_deps = set(), False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        s = line.strip()
        if s.startswith("dependencies:"):
            in_deps = True
        if not in_deps or not s.startswith("- "):
            continue
        item = s[2:].strip()
        if item in ("pip", "pip:") or item.startswith("python="):
            continue
        env |= _names([item.replace("=", "==", 1) if "==" not in item and ">" not in item else item])
    assert env == wanted, (env ^ wanted)
