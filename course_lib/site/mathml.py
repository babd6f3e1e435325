"""LaTeX to MathML at build time, so the course's pages show equations with no script and no network.

Chromium, Firefox and Safari render MathML natively. ``latex2mathml`` (pure Python, from PyPI) does the
conversion; this module adds what it lacks for the course's notation: equation numbers from
``\\tag{n}`` (shown at the right, with an anchor ``#eq-n``), ``aligned``, ``\\arg``,
``\\operatorname*``, and styled letters (``\\mathbf``, ``\\mathcal``, ...) written as the Unicode
mathematical letters that MathML Core renders (browsers ignore ``mathvariant`` other than ``normal``).
"""
from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_TAG = re.compile(r"\\tag\*?\{([^{}]*)\}")
_REWRITES = [
    (re.compile(r"\\(begin|end)\{(aligned|alignedat|gathered)\}"), r"\\\1{split}"),
    (re.compile(r"\\operatorname\*"), r"\\operatorname"),
    (re.compile(r"\\arg\s*\\(min|max)\b"), r"\\operatorname{arg\\,\1}"),
    (re.compile(r"\\arg\b"), r"\\operatorname{arg}"),
    (re.compile(r"\\(nonumber|notag)\b"), ""),
]
# A LaTeX command that latex2mathml did not know comes out as text: <mi>\foo</mi>.
_LEFTOVER = re.compile(r">(\\[A-Za-z]+)<")


def _styled_alphabets() -> dict[str, dict[str, str]]:
    """mathvariant -> {plain character: Unicode mathematical character} (Latin, digits, some Greek)."""
    latin = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    starts = {"bold": 0x1D400, "italic": 0x1D434, "bold-italic": 0x1D468, "script": 0x1D49C,
              "bold-script": 0x1D4D0, "fraktur": 0x1D504, "double-struck": 0x1D538,
              "bold-fraktur": 0x1D56C, "sans-serif": 0x1D5A0, "bold-sans-serif": 0x1D5D4,
              "sans-serif-italic": 0x1D608, "monospace": 0x1D670}
    # Letters that Unicode placed in the Letterlike Symbols block before the mathematical alphabets.
    holes = {"italic": {"h": "\u210E"},
             "script": {"B": "\u212C", "E": "\u2130", "F": "\u2131", "H": "\u210B", "I": "\u2110",
                        "L": "\u2112", "M": "\u2133", "R": "\u211B", "e": "\u212F", "g": "\u210A",
                        "o": "\u2134"},
             "fraktur": {"C": "\u212D", "H": "\u210C", "I": "\u2111", "R": "\u211C", "Z": "\u2128"},
             "double-struck": {"C": "\u2102", "H": "\u210D", "N": "\u2115", "P": "\u2119",
                               "Q": "\u211A", "R": "\u211D", "Z": "\u2124"}}
    out = {}
    for variant, start in starts.items():
        table = {c: chr(start + i) for i, c in enumerate(latin)}
        table.update(holes.get(variant, {}))
        out[variant] = table
    for variant, start in {"bold": 0x1D7CE, "double-struck": 0x1D7D8, "sans-serif": 0x1D7E2,
                           "bold-sans-serif": 0x1D7EC, "monospace": 0x1D7F6}.items():
        out[variant].update({str(d): chr(start + d) for d in range(10)})
    greek = "\u0391\u0392\u0393\u0394\u0395\u0396\u0397\u0398\u0399\u039A\u039B\u039C\u039D\u039E\u039F\u03A0\u03A1"
    greek += "\u03F4\u03A3\u03A4\u03A5\u03A6\u03A7\u03A8\u03A9\u2207"
    greek += "\u03B1\u03B2\u03B3\u03B4\u03B5\u03B6\u03B7\u03B8\u03B9\u03BA\u03BB\u03BC\u03BD\u03BE\u03BF\u03C0\u03C1"
    greek += "\u03C2\u03C3\u03C4\u03C5\u03C6\u03C7\u03C8\u03C9\u2202\u03F5\u03D1\u03F0\u03D5\u03F1\u03D6"
    for variant, start in {"bold": 0x1D6A8, "italic": 0x1D6E2, "bold-italic": 0x1D71C}.items():
        out[variant].update({c: chr(start + i) for i, c in enumerate(greek)})
    return out


_ALPHABETS = _styled_alphabets()
_VARIANT = re.compile(r'<(mi|mn|mtext|mo) mathvariant="([a-z-]+)">([^<]*)</\1>')


def _restyle(m: re.Match) -> str:
    tag, variant, text = m.groups()
    table = _ALPHABETS.get(variant)
    if table is None:  # "normal" and the rest are left to the browser
        return m.group(0)
    chars = html.unescape(text)
    styled = "".join(table.get(c, c) for c in chars)
    if tag == "mi" and len(styled) == 1:  # a single styled letter must not be italicised again
        return f'<mi mathvariant="normal">{styled}</mi>'
    return f"<{tag}>{html.escape(styled, quote=False)}</{tag}>"


class MathError(ValueError):
    """LaTeX that could not be converted to MathML."""


def latex_to_mathml(latex: str, display: bool = False) -> tuple[str, list[str]]:
    """(HTML for the equation, LaTeX commands that were not understood).

    Display equations become ``<div class="eq">`` with the MathML and, for ``\\tag{n}``, a number at
    the right and ``id="eq-n"``. Raises :class:`MathError` when latex2mathml fails.
    """
    tags = _TAG.findall(latex)
    body = _TAG.sub("", latex).strip()
    for pattern, repl in _REWRITES:
        body = pattern.sub(repl, body)
    try:
        mathml = convert(body, display="block" if display else "inline")
    except Exception as err:  # latex2mathml raises several exception types
        raise MathError(f"{type(err).__name__}: {err}") from None
    mathml = _VARIANT.sub(_restyle, mathml)
    unknown = sorted(set(_LEFTOVER.findall(mathml)))
    if not display:
        return mathml, unknown
    label = tags[0].strip() if tags else ""
    if not label:
        return f'<div class="eq">{mathml}</div>', unknown
    anchor = re.sub(r"[^A-Za-z0-9_.-]", "-", label)
    return (f'<div class="eq" id="eq-{anchor}">{mathml}'
            f'<span class="eqno">({html.escape(label)})</span></div>'), unknown
