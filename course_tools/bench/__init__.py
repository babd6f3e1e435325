"""Measured quality of every lesson: ``python -m course_tools.bench <suite> [<suite> ...]``.

Each suite is a function that returns :class:`Row` objects; a row has a value, a bar and the
direction in which the bar is met. The command prints one table and exits non-zero when any row
misses its bar. Later lessons add suites with :func:`suite`.
"""
from __future__ import annotations

from typing import Callable

from course_lib.evaluate import Row, format_table  # noqa: F401 (the suites' rows and table)

SUITES: dict[str, Callable[..., list["Row"]]] = {}



def bench_config(smoke: bool | None = None):
    """The course config for a suite run; ``smoke`` (the ``--smoke`` flag) overrides COURSE_SMOKE, so
    that ``cfg.pick`` and ``cfg.smoke`` agree on one setting throughout the suite."""
    from dataclasses import replace

    from course_lib.config import get_config
    cfg = get_config()
    return cfg if smoke is None else replace(cfg, smoke=bool(smoke))


def suite(name: str):
    def deco(fn):
        SUITES[name] = fn
        return fn
    return deco


