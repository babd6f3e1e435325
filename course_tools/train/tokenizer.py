"""Build tiny-sd's CLIPTokenizer files (vocab.json, merges.txt) for the Shapes World vocabulary.

Why a tokenizer of our own: with CLIP's 49k-token BPE, Shapes World words would be only a few of
many ids the tiny text encoder never sees. We learn BPE merges on the Shapes World word list
instead, until every caption word is exactly one token. That keeps Prompt-to-Prompt's lessons
honest: one word, one token, one cross-attention map. Any other text still tokenizes (into
characters and pieces, as with CLIP), so unknown words are handled, never refused.
The files are in CLIP's format, so ``transformers.CLIPTokenizer`` loads them unchanged.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from course_lib.shapes.vocab import caption_words

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Plain BPE learning until every word is a single token (ties broken alphabetically)."""
    seqs = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges: list[tuple[str, str]] = []
    while any(len(s) > 1 for s in seqs.values()):
        pairs = Counter()
        for s in seqs.values():
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += 1
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = tuple(out)
    return merges


def build_tokenizer(out_dir: str | Path, model_max_length: int = 32) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges = learn_merges(caption_words())
    for a, b in merges:
        tok = a + b
        if tok not in vocab_list:
            vocab_list.append(tok)
    vocab_list += [BOS, EOS]  # special tokens last, as in CLIP (EOS has the largest id)
    vocab = {t: i for i, t in enumerate(vocab_list)}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=1))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length,
        "bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS,
        "do_lower_case": True, "clean_up_tokenization_spaces": False,
    }, indent=1))
    return out
