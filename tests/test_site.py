"""The course site (`make course`): equations, widgets, numbers in the prose, and the pages as
headless Chromium shows them.

The Chromium test builds a small site from two lessons: notebook 01 executed in the CI setting
(about 11 s) and a lesson made here with what the real notebooks will have (numbered equations, an
``aligned`` block, a figure, a widget, a folded solution). It is skipped only where no ``chromium``
binary is installed (Debian's package ``chromium``; ``.ci/run`` installs it).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from course_lib import prose_numbers
from course_lib.run_course import ROOT, execute, output_noise
from course_lib.site import build_site
from course_lib.site.mathml import latex_to_mathml
from course_lib.site.widgets import render_static_widgets, widget_state

CHROMIUM = shutil.which("chromium")
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")


# --- equations ------------------------------------------------------------------------------------

def test_display_equation_gets_its_number_and_anchor():
    html, unknown = latex_to_mathml(r"x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon \tag{3}", True)
    assert unknown == []
    assert html.startswith('<div class="eq" id="eq-3"><math') and 'display="block"' in html
    assert '<span class="eqno">(3)</span>' in html and "tag" not in html
    assert "<msqrt>" in html and "<msub>" in html


def test_aligned_arg_min_and_styled_letters_render_as_mathml():
    html, unknown = latex_to_mathml(
        r"\begin{aligned} \mathbf{e}^* &= \arg\min_{\mathbf e} \mathcal{L}(\mathbf e) \\ z &\gets z - \eta \nabla_z \mathcal L \end{aligned}", True)
    assert unknown == []
    assert "<mtable" in html and "&" not in html.replace("&#x", "")   # no stray alignment marks
    assert "\\" not in html                                            # no LaTeX left as text
    assert "\U0001D41E" in html or "&#x1D41E;" in html                # bold e as a Unicode letter
    assert "mathvariant=\"bold\"" not in html and "mathvariant=\"script\"" not in html


def test_unknown_command_is_reported_not_hidden():
    _, unknown = latex_to_mathml(r"\notacommand{x} + 1")
    assert unknown == ["\\notacommand"]


# --- widgets --------------------------------------------------------------------------------------

PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def _widget_nb():
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_dd", "IPY_MODEL_out", "IPY_MODEL_img"]}},
        "dd": {"model_name": "DropdownModel", "state": {"description": "token", "_options_labels": ["a", "star"], "index": 1}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "data": {"image/png": PNG_1PX, "text/plain": "<Figure>"}, "metadata": {}}]}},
        "img": {"model_name": "ImageModel", "state": {"format": "png"},
                "buffers": [{"path": ["value"], "encoding": "base64", "data": PNG_1PX}]},
    }
    nb = new_notebook(cells=[new_code_cell("w", outputs=[nbformat.v4.new_output(
        "display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "box"},
                              "text/plain": "VBox(...)"})])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    return nb


def test_widget_is_drawn_from_its_saved_state():
    nb = _widget_nb()
    assert set(widget_state(nb)) == {"box", "dd", "out", "img"}
    assert render_static_widgets(nb) == 1
    html = nb.cells[0].outputs[0]["data"]["text/html"]
    assert html.count("<img ") == 2                      # the Output's figure and the Image widget
    assert "<option>star</option>" in html               # the dropdown's current value
    assert "widgets" not in nb.metadata                  # so no template loads the widget manager


# --- numbers in prose -----------------------------------------------------------------------------

def _nb(markdown: str, code: str = "", printed: str = ""):
    cell = new_code_cell(code, outputs=[nbformat.v4.new_output("stream", name="stdout", text=printed)] if printed else [])
    return new_notebook(cells=[new_markdown_cell(markdown), cell])


def test_prose_numbers_flags_only_numbers_no_output_shows():
    nb = _nb("The edit works in 83% of scenes, PSNR 39.4 dB, 2.5x faster, in 25 s; 64x64 pixels; "
             "`cfg.pick(50, 20)` and $x_{10}$ are not prose.",
             printed="success 0.833, PSNR 39.43 dB\n")
    flagged = [f.text for f in prose_numbers.flag_numbers(nb)]
    assert flagged == ["2.5x", "25 s"]                   # 83% = 0.833, 39.4 = 39.43 rounded


def test_prose_numbers_reads_code_and_skips_the_cost_paragraph():
    nb = _nb("**What it costs**: about 30 s on a CPU.\n\nWith 20 s of budget and 12% noise ...",
             code="budget_s = 20")
    assert [f.text for f in prose_numbers.flag_numbers(nb)] == ["12%"]


def test_prose_numbers_says_when_a_notebook_has_no_outputs(tmp_path):
    path = tmp_path / "00_x.ipynb"
    nbformat.write(_nb("50% of it"), path)
    assert "not executed" in prose_numbers.report([path])


# --- the site in headless Chromium ----------------------------------------------------------------

FIXTURE_MARKDOWN = textwrap.dedent(r"""
    # 99 · A lesson with everything a page shows

    The forward process in closed form, with $\bar\alpha_t = \prod_{s \le t} \alpha_s$:

    $$ x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, \qquad \epsilon \sim \mathcal{N}(0, I) \tag{1} $$

    and one DDIM step (eq. (1) solved for $x_0$):

    $$
    \begin{aligned}
    \hat x_0 &= \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta(x_t, t)}{\sqrt{\bar\alpha_t}} \\
    x_{t-1} &= \sqrt{\bar\alpha_{t-1}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t-1}}\,\epsilon_\theta(x_t, t)
    \end{aligned} \tag{2}
    $$

    A dollar in code is not math: `price = "$5"`. The round trip keeps 40.0 dB (printed below).
