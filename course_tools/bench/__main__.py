"""``python -m course_tools.bench base [more suites]``: print the measured table, exit 1 if a bar is missed."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import SUITES, format_table


def _load_suites():
    import course_tools.bench as pkg
    for m in pkgutil.iter_modules(pkg.__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"course_tools.bench.{m.name}")


def main(argv=None) -> int:
    _load_suites()
    p = argparse.ArgumentParser(prog="python -m course_tools.bench")
    p.add_argument("suites", nargs="+", choices=sorted(SUITES) + ["all"])
    p.add_argument("--smoke", action="store_true", help="fewer cases (the CI setting)")
    a = p.parse_args(argv)
    names = sorted(SUITES) if "all" in a.suites else a.suites
    rows = []
    for name in names:
        rows += SUITES[name](smoke=a.smoke or None)
        print(format_table(rows), flush=True) if name == names[-1] else None
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
