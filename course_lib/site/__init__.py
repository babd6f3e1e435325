"""The course as one browsable site: executed notebooks -> HTML pages with navigation, offline.

``python -m course_lib.site [OUT]`` renders every executed lesson ``OUT/NN_*.ipynb`` (written there by
``python -m course_lib.run_course``) as ``OUT/NN_*.html`` and writes ``OUT/index.html``. Every page
has a sidebar of lessons and previous/next links. Nothing is fetched from the network to build or to
view a page: equations are converted to MathML at build time (:mod:`course_lib.site.mathml`),
figures are embedded in the page, widgets are drawn as static HTML from their saved state
(:mod:`course_lib.site.widgets`), and the only stylesheets are nbconvert's JupyterLab style (inlined)
and ``course.css``, written beside the pages.
"""
from __future__ import annotations

import copy
import html
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .mathml import MathError, latex_to_mathml
from .widgets import render_static_widgets

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
CSS = HERE / "course.css"
COURSE_TITLE = "Diffusion-based image editing, hands on"


def _exporter_class():
    from jinja2 import pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class MathMLRenderer(IPythonRenderer):
        """nbconvert's Markdown renderer, with equations written as MathML instead of left for MathJax."""

        problems: list[str]

        def _math(self, latex: str, display: bool) -> str:
            try:
                out, unknown = latex_to_mathml(latex, display=display)
            except MathError as err:
                self.problems.append(f"cannot convert ${latex}$: {err}")
                return f'<code class="eq-error">{html.escape(latex)}</code>'
            self.problems.extend(f"unknown LaTeX command {c} in ${latex}$" for c in unknown)
            return out

        def block_math(self, body: str) -> str:
            return self._math(body, display=True)

        def inline_math(self, body: str) -> str:
            return self._math(body, display=False)

        def latex_environment(self, name: str, body: str) -> str:
            return self._math(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

    class CourseHTMLExporter(HTMLExporter):
        """nbconvert's HTML exporter with the course template and build-time MathML."""

        def __init__(self, **kw):
            super().__init__(template_name="course", extra_template_basedirs=[str(TEMPLATES)], **kw)
            self.math_problems: list[str] = []

        @pass_context
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            path = context.get("resources", {}).get("metadata", {}).get("path", "")
            renderer = MathMLRenderer(escape=False, attachments=cell.get("attachments", {}),
                                      embed_images=self.embed_images, path=path,
                                      anchor_link_text=self.anchor_link_text,
                                      exclude_anchor_links=self.exclude_anchor_links, **self.lexer_options)
            renderer.problems = self.math_problems
            return MarkdownWithMath(renderer=renderer).render(source)

    return CourseHTMLExporter


@dataclass
class Lesson:
    path: Path                      # the executed notebook
    number: str                     # "00"
    title: str                      # its first heading
    page: str                       # "00_getting_started.html"
    seconds: float | None = None    # how long it ran (from its metadata, set by run_course)
    status: str = "ok"
    setting: str = ""


@dataclass
class SiteReport:
    index: Path
    pages: list[Path] = field(default_factory=list)
    math_problems: dict[str, list[str]] = field(default_factory=dict)
    widgets: dict[str, int] = field(default_factory=dict)


_HEADING = re.compile(r"^\s{0,3}#\s+(.+?)\s*#*\s*$", re.M)


def notebook_title(nb, fallback: str) -> str:
    """The text of the notebook's first level-1 heading (markdown markup removed)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = _HEADING.search(cell.source)
            if m:
                return re.sub(r"[`*_]|\$", "", m.group(1)).strip()
    return fallback


def lesson_of(path: Path) -> Lesson:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("course", {})
    number = path.stem.split("_", 1)[0]
    title = notebook_title(nb, path.stem.split("_", 1)[-1].replace("_", " "))
    title = re.sub(rf"^(Notebook\s+)?{re.escape(number)}\s*[-—:.·]?\s*", "", title) or title
    return Lesson(path=path, number=number, title=title, page=path.with_suffix(".html").name,
                  seconds=meta.get("seconds"), status=meta.get("status", "ok"), setting=meta.get("setting", ""))


def _nav(lessons: list[Lesson], i: int) -> str:
    def link(j, arrow_left):
        if not 0 <= j < len(lessons):
            return '<span class="course-nav-empty"></span>'
        les = lessons[j]
        text = f"{les.number} {html.escape(les.title)}"
        return (f'<a class="course-prev" rel="prev" href="{les.page}">&larr; {text}</a>' if arrow_left
                else f'<a class="course-next" rel="next" href="{les.page}">{text} &rarr;</a>')
    return (f'<nav class="course-nav">{link(i - 1, True)}'
            f'<a class="course-up" href="index.html">All lessons</a>{link(i + 1, False)}</nav>')


def _setting_text(setting: str) -> str:
    if setting == "ci":
        return ("Executed in the CI setting (<code>COURSE_SMOKE=1</code>: fewer steps and cases); "
                "<code>make course FULL=1</code> runs the full setting.")
    if setting == "full":
        return "Executed in the full setting."
    return ""


def build_site(out: Path, notebooks: list[Path] | None = None, title: str = COURSE_TITLE) -> SiteReport:
    """Render the executed lessons in ``out`` (or ``notebooks``) as linked pages and an index."""
    import nbformat

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(notebooks) if notebooks else sorted(out.glob("[0-9]*.ipynb"))
    lessons = [lesson_of(p) for p in paths]
    shutil.copyfile(CSS, out / "course.css")
    report = SiteReport(index=out / "index.html")
    entries = [{"number": les.number, "title": les.title, "page": les.page} for les in lessons]
    Exporter = _exporter_class()
    for i, les in enumerate(lessons):
        nb = copy.deepcopy(nbformat.read(les.path, as_version=4))
        report.widgets[les.path.name] = render_static_widgets(nb)
        banner = _setting_text(les.setting)
        if les.status != "ok":
            banner = (f'<strong class="failed">This notebook stopped with an error</strong> '
                      f"({html.escape(les.status)}); the cells after it did not run. " + banner)
        exporter = Exporter()
        resources = {"metadata": {"name": les.title, "path": str(les.path.parent)},
                     "course": {"title": title, "lessons": entries, "page": les.page,
                                "nav_html": _nav(lessons, i), "banner": banner}}
        body, _ = exporter.from_notebook_node(nb, resources=resources)
        page = out / les.page
        page.write_text(body, encoding="utf-8")
        report.pages.append(page)
        if exporter.math_problems:
            report.math_problems[les.path.name] = list(exporter.math_problems)
    report.index.write_text(index_html(lessons, title), encoding="utf-8")
    return report


def index_html(lessons: list[Lesson], title: str = COURSE_TITLE) -> str:
    rows = []
    for les in lessons:
        secs = f"{les.seconds:.0f} s" if les.seconds is not None else ""
        status = ("ok" if les.status == "ok"
                  else f'<span class="failed">{html.escape(les.status)}</span>')
        rows.append(f'<tr><td>{les.number}</td><td><a href="{les.page}">{html.escape(les.title)}</a></td>'
                    f"<td>{secs}</td><td>{status}</td></tr>")
    side = "".join(f'<li><a href="{les.page}">{les.number} {html.escape(les.title)}</a></li>' for les in lessons)
    settings = sorted({les.setting for les in lessons if les.setting})
    note = " ".join(_setting_text(s) for s in settings)
    first = (f'<p class="course-nav"><span class="course-nav-empty"></span><span></span>'
             f'<a class="course-next" rel="next" href="{lessons[0].page}">Start: {lessons[0].number} '
             f"{html.escape(lessons[0].title)} &rarr;</a></p>") if lessons else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{html.escape(title)}</title>
<link rel="stylesheet" href="course.css">
</head>
<body class="course-index">
<nav class="course-sidebar" aria-label="Lessons"><a class="course-home" href="index.html">{html.escape(title)}</a><ol>{side}</ol></nav>
<div class="course-content">
<main>
<h1>{html.escape(title)}</h1>
<p>Each lesson is a Jupyter notebook in <code>notebooks/</code>; these pages show it as it ran here:
the method's equations, the code, its printed checks and its figures. Open the notebook in JupyterLab
(<code>jupyter lab notebooks/</code>) to change it and to use its widgets. {note}</p>
<table>
<thead><tr><th></th><th>lesson</th><th>ran in</th><th>status</th></tr></thead>
<tbody>
{''.join(rows)}
</tbody>
</table>
{first}
</main>
</div>
</body>
</html>
"""


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m course_lib.site", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=Path(__file__).resolve().parents[2] / "course_output")
    a = p.parse_args(argv)
    report = build_site(a.out)
    for name, problems in report.math_problems.items():
        for msg in problems:
            print(f"{name}: {msg}")
    print(f"{len(report.pages)} lesson pages and the index: {report.index}")
    return 0

