"""Widgets as static HTML: the state that the executed notebook saved, drawn without JavaScript.

nbconvert leaves a widget as a placeholder that only the widget manager script (from a CDN) can fill,
so offline it is blank. Here each widget view in an output is replaced by HTML drawn from the saved
widget state: boxes lay out their children, an ``Output`` widget shows its outputs (figures
included), an ``Image`` its picture, controls their current value (disabled). What it cannot draw
it names. The page says the widget is interactive in JupyterLab.
"""
from __future__ import annotations

import html

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def widget_state(nb) -> dict:
    """model id -> {"model_name", "state"} from the notebook's saved widget state (binary buffers
    put back in place as base64 strings)."""
    saved = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    models = {}
    for mid, model in saved.items():
        state = dict(model.get("state", {}))
        for buf in model.get("buffers", []):
            path = buf.get("path", [])
            if len(path) == 1 and buf.get("encoding") == "base64":
                state[path[0]] = ("base64", buf.get("data", ""))
        models[mid] = {"model_name": model.get("model_name", ""), "state": state}
    return models


def _ref(value) -> str | None:
    if isinstance(value, str) and value.startswith("IPY_MODEL_"):
        return value[len("IPY_MODEL_"):]
    return None


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _label(state) -> str:
    d = state.get("description") or ""
    return f'<label class="cw-label">{_esc(d)}</label>' if d else ""


def _output_html(output: dict) -> str:
    """One output of an ``Output`` widget."""
    kind = output.get("output_type")
    if kind == "stream":
        return f'<pre class="cw-stream">{_esc(output.get("text", ""))}</pre>'
    if kind == "error":
        return f'<pre class="cw-error">{_esc(output.get("ename", ""))}: {_esc(output.get("evalue", ""))}</pre>'
    data = output.get("data", {})
    for mime in ("image/png", "image/jpeg", "image/gif"):
        if mime in data:
            src = data[mime] if isinstance(data[mime], str) else "".join(data[mime])
            return f'<img class="cw-image" src="data:{mime};base64,{src.strip()}" alt="figure">'
    if "image/svg+xml" in data:
        svg = data["image/svg+xml"]
        return svg if isinstance(svg, str) else "".join(svg)
    if "text/html" in data:
        h = data["text/html"]
        return h if isinstance(h, str) else "".join(h)
    if "text/plain" in data:
        t = data["text/plain"]
        return f'<pre class="cw-stream">{_esc(t if isinstance(t, str) else "".join(t))}</pre>'
    return ""


