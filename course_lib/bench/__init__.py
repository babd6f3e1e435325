"""Measured quality of every lesson: ``python -m course_lib.bench <suite> [<suite> ...]``.

Each suite is a function that returns :class:`Row` objects; a row has a value, a bar and the
direction in which the bar is met. The command prints one table and exits non-zero when any row
misses its bar. Later lessons add suites with :func:`suite`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

SUITES: dict[str, Callable[..., list["Row"]]] = {}


@dataclass
class Row:
    suite: str
    name: str
    value: float
    unit: str = ""
    bar: float | None = None
    higher_is_better: bool = True
    detail: str = ""

    @property
    def passed(self) -> bool:
        if self.bar is None:
            return True
        if math.isnan(self.value):
            return False
        return self.value >= self.bar if self.higher_is_better else self.value <= self.bar

    def format_bar(self) -> str:
        if self.bar is None:
            return "(reported)"
        return f"{'>=' if self.higher_is_better else '<='} {self.bar:g}{self.unit}"


def bench_config(smoke: bool | None = None):
    """The course config for a suite run; ``smoke`` (the ``--smoke`` flag) overrides COURSE_SMOKE, so
    that ``cfg.pick`` and ``cfg.smoke`` agree on one setting throughout the suite."""
    from dataclasses import replace

    from ..config import get_config
    cfg = get_config()
    return cfg if smoke is None else replace(cfg, smoke=bool(smoke))


def suite(name: str):
    def deco(fn):
        SUITES[name] = fn
        return fn
    return deco


def format_table(rows: list[Row]) -> str:
    head = ("suite", "measure", "value", "bar", "ok", "detail")
    body = [(r.suite, r.name, f"{r.value:.4g}{r.unit}", r.format_bar(), "yes" if r.passed else "NO", r.detail)
            for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda cols: " | ".join(c.ljust(w) for c, w in zip(cols, widths))
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, body)])
