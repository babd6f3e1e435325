"""Numbers in a notebook's prose that none of its outputs or code shows.

The course's rule (``COURSE_STYLE.md``): a number the text relies on is printed or asserted by the
code above it, so it cannot go stale. This checker reads an *executed* notebook and flags every
number with a unit (``%``, ``dB``, ``s``, ``ms``, ``min``, ``x``/``×``) in its markdown that appears
in none of its outputs and none of its code cells. A prose number matches a number shown by the
notebook when that number, rounded to the prose's decimals, is the same (``83%`` also matches a
printed fraction ``0.83``).

Not checked: code spans, equations, and the paragraph that starts with *What it costs*: its run
times are measured by ``make course``, which prints each notebook's time, not by a cell.

``python -m course_lib.prose_numbers course_output/*.ipynb`` prints what it flags (exit 0: a report).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_PROSE = re.compile(
    rf"(?<![\w.,])(?P<num>{_NUM})(?P<unit>\s?%|\s?dB\b|\s?(?:ms|s|min)\b|\s?(?:x|×)(?![\w])(?!\s*\d))")
_SHOWN = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)")
_CODE_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
_MATH = re.compile(r"\$\$.*?\$\$|(?<![\\$])\$(?!\$).+?(?<![\\$])\$", re.S)
_TAGS = re.compile(r"<[^>]+>")
COST_PARAGRAPH = re.compile(r"^\s*(\*\*|__)?what it costs\s*(\*\*|__)?\s*(:|$)", re.I | re.M)


@dataclass(frozen=True)
class Flag:
    cell: int       # index of the markdown cell
    text: str       # the number and its unit as written, e.g. "83%"
    context: str    # the words around it

    def __str__(self):
        return f"cell {self.cell}: {self.text!r} in \u201c{self.context}\u201d"


def _source(cell) -> str:
    s = cell.get("source", "")
    return s if isinstance(s, str) else "".join(s)


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def shown_text(nb) -> str:
    """Everything the notebook's code cells show or say: sources and text outputs."""
    parts = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        parts.append(_source(cell))
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(_text(out.get("text", "")))
            elif out.get("output_type") == "error":
                parts.append(f"{out.get('ename', '')}: {out.get('evalue', '')}")
            else:
                data = out.get("data", {})
                for mime in ("text/plain", "text/markdown", "text/latex"):
                    if mime in data:
                        parts.append(_text(data[mime]))
                if "text/html" in data:
                    parts.append(_TAGS.sub(" ", _text(data["text/html"])))
    return "\n".join(parts)


def shown_numbers(nb) -> list[float]:
    out = []
    for m in _SHOWN.finditer(shown_text(nb)):
        try:
            out.append(float(m.group(0).replace(",", "")))
        except ValueError:
            pass
    return out


def _decimals(num: str) -> int:
    return len(num.split(".")[1]) if "." in num else 0


def matches(num: str, unit: str, shown: list[float]) -> bool:
    """Whether the prose number ``num`` (with ``unit``) is one of the ``shown`` numbers, rounded."""
    value, d = float(num.replace(",", "")), _decimals(num)
    tol = 0.5 * 10 ** -d + 1e-9
    candidates = [abs(q) for q in shown]
    if unit.strip() == "%":
        candidates += [abs(q) * 100 for q in shown if abs(q) <= 1]
    return any(abs(q - value) <= tol for q in candidates)


def prose(cell_source: str) -> list[str]:
    """The paragraphs of a markdown cell that are checked (code, equations and tags taken out)."""
    text = _CODE_FENCE.sub(" ", cell_source)
    text = _CODE_SPAN.sub(" ", text)
    text = _MATH.sub(" ", text)
    text = _TAGS.sub(" ", text)
    return [p for p in re.split(r"\n\s*\n", text) if not COST_PARAGRAPH.match(p)]


def flag_numbers(nb) -> list[Flag]:
    """Every number with a unit in the notebook's markdown that its code and outputs do not show."""
    shown = shown_numbers(nb)
    flags = []
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "markdown":
            continue
        for para in prose(_source(cell)):
            for m in _PROSE.finditer(para):
                if not matches(m.group("num"), m.group("unit"), shown):
                    a, b = max(0, m.start() - 40), min(len(para), m.end() + 25)
                    context = " ".join(para[a:b].split())
                    flags.append(Flag(i, m.group(0).strip(), ("…" if a else "") + context + ("…" if b < len(para) else "")))
    return flags


def has_outputs(nb) -> bool:
    return any(cell.get("outputs") for cell in nb.get("cells", []) if cell.get("cell_type") == "code")


def report(paths: list[Path]) -> str:
    import nbformat

    lines = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if not has_outputs(nb):
            lines.append(f"{path.name}: not executed (no outputs); run it first (make course)")
            continue
        flags = flag_numbers(nb)
        lines.append(f"{path.name}: {len(flags)} number(s) in the prose that no output or code shows")
        lines.extend(f"  {f}" for f in flags)
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m course_lib.prose_numbers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="+", type=Path, help="executed notebooks (e.g. course_output/*.ipynb)")
    a = p.parse_args(argv)
    missing = [str(n) for n in a.notebooks if not n.is_file()]
    if missing:
        p.error(f"no such notebook: {', '.join(missing)}")
    print(report(a.notebooks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