def render_widget(model_id: str, models: dict, depth: int = 0) -> str:
    """HTML for one widget and its children, from the saved state."""
    model = models.get(model_id)
    if model is None or depth > 32:
        return '<div class="cw-missing">(a widget whose state was not saved)</div>'
    name, state = model["model_name"], model["state"]
    kind = name[:-5] if name.endswith("Model") else name
    if state.get("layout"):
        layout = models.get(_ref(state["layout"]) or "", {}).get("state", {})
        if layout.get("display") == "none" or layout.get("visibility") == "hidden":
            return ""
    children = [render_widget(_ref(c), models, depth + 1) for c in state.get("children", []) if _ref(c)]
    if kind in ("HBox", "GridBox"):
        return f'<div class="cw-hbox">{"".join(children)}</div>'
    if kind in ("VBox", "Box"):
        return f'<div class="cw-vbox">{"".join(children)}</div>'
    if kind in ("Tab", "Accordion", "Stack"):
        titles = state.get("titles") or state.get("_titles") or []
        if isinstance(titles, dict):
            titles = [titles.get(str(i), "") for i in range(len(children))]
        parts = [f'<div class="cw-section"><div class="cw-title">{_esc(titles[i] if i < len(titles) else "")}</div>{c}</div>'
                 for i, c in enumerate(children)]
        return f'<div class="cw-vbox">{"".join(parts)}</div>'
    if kind == "Output":
        return f'<div class="cw-output">{"".join(_output_html(o) for o in state.get("outputs", []))}</div>'
    if kind == "Image":
        value = state.get("value")
        fmt = state.get("format", "png")
        if isinstance(value, tuple) and value[0] == "base64":
            mime = "image/svg+xml" if fmt == "svg+xml" else f"image/{fmt}"
            width = f' width="{_esc(state["width"])}"' if state.get("width") else ""
            return f'<img class="cw-image" src="data:{mime};base64,{value[1]}"{width} alt="image">'
        return '<div class="cw-missing">(an image widget)</div>'
    if kind in ("HTML", "HTMLMath"):
        return f'<div class="cw-html">{_label(state)}{state.get("value", "")}</div>'
    if kind == "Label":
        return f'<span class="cw-text">{_esc(state.get("value", ""))}</span>'
    if kind in ("IntSlider", "FloatSlider", "FloatLogSlider", "IntRangeSlider", "FloatRangeSlider",
                "SelectionSlider", "SelectionRangeSlider"):
        value = state.get("value")
        if "_options_labels" in state and state.get("index") is not None:
            idx = state["index"]
            labels = state["_options_labels"]
            value = ([labels[i] for i in idx] if isinstance(idx, list) else labels[idx])
        lo, hi = state.get("min", 0), state.get("max", 100)
        shown = "–".join(map(str, value)) if isinstance(value, list) else value
        rng = (f'<input type="range" disabled min="{_esc(lo)}" max="{_esc(hi)}" step="any" value="{_esc(value)}">'
               if isinstance(value, (int, float)) else "")
        return f'<span class="cw-control">{_label(state)}{rng}<span class="cw-value">{_esc(shown)}</span></span>'
    if kind in ("Dropdown", "Select", "RadioButtons", "ToggleButtons", "SelectMultiple"):
        labels = state.get("_options_labels", [])
        idx = state.get("index")
        idx = idx if isinstance(idx, list) else ([] if idx is None else [idx])
        chosen = ", ".join(str(labels[i]) for i in idx if 0 <= i < len(labels))
        return (f'<span class="cw-control">{_label(state)}'
                f'<select disabled><option>{_esc(chosen)}</option></select></span>')
    if kind in ("Button", "ToggleButton"):
        return f'<button class="cw-button" disabled>{_esc(state.get("description", ""))}</button>'
    if kind in ("Checkbox", "Valid"):
        checked = " checked" if state.get("value") else ""
        return f'<span class="cw-control"><input type="checkbox" disabled{checked}>{_esc(state.get("description", ""))}</span>'
    if kind in ("Text", "Textarea", "IntText", "FloatText", "BoundedIntText", "BoundedFloatText", "Password"):
        return f'<span class="cw-control">{_label(state)}<input type="text" disabled value="{_esc(state.get("value", ""))}"></span>'
    if kind in ("IntProgress", "FloatProgress"):
        return (f'<span class="cw-control">{_label(state)}<progress max="{_esc(state.get("max", 100))}" '
                f'value="{_esc(state.get("value", 0))}"></progress></span>')
    return f'<span class="cw-missing">({_esc(kind)} widget)</span>'


def render_static_widgets(nb) -> int:
    """Replace every widget view in the notebook's outputs by static HTML; return how many.

    The saved widget state is removed from the notebook's metadata afterwards, so no template
    emits the widget manager's script for it.
    """
    models = widget_state(nb)
    count = 0
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            view = data.get(WIDGET_VIEW)
            if not view:
                continue
            body = render_widget(view.get("model_id", ""), models)
            data.pop(WIDGET_VIEW)
            data.pop("text/plain", None)
            data["text/html"] = (f'<div class="course-widget">{body}<div class="cw-note">'
                                 "Interactive in JupyterLab; shown here as it was when the notebook ran."
                                 "</div></div>")
            count += 1
    nb.get("metadata", {}).pop("widgets", None)
    return count
