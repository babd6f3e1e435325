"""A slider for Imagic's eta (Kawar et al., Eq. 4: e_bar = eta * e_tgt + (1 - eta) * e_opt).

The logic is :meth:`EtaSlider.select` (a plain callback the tests drive): the image for one eta, looked
up when it was generated before and generated (then kept) otherwise. :meth:`EtaSlider.widget` only
wires ipywidgets to it, with a status line that says when an image is being generated;
:meth:`EtaSlider.figure` draws the same view as a static figure, for pages that cannot run widgets.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

from ..methods.imagic import ETA_RANGE, ImagicResult, check_eta, imagic_sample


def _key(eta: float) -> float:
    return round(float(eta), 3)


class EtaSlider:
    """Images of one Imagic fit at chosen etas, all from the same z_T (``seed``); results are cached.

    ``images``: etas already generated (e.g. a strip drawn in the notebook), {eta: image}, with the same
    seed; :meth:`precompute` generates several etas in one batch so that moving the slider to them is
    instant. ``describe(image) -> str`` adds a line under the image (e.g. what the oracle reads).
    """

    def __init__(self, pipe, result: ImagicResult, seed: int = 0, images: dict | None = None,
                 describe: Callable | None = None):
        self.pipe, self.result, self.seed, self.describe = pipe, result, seed, describe
        self.cache: dict[float, object] = {_key(e): im for e, im in (images or {}).items()}
        for e in self.cache:
            check_eta(e)
        self.eta, self.current = None, None
        self.status = "ready"

    def precompute(self, etas: Sequence[float]) -> None:
        """Generate the etas not cached yet, in one batch."""
        todo = sorted({_key(e) for e in etas} - set(self.cache))
        for e in todo:
            check_eta(e)
        if todo:
            for e, im in zip(todo, imagic_sample(self.pipe, self.result, todo, seed=self.seed)):
                self.cache[e] = im

    def select(self, eta: float):
        """The image at ``eta`` (a ``ValueError`` outside the accepted range); sets ``status``."""
        eta = _key(check_eta(eta))
        if eta in self.cache:
            self.status = f"eta = {eta:g}: looked up"
        else:
            t = time.perf_counter()
            self.cache[eta] = imagic_sample(self.pipe, self.result, eta, seed=self.seed)[0]
            self.status = f"eta = {eta:g}: generated in {time.perf_counter() - t:.1f} s"
        self.eta, self.current = eta, self.cache[eta]
        return self.current

    def title(self) -> str:
        line = f"η = {self.eta:g}  '{self.result.target_prompt}'"
        return line + (f"\n{self.describe(self.current)}" if self.describe else "")

    def figure(self, eta: float, source_image=None, size: float = 3.0):
        """The widget's view at ``eta`` as a matplotlib figure (input beside the edit, nearest-neighbour)."""
        import matplotlib.pyplot as plt
        import numpy as np

        self.select(eta)
        n = 2 if source_image is not None else 1
        fig, axes = plt.subplots(1, n, figsize=(size * n, size), squeeze=False)
        if source_image is not None:
            axes[0, 0].imshow(np.asarray(source_image), interpolation="nearest")
            axes[0, 0].set_title("input", fontsize=8)
        axes[0, -1].imshow(np.asarray(self.current), interpolation="nearest")
        axes[0, -1].set_title(self.title(), fontsize=8)
        for a in axes[0]:
            a.axis("off")
        fig.tight_layout()
        return fig

    def widget(self, source_image=None, eta: float | None = None, step: float = 0.1):
        """A slider over [0, ETA_RANGE[1]] (``step`` apart), a status line and the view; cached etas
        show at once, others are generated (the status line says so while it works)."""
        import ipywidgets as W
        import matplotlib.pyplot as plt

        eta = self.result.config.eta if eta is None else eta
        slider = W.FloatSlider(value=eta, min=ETA_RANGE[0], max=ETA_RANGE[1], step=step, description="η",
                               continuous_update=False, readout_format=".1f")
        status = W.Label(self.status)
        out = W.Output()

        def redraw(_=None):
            e = _key(slider.value)
            if e not in self.cache:
                status.value = f"eta = {e:g}: generating ({self.result.config.num_inference_steps} DDIM steps) ..."
            with out:
                out.clear_output(wait=True)
                try:
                    self.figure(e, source_image)
                except ValueError as err:
                    status.value = str(err)
                    return
                plt.show()
            status.value = self.status

        slider.observe(redraw, names="value")
        redraw()
        return W.VBox([W.HBox([slider, status]), out])
