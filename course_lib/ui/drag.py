"""A point-picking widget for DragDiffusion: click handle and target points, paint or choose the
editable region, run the drag, see before and after with arrows.

:class:`DragPicker` holds the state and its callbacks are plain functions (``click(x, y)``,
``set_mode``, ``choose_region``, ``undo``, ``clear``, ``run``), so tests drive it with synthetic
events. :meth:`DragPicker.widget` wires them to ipywidgets only (no extension beyond what
JupyterLab ships with): the image is shown as a grid of small buttons coloured like its pixels, and
a click on a cell is a click at that cell's centre.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..metrics import as_array

MODES = ("points", "paint", "erase")
REGIONS = ("whole image", "painted", "box around the points")


class DragPicker:
    """State of one drag: alternating handle/target clicks, an editable-region mask, the result.

    ``run_fn(image, handles, targets, mask)`` does the drag (default: :func:`drag_edit` with
    ``pipe``) and returns an object with ``.image`` (or an image).
    """

    def __init__(self, image, pipe=None, run_fn: Callable | None = None, brush: int = 3, **drag_kwargs):
        self.image = image
        self.side = as_array(image).shape[0]
        self.pipe, self.brush, self.drag_kwargs = pipe, brush, drag_kwargs
        self.run_fn = run_fn
        self.mode = "points"
        self.region = "whole image"
        self.handles: list[tuple[float, float]] = []
        self.targets: list[tuple[float, float]] = []
        self.painted = np.zeros((self.side, self.side), bool)
        self.result = None
        self.message = "click a handle point"

    # -- callbacks
    def click(self, x: float, y: float) -> str:
        """A click at pixel (x, y): a handle, then its target (points mode), or paint / erase."""
        if not (0 <= x <= self.side - 1 and 0 <= y <= self.side - 1):
            raise ValueError(f"click ({x}, {y}) is outside the {self.side}x{self.side} image")
        if self.mode == "points":
            if len(self.handles) == len(self.targets):
                self.handles.append((float(x), float(y)))
                self.message = f"handle {len(self.handles)} at ({x:.0f}, {y:.0f}); now click its target"
            else:
                self.targets.append((float(x), float(y)))
                self.message = f"target {len(self.targets)} at ({x:.0f}, {y:.0f}); click another handle or run"
        else:
            yy, xx = np.mgrid[:self.side, :self.side]
            disk = (xx - x) ** 2 + (yy - y) ** 2 <= self.brush ** 2
            self.painted[disk] = self.mode == "paint"
            self.region = "painted"
            self.message = f"{self.mode}ed at ({x:.0f}, {y:.0f}); region: {int(self.painted.sum())} pixels"
        self.result = None
        return self.message

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode

    def choose_region(self, region: str) -> None:
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
        self.region = region

    def undo(self) -> None:
        """Remove the last point (a target, or a handle still waiting for its target)."""
        if len(self.targets) == len(self.handles) and self.targets:
            self.targets.pop()
        elif self.handles:
            self.handles.pop()
        self.result = None

    def clear(self) -> None:
        self.handles, self.targets = [], []
        self.painted[:] = False
        self.region, self.result, self.message = "whole image", None, "cleared; click a handle point"

    def mask(self) -> np.ndarray | None:
        """The editable region for the drag: None (whole image), the painted pixels, or the box
        around all points grown by ``4 * brush`` pixels."""
        if self.region == "whole image":
            return None
        if self.region == "painted":
            return self.painted.copy()
        pts = np.asarray(self.handles + self.targets, float)
        if len(pts) == 0:
            raise ValueError("no points yet: click handle and target points first")
        m = np.zeros((self.side, self.side), bool)
        pad = 4 * self.brush
        x0, y0 = np.maximum(pts.min(0) - pad, 0).astype(int)
        x1, y1 = np.minimum(pts.max(0) + pad, self.side - 1).astype(int)
        m[y0:y1 + 1, x0:x1 + 1] = True
        return m

    def run(self):
        """Run the drag with the points and region so far; the result is kept in ``self.result``."""
        if not self.handles:
            raise ValueError("no handle points: click a handle, then its target")
        if len(self.handles) != len(self.targets):
            raise ValueError(f"handle {len(self.handles)} has no target yet: click where it should go")
        fn = self.run_fn
        if fn is None:
            if self.pipe is None:
                raise ValueError("give the picker a pipeline (pipe=...) or a run_fn")
            from ..methods.drag import drag_edit
            fn = lambda image, h, g, m: drag_edit(self.pipe, image, h, g, m, **self.drag_kwargs)  # noqa: E731
        self.result = fn(self.image, list(self.handles), list(self.targets), self.mask())
        self.message = "done"
        return self.result

    # -- drawing
    def figure(self):
        """Before (points, arrows, region) and after (if run) side by side; returns the figure."""
        import matplotlib.pyplot as plt

        after = getattr(self.result, "image", self.result)
        n = 2 if after is not None else 1
        fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False)
        draw_drag(axes[0, 0], self.image, self.handles, self.targets, self.mask() if self.handles or
                  self.region == "painted" else None, title="before")
        if after is not None:
            end = getattr(self.result, "handles", None)
            draw_drag(axes[0, 1], after, self.handles, self.targets, None, title="after", reached=end)
        fig.tight_layout()
        return fig

    def widget(self, grid: int | None = None):
        """The ipywidgets view: a clickable grid of cells, mode and region choosers, run / undo / clear."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        grid = grid or min(self.side, 32)
        cell = self.side / grid
        arr = as_array(self.image)
        out = W.Output()
        status = W.Label(self.message)

        def colour(i, j):
            y0, x0 = int(i * cell), int(j * cell)
            c = arr[y0:int((i + 1) * cell) or y0 + 1, x0:int((j + 1) * cell) or x0 + 1].reshape(-1, 3).mean(0)
            return "#%02x%02x%02x" % tuple(int(v * 255) for v in c)

        buttons = []
        for i in range(grid):
            for j in range(grid):
                b = W.Button(layout=W.Layout(width="12px", height="12px", padding="0", margin="0"),
                             style={"button_color": colour(i, j)})
                b.on_click(lambda _b, i=i, j=j: (status.__setattr__("value", self.click((j + 0.5) * cell - 0.5,
                                                                                          (i + 0.5) * cell - 0.5)),
                                                 redraw()))
                buttons.append(b)
        board = W.GridBox(buttons, layout=W.Layout(grid_template_columns=f"repeat({grid}, 12px)", grid_gap="0"))
        mode = W.ToggleButtons(options=MODES, value=self.mode, description="click to")
        region = W.Dropdown(options=REGIONS, value=self.region, description="editable")
        run_b, undo_b, clear_b = W.Button(description="run drag"), W.Button(description="undo"), W.Button(description="clear")

        def redraw():
            region.value = self.region
            with out:
                out.clear_output(wait=True)
                self.figure()
                plt.show()

        def safe(fn):
            def call(*_):
                try:
                    fn()
                    status.value = self.message
                except ValueError as err:
                    status.value = str(err)
                redraw()
            return call

        mode.observe(lambda ch: self.set_mode(ch["new"]), names="value")
        region.observe(lambda ch: self.choose_region(ch["new"]), names="value")
        run_b.on_click(safe(self.run))
        undo_b.on_click(safe(self.undo))
        clear_b.on_click(safe(self.clear))
        redraw()
        return W.VBox([W.HBox([board, out]), W.HBox([mode, region]), W.HBox([run_b, undo_b, clear_b]), status])


def draw_drag(ax, image, handles, targets, mask=None, title: str | None = None, reached=None):
    """An image with handle (red) -> target (blue) arrows, the editable region shaded, and where the
    handles ended (``reached``, white crosses)."""
    ax.imshow(as_array(image), interpolation="nearest")
    if mask is not None:
        ax.imshow(np.ma.masked_where(~np.asarray(mask, bool), np.ones_like(mask, float)), cmap="Greens",
                  alpha=0.3, vmin=0, vmax=1.5, interpolation="nearest")
    for k, h in enumerate(handles):
        ax.plot(*h, "o", color="red", ms=4)
        if k < len(targets):
            g = targets[k]
            ax.plot(*g, "o", color="blue", ms=4)
            ax.annotate("", xy=g, xytext=h, arrowprops=dict(arrowstyle="->", color="yellow", lw=1.2))
    if reached is not None:
        for p in np.asarray(reached):
            ax.plot(*p, "x", color="white", ms=5, mew=1.5)
    if title:
        ax.set_title(title, fontsize=8)
    ax.axis("off")
