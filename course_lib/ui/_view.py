"""What the slider views share: a row of images drawn as one figure, and the ipywidgets wiring of
sliders, a status line and the drawn view."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def draw_row(images: Sequence, titles: Sequence[str], size: float = 2.4, fontsize: int = 7, title_lines: int = 1):
    """Images side by side (nearest-neighbour), each with its title (room for ``title_lines`` lines);
    returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.15 * title_lines + 0.2),
                             squeeze=False)
    for ax, im, title in zip(axes[0], images, titles):
        ax.imshow(np.asarray(im), interpolation="nearest")
        ax.set_title(title, fontsize=fontsize)
        ax.axis("off")
    fig.tight_layout()
    return fig


def slider_view(rows: Sequence[Sequence], pending: Callable[[], str | None], draw: Callable[[], None],
                status_text: Callable[[], str]):
    """An ipywidgets box: the control ``rows``, a status line and an ``Output`` with the drawn view.

    On every change of a control: the status line shows ``pending()`` while the view is computed (when
    something must be computed; ``None`` when everything is cached), then ``draw()`` draws the view
    and the status line shows ``status_text()``; a ``ValueError`` is shown on the status line instead.
    The view is drawn once when the box is built."""
    import ipywidgets as W
    import matplotlib.pyplot as plt

    status = W.Label("")
    out = W.Output()

    def redraw(_=None):
        msg = pending()
        if msg:
            status.value = msg
        with out:
            out.clear_output(wait=True)
            try:
                draw()
            except ValueError as err:
                status.value = str(err)
                return
            plt.show()
        status.value = status_text()

    for row in rows:
        for control in row:
            if hasattr(control, "value"):
                control.observe(redraw, names="value")
    redraw()
    return W.VBox([*(W.HBox(list(row)) for row in rows), status, out])
