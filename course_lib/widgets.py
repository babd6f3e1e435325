"""Interactive views for the notebooks. The logic lives in plain classes with plain callbacks, so
tests drive them with synthetic events; the ipywidgets wrapper only wires controls to them."""
from __future__ import annotations

import numpy as np

from .attention import AttentionStore


def show_beside(out, image, panel, title: str, size: float = 2.6, image_title: str | None = None, cmap=None):
    """Draw ``panel`` (titled) into the ipywidgets ``out``, with ``image`` to its left when given."""
    import matplotlib.pyplot as plt

    with out:
        out.clear_output(wait=True)
        n = 2 if image is not None else 1
        _, axes = plt.subplots(1, n, figsize=(size * n, size), squeeze=False)
        if image is not None:
            axes[0, 0].imshow(np.asarray(image))
            if image_title:
                axes[0, 0].set_title(image_title, fontsize=8)
        axes[0, -1].imshow(np.asarray(panel), cmap=cmap)
        axes[0, -1].set_title(title, fontsize=8)
        for a in axes[0]:
            a.axis("off")
        plt.show()


class AttentionExplorer:
    """Pick a token, a step and a resolution of a stored generation and see its cross-attention map.

    ``select(token=..., step=..., resolution=...)`` is the callback the widget calls; it returns the
    map shown (side x side array) and keeps it in ``self.current``.
    """

    def __init__(self, store: AttentionStore, tokens: list[str], prompt_index: int = 0):
        if not store.per_step:
            raise ValueError("the explorer needs a store created with per_step=True")
        self.store, self.tokens, self.prompt_index = store, tokens, prompt_index
        self.resolutions = sorted({r for kind, r in store.sums if kind == "cross"})
        self.steps = sorted(store.steps)
        self.token, self.step, self.resolution = tokens[0], "all", self.resolutions[-1]
        self.current = None

    def select(self, token: str | None = None, step: int | str | None = None, resolution: int | None = None) -> np.ndarray:
        if token is not None:
            if token not in self.tokens:
                raise ValueError(f"unknown token {token!r}; tokens: {self.tokens}")
            self.token = token
        if step is not None:
            if step != "all" and step not in self.steps:
                raise ValueError(f"step must be 'all' or one of {self.steps[0]}..{self.steps[-1]}")
            self.step = step
        if resolution is not None:
            if resolution not in self.resolutions:
                raise ValueError(f"resolution must be one of {self.resolutions}")
            self.resolution = resolution
        maps = (self.store.mean("cross", self.resolution) if self.step == "all"
                else self.store.at_step(self.step, "cross", self.resolution))
        self.current = maps[self.prompt_index, :, :, self.tokens.index(self.token) + 1].numpy()
        return self.current

    def widget(self, image=None):
        """An ipywidgets view: token / step / resolution controls and the map beside the image."""
        import ipywidgets as W

        out = W.Output()
        token = W.Dropdown(options=self.tokens, value=self.token, description="token")
        step = W.Dropdown(options=["all", *self.steps], value=self.step, description="step")
        res = W.Dropdown(options=self.resolutions, value=self.resolution, description="resolution")

        def redraw(_=None):
            m = self.select(token.value, step.value, res.value)
            show_beside(out, image, m, f"'{self.token}' step {self.step} {self.resolution}x{self.resolution}",
                        cmap="inferno")

        for w in (token, step, res):
            w.observe(redraw, names="value")
        redraw()
        return W.VBox([W.HBox([token, step, res]), out])
