"""The cross-attention explorer (notebook 01), and the two drawing helpers the other views share
(:func:`draw_beside`, :func:`show_beside`). The logic lives in a plain class with plain callbacks, so
tests drive it with synthetic events; the ipywidgets wrapper only wires controls to it."""
from __future__ import annotations

import numpy as np

from ..attention import AttentionStore


def show_beside(out, image, panel, title: str, size: float = 2.6, image_title: str | None = None, cmap=None,
                colorbar: bool = False):
    """Draw ``panel`` (titled) into the ipywidgets ``out``, with ``image`` to its left when given
    (``colorbar``: the panel's colour scale beside it)."""
    import matplotlib.pyplot as plt

    with out:
        out.clear_output(wait=True)
        draw_beside(image, panel, title, size, image_title, cmap, colorbar)
        plt.show()


def draw_beside(image, panel, title: str, size: float = 2.6, image_title: str | None = None, cmap=None,
                colorbar: bool = False):
    """A matplotlib figure: ``panel`` (titled), with ``image`` to its left when given; returns the figure.
    Small images and maps are drawn with nearest-neighbour interpolation (each pixel a square)."""
    import matplotlib.pyplot as plt

    n = 2 if image is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(size * n + (0.5 if colorbar else 0), size), squeeze=False)
    if image is not None:
        axes[0, 0].imshow(np.asarray(image), interpolation="nearest")
        if image_title:
            axes[0, 0].set_title(image_title, fontsize=8)
    shown = axes[0, -1].imshow(np.asarray(panel), cmap=cmap, interpolation="nearest")
    axes[0, -1].set_title(title, fontsize=8)
    for a in axes[0]:
        a.axis("off")
    if colorbar:
        cb = fig.colorbar(shown, ax=axes[0, -1], fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=7)
    return fig


class AttentionExplorer:
    """Pick a token position, a step and a resolution of a stored generation and see its
    cross-attention map.

    Tokens are chosen by **position** (1 = the first word after the start token, as in the maps' key
    axis): a prompt can hold the same word twice ("a red star on a gray background"), and each
    occurrence has its own map. ``labels`` are the dropdown's ``"i: word"`` entries.
    ``select(position=..., step=..., resolution=...)`` is the callback the widget calls; it returns the
    map shown (side x side array) and keeps it in ``self.current``. ``token=`` selects a word that
    occurs once.
    """

    def __init__(self, store: AttentionStore, tokens: list[str], prompt_index: int = 0):
        if not store.per_step:
            raise ValueError("the explorer needs a store created with per_step=True")
        self.store, self.tokens, self.prompt_index = store, list(tokens), prompt_index
        self.positions = list(range(1, len(self.tokens) + 1))
        self.labels = [f"{i}: {t}" for i, t in zip(self.positions, self.tokens)]
        self.resolutions = sorted({r for kind, r in store.sums if kind == "cross"})
        self.steps = sorted(store.steps)
        self.position, self.step, self.resolution = 1, "all", self.resolutions[-1]
        self.current = None

    @property
    def token(self) -> str:
        """The word at the selected position."""
        return self.tokens[self.position - 1]

    def position_of(self, token: str) -> int:
        """The position of a word that occurs once in the prompt."""
        where = [i for i, t in zip(self.positions, self.tokens) if t == token]
        if not where:
            raise ValueError(f"unknown token {token!r}; tokens: {self.labels}")
        if len(where) > 1:
            raise ValueError(f"{token!r} occurs at positions {where}; choose one with position=")
        return where[0]

    @property
    def title(self) -> str:
        return f"'{self.token}' (position {self.position}), step {self.step}, {self.resolution}x{self.resolution}"

    def select(self, token: str | None = None, step: int | str | None = None, resolution: int | None = None,
               position: int | None = None) -> np.ndarray:
        if token is not None and position is not None:
            raise ValueError("give a token or a position, not both")
        if token is not None:
            position = self.position_of(token)
        if position is not None:
            if position not in self.positions:
                raise ValueError(f"position must be one of {self.positions} ({self.labels})")
            self.position = position
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
        self.current = maps[self.prompt_index, :, :, self.position].numpy()
        return self.current

    def figure(self, image=None, size: float = 2.6):
        """The current view as a static matplotlib figure (map with its colour scale, beside the image):
        what a page that cannot run widgets shows."""
        if self.current is None:
            self.select()
        return draw_beside(image, self.current, self.title, size, cmap="inferno", colorbar=True)

    def widget(self, image=None, draw: bool = True):
        """An ipywidgets view: position / step / resolution controls and the map beside the image.
        ``draw=False``: the view is drawn at the first change of a control (show the default view with
        :meth:`figure` above it, so that it is not drawn twice)."""
        import ipywidgets as W

        out = W.Output()
        token = W.Dropdown(options=list(zip(self.labels, self.positions)), value=self.position, description="token")
        step = W.Dropdown(options=["all", *self.steps], value=self.step, description="step")
        res = W.Dropdown(options=self.resolutions, value=self.resolution, description="resolution")

        def redraw(_=None):
            m = self.select(step=step.value, resolution=res.value, position=token.value)
            show_beside(out, image, m, self.title, cmap="inferno", colorbar=True)

        for w in (token, step, res):
            w.observe(redraw, names="value")
        if draw:
            redraw()
        else:
            self.select(step=step.value, resolution=res.value, position=token.value)
        return W.VBox([W.HBox([token, step, res]), out])
