"""A point-picking widget for DragDiffusion: click handle and target points on the image, paint or
choose the editable region, run the drag, see before and after with arrows.

:class:`DragPicker` holds the state and its callbacks are plain functions (``click(x, y)``,
``board_click(px, py)``, ``set_mode``, ``choose_region``, ``undo``, ``clear``, ``run``), so tests drive
it with synthetic events. :meth:`DragPicker.widget` wires them to ipywidgets: the image is shown
enlarged (``board``), and with ``ipyevents`` installed a click on it is a click at that point of the
image; without it (or for an exact point) the coordinates are typed. While a drag runs the status
line counts the seconds; a click that arrives meanwhile changes nothing, and a click after it keeps
the result on show (marked as made from the earlier points) until the next run.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np

from ..metrics import as_array

MODES = ("points", "paint", "erase")
REGIONS = ("whole image", "painted", "box around the points")
DONE = {"paint": "painted", "erase": "erased"}


def has_ipyevents() -> bool:
    """Whether clicks on the image can be received (the ``ipyevents`` package is installed)."""
    try:
        import ipyevents  # noqa: F401
    except ImportError:
        return False
    return True


class DragPicker:
    """State of one drag: alternating handle/target clicks, an editable-region mask, the result.

    ``run_fn(image, handles, targets, mask)`` does the drag (default: :func:`drag_edit` with ``pipe``
    and ``drag_kwargs``) and returns an object with ``.image`` (or an image). ``result`` stays until
    the next run or :meth:`clear`; ``ran_with`` holds the points and region it was made from, and
    :attr:`stale` says whether they have changed since.
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
        self.ran_with = None  # (handles, targets, mask) of the result
        self.running = False
        self.last_seconds: float | None = None
        self.message = "click a handle point"

    # -- callbacks
    def _busy(self) -> bool:
        if self.running:
            self.message = "a drag is running: wait for it (this click changed nothing)"
        return self.running

    def points_message(self) -> str:
        """What to do next, from the points so far."""
        n_h, n_t = len(self.handles), len(self.targets)
        if n_h == 0:
            return "no points: click a handle point"
        if n_h > n_t:
            x, y = self.handles[-1]
            return f"handle {n_h} at ({x:.0f}, {y:.0f}); now click its target"
        pairs = "1 handle-target pair" if n_t == 1 else f"{n_t} handle-target pairs"
        return f"{pairs}; click another handle or run"

    def click(self, x: float, y: float) -> str:
        """A click at pixel (x, y): a handle, then its target (points mode), or paint / erase."""
        if self._busy():
            return self.message
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
            self.message = f"{DONE[self.mode]} at ({x:.0f}, {y:.0f}); region: {int(self.painted.sum())} pixels"
        return self.message

    def board_scale(self, width: int = 256) -> int:
        """How many screen pixels the board gives each image pixel (at least 1)."""
        return max(1, int(round(width / self.side)))

    def board_click(self, px: float, py: float, scale: int | None = None) -> str:
        """A click at (px, py) on the board (the image enlarged ``scale`` times, measured from its top
        left corner, as ipyevents reports it for an image): the click at that point of the image."""
        k = scale or self.board_scale()
        x, y = (min(max(p / k - 0.5, 0.0), self.side - 1.0) for p in (px, py))
        return self.click(round(x, 1), round(y, 1))

    def on_board_event(self, event: dict) -> str:
        """The handler for ipyevents' click events on the board (``dataX``, ``dataY``: the position in
        the board image's own pixels)."""
        return self.board_click(event["dataX"], event["dataY"])

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.message = (self.points_message() if mode == "points"
                        else f"click to {mode} the editable region (a disk of radius {self.brush} pixels)")

    def choose_region(self, region: str) -> None:
        if region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
        self.region = region
        try:
            m = self.mask()
        except ValueError as err:
            self.message = f"editable: {region} ({err})"
            return
        self.message = f"editable: {region}" + ("" if m is None else f", {int(m.sum())} pixels")

    def undo(self) -> None:
        """Remove the last point (a target, or a handle still waiting for its target)."""
        if self._busy():
            return
        if len(self.targets) == len(self.handles) and self.targets:
            self.targets.pop()
            done = "removed the last target"
        elif self.handles:
            self.handles.pop()
            done = "removed the last handle"
        else:
            self.message = "nothing to undo: " + self.points_message()
            return
        self.message = f"{done}; {self.points_message()}"

    def clear(self) -> None:
        if self._busy():
            return
        self.handles, self.targets = [], []
        self.painted[:] = False
        self.region, self.result, self.ran_with = "whole image", None, None
        self.message = "cleared; click a handle point"

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

    def shown_mask(self) -> np.ndarray | None:
        """The region as drawn: the mask, or None while it cannot be made yet (a box without points)."""
        try:
            return self.mask()
        except ValueError:
            return None

    @property
    def stale(self) -> bool:
        """Whether the points or the region changed since the result was made."""
        if self.result is None:
            return False
        h, g, m = self.ran_with
        now = self.shown_mask()
        same_mask = (m is None and now is None) or (m is not None and now is not None and np.array_equal(m, now))
        return not (h == self.handles and g == self.targets and same_mask)

    def progress(self, elapsed: float) -> str:
        """The status line while a drag runs, ``elapsed`` seconds in."""
        line = f"running the drag: {elapsed:.0f} s"
        if self.last_seconds is not None:
            return line + f" (the last run took {self.last_seconds:.0f} s)"
        config, lora = self.drag_kwargs.get("config"), self.drag_kwargs.get("lora_unet")
        if self.run_fn is None and lora is None and getattr(config, "use_lora", True):
            line += " (fitting the identity LoRA first)"
        return line

    def run(self):
        """Run the drag with the points and region so far; the result is kept in ``self.result``."""
        if self.running:
            raise ValueError("a drag is running: wait for it")
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
        points = (list(self.handles), list(self.targets), self.mask())
        self.running, self.message = True, self.progress(0.0)
        t0 = time.perf_counter()
        try:
            result = fn(self.image, list(points[0]), list(points[1]), points[2])
        except Exception as err:
            self.message = f"the drag failed: {err}"
            raise
        finally:
            self.running = False
        self.last_seconds = time.perf_counter() - t0
        self.result, self.ran_with = result, points
        self.message = f"done in {self.last_seconds:.0f} s"
        return self.result

    # -- drawing
    def board_png(self, width: int = 256) -> bytes:
        """The board: the image enlarged (nearest-neighbour) with the editable region tinted green,
        handles red, targets blue, yellow lines from each handle to its target; PNG bytes."""
        import io

        from PIL import Image, ImageDraw

        k = self.board_scale(width)
        rgb = as_array(self.image)
        mask = self.shown_mask()
        if mask is not None:
            rgb = np.where(mask[..., None], 0.65 * rgb + 0.35 * np.array([0.2, 0.8, 0.2]), rgb)
        big = Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).resize(
            (self.side * k, self.side * k), Image.NEAREST)
        draw = ImageDraw.Draw(big)
        at = lambda p: ((p[0] + 0.5) * k, (p[1] + 0.5) * k)  # noqa: E731  (pixel centre on the board)
        r = max(3, k)
        for i, h in enumerate(self.handles):
            if i < len(self.targets):
                draw.line([at(h), at(self.targets[i])], fill=(255, 220, 0), width=max(1, k // 2))
        for pts, colour in ((self.handles, (220, 0, 0)), (self.targets, (0, 60, 255))):
            for p in pts:
                x, y = at(p)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=(255, 255, 255))
        buf = io.BytesIO()
        big.save(buf, format="PNG")
        return buf.getvalue()

    def figure(self, before: bool = True):
        """Before (points, arrows, region) and after (if run) side by side; returns the figure.
        ``before=False``: the after panel only (None when there is no result yet)."""
        import matplotlib.pyplot as plt

        after = getattr(self.result, "image", self.result)
        n = int(before) + int(after is not None)
        if n == 0:
            return None
        fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False)
        if before:
            draw_drag(axes[0, 0], self.image, self.handles, self.targets, self.shown_mask(), title="before")
        if after is not None:
            h, g, _ = self.ran_with
            title = "after (made from earlier points: run again)" if self.stale else "after"
            draw_drag(axes[0, -1], after, h, g, None, title=title, reached=getattr(self.result, "handles", None))
        fig.tight_layout()
        return fig

    def widget(self, width: int = 256, events: bool | None = None):
        """The ipywidgets view: the board (click on it with ipyevents; ``events=False``, or ipyevents
        missing: type the coordinates), mode and region choosers, run / undo / clear, a status line,
        and the result."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        events = has_ipyevents() if events is None else events
        k = self.board_scale(width)
        board = W.Image(value=self.board_png(width), format="png", width=self.side * k)
        status = W.Label(self.message)
        out = W.Output()
        x_in = W.BoundedFloatText(value=(self.side - 1) / 2, min=0, max=self.side - 1, step=1, description="x",
                                  layout=W.Layout(width="130px"))
        y_in = W.BoundedFloatText(value=(self.side - 1) / 2, min=0, max=self.side - 1, step=1, description="y",
                                  layout=W.Layout(width="130px"))
        typed = W.Button(description="click at (x, y)")
        mode = W.ToggleButtons(options=MODES, value=self.mode, description="click to")
        region = W.Dropdown(options=REGIONS, value=self.region, description="editable")
        run_b, undo_b, clear_b = W.Button(description="run drag"), W.Button(description="undo"), W.Button(description="clear")
        syncing = []

        def redraw():
            syncing.append(True)  # the choosers follow the state without calling back
            try:
                region.value, mode.value = self.region, self.mode
            finally:
                syncing.pop()
            board.value = self.board_png(width)
            status.value = self.message
            with out:
                out.clear_output(wait=True)
                if self.figure(before=False) is None:
                    print("no result yet: pick points, then run the drag")
                else:
                    plt.show()

        def safe(fn):
            def call(*args):
                try:
                    fn(*args)
                except ValueError as err:
                    self.message = str(err)
                redraw()
            return call

        def on_run(_):
            if self.running:
                return
            stop, t0 = threading.Event(), time.perf_counter()

            def tick():  # the status line counts the seconds while the kernel runs the drag
                while not stop.wait(1.0):
                    status.value = self.progress(time.perf_counter() - t0)

            run_b.disabled = True
            status.value = self.progress(0.0)
            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            try:
                self.run()
            except Exception as err:  # shown on the status line; the widget stays usable
                if not self.message.startswith("the drag failed"):
                    self.message = str(err)
            finally:
                stop.set()
                ticker.join()
                run_b.disabled = False
            redraw()

        mode.observe(lambda ch: syncing or safe(self.set_mode)(ch["new"]), names="value")
        region.observe(lambda ch: syncing or safe(self.choose_region)(ch["new"]), names="value")
        typed.on_click(lambda _b: safe(self.click)(x_in.value, y_in.value))
        run_b.on_click(on_run)
        undo_b.on_click(lambda _b: safe(self.undo)())
        clear_b.on_click(lambda _b: safe(self.clear)())
        rows = [W.HBox([board, out])]
        if events:
            from ipyevents import Event

            listener = Event(source=board, watched_events=["click"], prevent_default_action=True)
            listener.on_dom_event(lambda event: safe(self.on_board_event)(event))
            self._listener = listener  # kept alive with the picker
            hint = "click on the image, or type a point:"
        else:
            hint = "type a point (install ipyevents to click on the image):"
        rows += [W.HBox([W.Label(hint), x_in, y_in, typed]), W.HBox([mode, region]),
                 W.HBox([run_b, undo_b, clear_b]), status]
        redraw()
        return W.VBox(rows)


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
