"""Run every course notebook and write the executed notebooks and HTML pages (with their figures).

``python -m course_lib.run_course [--out course_output] [--smoke] [NOTEBOOK ...]``

Notebooks whose name starts with ``_`` are not part of the course and are skipped. Prints a table of
the time each notebook took; exits non-zero if one failed (its partial output is still written).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def course_notebooks(folder: Path = ROOT / "notebooks") -> list[Path]:
    return sorted(p for p in folder.glob("[0-9]*.ipynb"))


def run(paths: list[Path], out: Path, timeout: int = 1800) -> int:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbconvert import HTMLExporter

    out.mkdir(parents=True, exist_ok=True)
    failed, rows = 0, []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        t0 = time.time()
        status = "ok"
        try:
            NotebookClient(nb, timeout=timeout, kernel_name="python3",
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        except CellExecutionError as err:
            status = "FAILED: " + str(err).strip().splitlines()[-1][:120]
            failed += 1
        dt = time.time() - t0
        nbformat.write(nb, out / path.name)
        html, _ = HTMLExporter().from_notebook_node(nb)
        (out / path.with_suffix(".html").name).write_text(html)
        rows.append((path.name, f"{dt:6.0f} s", status))
        print(f"{path.name:40s} {dt:6.0f} s  {status}", flush=True)
    print(f"\nexecuted notebooks and HTML pages: {out}/ (open {out}/index.html)")
    index = "".join(f'<li><a href="{Path(n).with_suffix(".html").name}">{n}</a> — {t.strip()} — {s}</li>'
                    for n, t, s in rows)
    (out / "index.html").write_text(f"<h1>Diffusion image editing course</h1><ul>{index}</ul>")
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m course_lib.run_course", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--out", type=Path, default=ROOT / "course_output")
    p.add_argument("--smoke", action="store_true", help="the CI setting (fewer steps)")
    a = p.parse_args(argv)
    if a.smoke:
        os.environ["COURSE_SMOKE"] = "1"
    return run(a.notebooks or course_notebooks(), a.out)


if __name__ == "__main__":
    sys.exit(main())