""")


def _fixture_lesson() -> nbformat.NotebookNode:
    code_fig = ("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
                "fig, ax = plt.subplots(figsize=(2, 2)); ax.imshow([[0, 1], [1, 0]]); plt.show()\n"
                "print('round trip 40.0 dB')")
    code_widget = ("import ipywidgets as w\nimport matplotlib.pyplot as plt\nout = w.Output()\n"
                   "with out:\n    fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1]); plt.show()\n"
                   "w.VBox([w.Dropdown(options=['a', 'star'], value='star', description='token'), out])")
    solution = new_code_cell("answer = 6 * 7\nassert answer == 42")
    solution.metadata["jupyter"] = {"source_hidden": True}
    return new_notebook(cells=[new_markdown_cell(FIXTURE_MARKDOWN), new_code_cell(code_fig),
                               new_code_cell(code_widget),
                               new_markdown_cell("## Exercise\n\nMultiply six by seven."), solution],
                        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A course site built from notebook 01 (CI setting) and the fixture lesson, as `make course` does."""
    src = tmp_path_factory.mktemp("lessons")
    out = tmp_path_factory.mktemp("course_output")
    nbformat.write(_fixture_lesson(), src / "99_site_fixture.ipynb")
    lessons = [ROOT / "notebooks" / "01_attention_anatomy.ipynb", src / "99_site_fixture.ipynb"]
    for path in lessons:
        seconds, status = execute(path, out, smoke=True, timeout=600)
        assert status == "ok", f"{path.name}: {status}"
    report = build_site(out)
    assert report.math_problems == {}
    return out, report


def test_executed_lesson_shows_no_library_or_kernel_messages(site):
    out, _ = site
    nb = nbformat.read(out / "01_attention_anatomy.ipynb", as_version=4)
    assert output_noise(nb) == []
    text = prose_numbers.shown_text(nb)
    for word in ("Warning", "warn(", "Traceback", "it/s]"):
        assert word not in text, word


def test_loading_the_models_prints_nothing():
    """What every notebook does first: import course_lib, load tiny-sd and tiny-clip; nothing on stderr."""
    code = "import course_lib; course_lib.load_pipeline(); course_lib.load_clip()"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "notebooks", capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "" and r.stdout.strip() == ""


def test_the_library_message_filter_is_narrow():
    """Only transformers' torchvision-fallback message is dropped; its other messages pass."""
    import logging

    logger = logging.getLogger("transformers.utils.import_utils")
    def record(msg):
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 0, msg, None, None)
    assert not logger.filter(record("`CLIPImageProcessor` requires torchvision (not installed); falling back to `CLIPImageProcessorPil`"))
    assert logger.filter(record("`CLIPImageProcessor` is deprecated"))
    assert logger.filter(record("torchvision is required for video processing"))


def test_numbers_in_the_prose_of_the_executed_lessons(site):
    """Strict for the lessons built here (01 and the fixture); `make course` reports every lesson."""
    out, _ = site
    for path in sorted(out.glob("[0-9]*.ipynb")):
        flags = prose_numbers.flag_numbers(nbformat.read(path, as_version=4))
        assert flags == [], f"{path.name}: " + "; ".join(map(str, flags))


def _chromium(url: str, netlog: Path) -> str:
    """The DOM of a page as headless Chromium builds it, with a log of the network requests."""
    profile = netlog.with_suffix(".profile")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--log-net-log={netlog}", "--virtual-time-budget=2000",
           "--dump-dom", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _page_requests(netlog: Path) -> list[str]:
    """http(s) URLs that the page asked for (Chromium's own requests have no origin)."""
    log = json.loads(netlog.read_text())
    kinds = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    return [e["params"]["url"] for e in log["events"]
            if kinds.get(e["type"]) == "URL_REQUEST_START_JOB"
            and e.get("params", {}).get("initiator") != "not an origin"
            and e["params"].get("url", "").startswith(("http:", "https:"))]


