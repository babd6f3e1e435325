"""Run every course notebook and build the course site from the executed notebooks.

``python -m course_lib.run_course [--out course_output] [--full] [NOTEBOOK ...]``

By default the notebooks run in the CI setting (``COURSE_SMOKE=1``: fewer steps and cases, as CI runs
them); ``--full`` runs the full setting a learner gets in JupyterLab. Each notebook is executed in a
fresh kernel and written, executed, to ``OUT/``; then ``OUT/index.html`` and one page per lesson are
built (:mod:`course_lib.site`: navigation, equations as MathML, figures, widgets as their saved
state, no network). Notebooks whose name starts with ``_`` are not part of the course and are
skipped. Prints each notebook as it runs and the time it took; at the end, the numbers in the
prose that no output shows (:mod:`course_lib.prose_numbers`, also written to
``OUT/prose_numbers.txt``). Exits non-zero if a notebook failed (its partial output is still
written and its page says where it stopped).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def course_notebooks(folder: Path = ROOT / "notebooks") -> list[Path]:
    return sorted(p for p in folder.glob("[0-9]*.ipynb"))


def read_notebook(path: Path):
    """The notebook, with an id added to any cell that has none (nbformat 4.5 wants one per cell;
    a cell without one would make nbformat warn on the console of every run)."""
    import warnings

    import nbformat
    from nbformat.warnings import MissingIDFieldWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingIDFieldWarning)
        nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "id" not in cell:
            cell["id"] = nbformat.v4.new_markdown_cell().id
    return nb


def execute(path: Path, out: Path, smoke: bool, timeout: int = 3600) -> tuple[float, str]:
    """Execute one notebook in a fresh kernel (its folder as working directory) and write the
    executed copy to ``out`` with ``metadata.course = {seconds, status, setting}``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    nb = read_notebook(path)
    env_before = {k: os.environ.get(k) for k in ("COURSE_SMOKE", "PYTHONPATH")}
    # the kernel inherits the environment: the setting, and this checkout's course_lib first on the
    # path (another clone may be the one installed with `pip install -e`)
    os.environ["COURSE_SMOKE"] = "1" if smoke else "0"
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env_before["PYTHONPATH"]] if env_before["PYTHONPATH"] else []))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    status = "ok"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       # the kernel's own log ("running over TCP without encryption") is not the course's
                       extra_arguments=["--IPKernelApp.log_level=ERROR"],
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except (CellExecutionError, DeadKernelError, TimeoutError) as err:
        lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
        status = "FAILED: " + (lines[-1][:160] if lines else type(err).__name__)
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    dt = time.time() - t0
    nb.metadata["course"] = {"seconds": round(dt, 1), "status": status, "setting": "ci" if smoke else "full"}
    nbformat.write(nb, out / path.name)
    return dt, status


def output_noise(nb) -> list[str]:
    """What a learner should not see in an executed notebook: text on stderr (library warnings,
    kernel messages) and tqdm progress bars left in the page as widgets. One line per output."""
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                text = out.get("text", "")
                text = text if isinstance(text, str) else "".join(text)
                found.append(f"cell {i}: stderr: {' '.join(text.split())[:200]}")
            data = out.get("data", {})
            plain = data.get("text/plain", "")
            plain = plain if isinstance(plain, str) else "".join(plain)
            if "application/vnd.jupyter.widget-view+json" in data and _TQDM.search(plain):
                found.append(f"cell {i}: a progress bar: {plain[:100]}")
    return found


_TQDM = re.compile(r"\|\s*\d+/\d+ \[")


def run(paths: list[Path], out: Path, smoke: bool = True, timeout: int = 3600) -> int:
    from . import prose_numbers
    from .site import build_site

    out.mkdir(parents=True, exist_ok=True)
    setting = "CI setting (COURSE_SMOKE=1)" if smoke else "full setting"
    print(f"running {len(paths)} notebook(s) in the {setting}; executed copies and pages go to {out}/",
          flush=True)
    failed, total = 0, time.time()
    for k, path in enumerate(paths, 1):
        print(f"[{k}/{len(paths)}] {path.name:36s} running...", end="", flush=True)
        dt, status = execute(path, out, smoke, timeout)
        failed += status != "ok"
        print(f" {dt:6.0f} s  {status}", flush=True)
    print(f"all notebooks: {time.time() - total:.0f} s", flush=True)

    report = build_site(out)
    for name, problems in report.math_problems.items():
        for msg in problems:
            print(f"equation problem in {name}: {msg}")
    executed = sorted(out.glob("[0-9]*.ipynb"))
    import nbformat
    noisy = {p.name: output_noise(nbformat.read(p, as_version=4)) for p in executed}
    noisy = {k: v for k, v in noisy.items() if v}
    if noisy:
        print("\nlibrary or kernel messages in the outputs (a learner should not see them):")
        for name, lines in noisy.items():
            print(f"{name}:")
            print("\n".join(f"  {ln}" for ln in lines))
    text = prose_numbers.report(executed)
    (out / "prose_numbers.txt").write_text(text + "\n")
    print("\nnumbers in the prose that no output or code of the notebook shows:")
    print(text)
    print(f"\nthe course: {out / 'index.html'} ({len(report.pages)} lessons)")
    return 1 if failed else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m course_lib.run_course", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of the course")
    p.add_argument("--out", type=Path, default=ROOT / "course_output")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="the full setting (about an hour or more on 2 CPU cores)")
    g.add_argument("--smoke", action="store_true", help="the CI setting (the default)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds one cell may take")
    a = p.parse_args(argv)
    if not a.notebooks:  # the whole course: drop pages of lessons that no longer exist
        names = {p.stem for p in course_notebooks()}
        for old in [*a.out.glob("[0-9]*.ipynb"), *a.out.glob("[0-9]*.html")]:
            if old.stem not in names:
                old.unlink()
    return run([p.resolve() for p in a.notebooks] or course_notebooks(), a.out, smoke=not a.full,
               timeout=a.timeout)


if __name__ == "__main__":
    sys.exit(main())