def _expected_images(nb) -> int:
    """Image outputs of the executed notebook, counting those inside widgets' saved outputs."""
    models = widget_state(nb)
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if any(m in data for m in IMAGE_MIMES):
                count += 1
            view = data.get("application/vnd.jupyter.widget-view+json")
            if view:
                todo = [view["model_id"]]
                while todo:
                    m = models.get(todo.pop(), {})
                    st = m.get("state", {})
                    todo += [c[len("IPY_MODEL_"):] for c in st.get("children", [])]
                    count += sum(any(k in o.get("data", {}) for k in IMAGE_MIMES) for o in st.get("outputs", []))
                    count += m.get("model_name") == "ImageModel"
    return count


@pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` binary (Debian package chromium) to view the pages in")
def test_site_pages_in_headless_chromium(site, tmp_path):
    from bs4 import BeautifulSoup

    out, report = site
    lessons = sorted(out.glob("[0-9]*.ipynb"))
    pages = ["index.html"] + [p.with_suffix(".html").name for p in lessons]
    assert [p.name for p in report.pages] == pages[1:]

    # the network check can see a fetch: a page with a script from a CDN is caught
    control = tmp_path / "control.html"
    control.write_text('<html><body><script src="https://cdn.invalid/x.js"></script></body></html>')
    _chromium(control.as_uri(), tmp_path / "control.json")
    assert _page_requests(tmp_path / "control.json") == ["https://cdn.invalid/x.js"]

    for k, page in enumerate(pages):
        netlog = tmp_path / f"net{k}.json"
        dom = BeautifulSoup(_chromium((out / page).as_uri(), netlog), "html.parser")
        assert _page_requests(netlog) == [], f"{page} fetched from the network"
        assert not dom.find_all("script", src=True) and not dom.find_all("link", href=re.compile("^(https?:)?//"))

        # navigation: every link resolves to a page of the site (and its anchor to an element)
        links = [a["href"] for a in dom.find_all("a", href=True) if not a["href"].startswith(("#", "http"))]
        for href in links:
            target, _, anchor = href.partition("#")
            assert (out / target).is_file(), f"{page}: broken link {href}"
            if anchor:
                assert f'id="{anchor}"' in (out / target).read_text(), f"{page}: no anchor {href}"
        sidebar = [a["href"] for a in dom.select(".course-sidebar li a")]
        assert sidebar == pages[1:], f"{page}: sidebar {sidebar}"
        if page == "index.html":
            continue

        i = pages.index(page) - 1
        prev_ = {a["href"] for a in dom.select("a.course-prev")}
        next_ = {a["href"] for a in dom.select("a.course-next")}
        assert prev_ == ({pages[i]} if i > 0 else set()), f"{page}: previous {prev_}"
        assert next_ == ({pages[i + 2]} if i + 2 < len(pages) else set()), f"{page}: next {next_}"

        # figures: one <img> per image output, each embedded in the page
        nb = nbformat.read(lessons[i], as_version=4)
        imgs = dom.select("main img")
        assert len(imgs) == _expected_images(nb) > 0, f"{page}: {len(imgs)} images"
        assert all(img["src"].startswith("data:image/") for img in imgs)

        # no error text: no traceback, no error or stderr output
        main = dom.find("main")
        text = main.get_text(" ")
        assert "Traceback" not in text
        assert not main.select('[data-mime-type="application/vnd.jupyter.stderr"]')
        assert not main.select(".jp-OutputArea-output.jp-mod-error, .cw-error")

        # equations: MathML, and no LaTeX left in the text of the markdown
        markdown = " ".join(c.get_text(" ") for c in main.select(".jp-RenderedMarkdown"))
        assert "$$" not in markdown and not re.search(r"(?<![`\w])\$[^$\s][^$]*\$", markdown.replace('"$5"', ""))
        for m in main.find_all("math"):
            assert not re.search(r"\\[A-Za-z]+", m.get_text()), m.get_text()
        if lessons[i].name == "99_site_fixture.ipynb":
            maths = main.find_all("math")
            assert len(maths) == 4                                   # 2 inline + 2 display
            assert [e["id"] for e in main.select(".eq[id]")] == ["eq-1", "eq-2"]
            assert main.find("math", attrs={"display": "block"}).find("mtable") is None
            assert main.select("details.course-folded")               # the solution is folded
            assert main.select(".course-widget option")[0].get_text() == "star"
        else:
            assert main.select(".course-widget")                     # the attention explorer
