"""Prompt-to-Prompt's knobs (Hertz et al., ICLR 2023; notebook 02) as sliders: how long the source's
attention maps are injected into a word swap (the cross-attention fraction tau_c, the self-attention
fraction tau_s), and the scale ``c`` of one word's cross-attention map in a re-weighting edit.

The logic is :meth:`P2PSliders.select_swap` and :meth:`P2PSliders.select_reweight` (plain callbacks the
tests drive): an image is looked up when it was made before and generated (then kept) otherwise.
Swaps are cached by their **step windows** (``P2PEdit.step_windows``), not by the fractions, so two
fractions that inject for the same steps are the same image. :meth:`P2PSliders.figure` draws a view as
a static figure; :meth:`P2PSliders.widget` wires ipywidgets to the callbacks with a status line.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterable, Sequence

import torch

from ..methods.p2p import P2PEdit, p2p_edit
from ..sampling import initial_latents
from ._view import draw_row, slider_view


class P2PSliders:
    """A word swap ``source_prompt`` -> ``swap_prompt`` and a re-weighting of ``reweight_word`` in
    ``reweight_prompt`` (default: the source prompt), all from the same starting latent.

    ``latents``: z_T (drawn from ``seed`` when None); ``uncond_embeddings``: per-step unconditional
    embeddings of a null-text inversion, for a real image. ``edit``: the other options of both edits (a
    :class:`P2PEdit`; its ``cross_replace_steps`` / ``self_replace_steps`` are the swap's default view
    and the re-weighting's windows). ``describe(image) -> str`` adds a line under each edit's title
    (e.g. what the oracle reads).

    Images made before with the same latent, steps and options fill the caches, so that the sliders
    show them at once: ``swaps`` {(tau_c, tau_s): image}, ``scales`` {c: image}, ``sources``
    {prompt: unedited image}. :meth:`precompute` generates more.
    """

    def __init__(self, pipe, source_prompt: str, swap_prompt: str, reweight_word: str | None = None,
                 reweight_prompt: str | None = None, num_inference_steps: int = 50, guidance_scale: float = 7.5,
                 latents: torch.Tensor | None = None, seed: int = 0, uncond_embeddings=None,
                 edit: P2PEdit | None = None, describe: Callable | None = None, swaps: dict | None = None,
                 scales: dict | None = None, sources: dict | None = None):
        self.pipe, self.source_prompt, self.swap_prompt = pipe, source_prompt, swap_prompt
        self.reweight_word = reweight_word
        self.reweight_prompt = reweight_prompt or source_prompt
        if reweight_word is not None and reweight_word not in self.reweight_prompt.split():
            raise ValueError(f"the re-weighted word {reweight_word!r} is not in {self.reweight_prompt!r}")
        self.steps, self.guidance_scale, self.uncond = num_inference_steps, guidance_scale, uncond_embeddings
        self.edit = replace(edit or P2PEdit(), kind="swap", reweight={})
        self.latents = initial_latents(pipe, 1, torch.Generator().manual_seed(seed)) if latents is None else latents
        self.describe = describe
        self.sources: dict[str, object] = dict(sources or {})  # prompt -> its unedited image (prompt 0 of a batch)
        self.swaps: dict[tuple[int, int], object] = {}  # (cross steps, self steps) -> swapped image
        self.scales: dict[float, object] = {}  # c -> re-weighted image
        for (cross, self_), im in (swaps or {}).items():
            self.swaps[self.swap_key(cross, self_)] = im
        for c, im in (scales or {}).items():
            self.reweight_edit(c)  # checks the scale (and that there is a word)
            self.scales[self.scale_key(c)] = im
        self.cross, self.self_, self.scale = self.edit.cross_replace_steps, self.edit.self_replace_steps, 1.0
        self.status = "ready"

    # -- the edits
    def _run(self, source: str, target: str, edit: P2PEdit):
        src, out = p2p_edit(self.pipe, source, target, edit, self.steps, self.guidance_scale, latents=self.latents,
                            uncond_embeddings=self.uncond, progress=False)
        self.sources.setdefault(source, src)
        return out

    def swap_edit(self, cross: float, self_: float) -> P2PEdit:
        return replace(self.edit, cross_replace_steps=float(cross), self_replace_steps=float(self_))

    def swap_key(self, cross: float, self_: float) -> tuple[int, int]:
        """The step windows of a swap: (steps with the source's cross maps, steps with its self maps)."""
        w = self.swap_edit(cross, self_).step_windows(self.steps)
        return w["cross"], w["self"]

    def reweight_edit(self, c: float) -> P2PEdit:
        if self.reweight_word is None:
            raise ValueError("no re-weighted word: give P2PSliders(reweight_word=...)")
        return replace(self.edit, kind="reweight", reweight={self.reweight_word: float(c)})

    @staticmethod
    def scale_key(c: float) -> float:
        return round(float(c), 2)

    def swap_label(self, cross: float, self_: float) -> str:
        k = self.swap_key(cross, self_)
        n = self.steps  # the reference's cross window int(f (T + 1)) can exceed T: it then covers all T steps
        return f"τ_c = {cross:g} ({min(k[0], n)} of {n} steps), τ_s = {self_:g} ({min(k[1], n)} of {n})"

    def select_swap(self, cross: float | None = None, self_: float | None = None):
        """The swapped image for these fractions (a ``ValueError`` outside [0, 1]); sets ``status``."""
        cross = self.cross if cross is None else float(cross)
        self_ = self.self_ if self_ is None else float(self_)
        key = self.swap_key(cross, self_)  # checks the fractions
        label = f"swap {self.swap_label(cross, self_)}"
        if key in self.swaps:
            self.status = f"{label}: looked up"
        else:
            t = time.perf_counter()
            self.swaps[key] = self._run(self.source_prompt, self.swap_prompt, self.swap_edit(cross, self_))
            self.status = f"{label}: generated in {time.perf_counter() - t:.1f} s"
        self.cross, self.self_ = cross, self_
        return self.swaps[key]

    def select_reweight(self, c: float | None = None):
        """The re-weighted image for scale ``c`` (a ``ValueError`` outside [-2, 5]); sets ``status``."""
        c = self.scale if c is None else float(c)
        edit = self.reweight_edit(c)  # checks the scale
        key = self.scale_key(c)
        label = f"'{self.reweight_word}' x {key:g}"
        if key in self.scales:
            self.status = f"{label}: looked up"
        else:
            t = time.perf_counter()
            self.scales[key] = self._run(self.reweight_prompt, self.reweight_prompt, edit)
            self.status = f"{label}: generated in {time.perf_counter() - t:.1f} s"
        self.scale = key
        return self.scales[key]

    def precompute(self, swaps: Iterable[tuple[float, float]] = (), scales: Iterable[float] = ()) -> None:
        """Generate the swaps ((tau_c, tau_s) pairs) and scales not cached yet, so that moving a slider
        to them is instant."""
        for cross, self_ in swaps:
            if self.swap_key(cross, self_) not in self.swaps:
                self.select_swap(cross, self_)
        for c in scales:
            if self.scale_key(c) not in self.scales:
                self.select_reweight(c)
        self.status = "ready"

    def pending(self, cross: float, self_: float, c: float | None) -> str | None:
        """What the status line says while a view is computed (None when all of it is cached)."""
        todo = []
        if self.swap_key(cross, self_) not in self.swaps:
            todo.append("the swap")
        if c is not None and self.scale_key(c) not in self.scales:
            todo.append(f"'{self.reweight_word}' x {c:g}")
        return f"generating {' and '.join(todo)} ({self.steps} DDIM steps) ..." if todo else None

    # -- drawing
    def _title(self, text: str, image) -> str:
        return text + (f"\n{self.describe(image)}" if self.describe else "")

    def figure(self, cross: float | None = None, self_: float | None = None, c: float | None = None,
               size: float = 2.4):
        """The view as a matplotlib figure: the source, the swap at (tau_c, tau_s) and, with a
        re-weighted word, the re-weighting at ``c`` (the current values where not given)."""
        swapped = self.select_swap(cross, self_)
        images = [self.sources[self.source_prompt], swapped]
        titles = [f"source\n{self.source_prompt}",
                  self._title(f"swap: {self.swap_label(self.cross, self.self_)}\n{self.swap_prompt}", swapped)]
        status = self.status
        if self.reweight_word is not None:
            rw = self.select_reweight(c)
            images.append(rw)
            titles.append(self._title(f"re-weight: '{self.reweight_word}' x {self.scale:g}\n{self.reweight_prompt}", rw))
            status = f"{status}; {self.status}"
        self.status = status
        return draw_row(images, titles, size=size, fontsize=6, title_lines=3 if self.describe else 2)

    def widget(self, step: float = 0.1, scales: Sequence[float] = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)):
        """Sliders for tau_c and tau_s (``step`` apart) and, with a re-weighted word, for ``c`` (over
        ``scales``), a status line and the view; cached values show at once, others are generated (the
        status line says so while it works)."""
        import ipywidgets as W

        slider = dict(min=0.0, max=1.0, step=step, continuous_update=False, readout_format=".1f")
        cross = W.FloatSlider(value=self.cross, description="τ_c (cross)", **slider)
        self_ = W.FloatSlider(value=self.self_, description="τ_s (self)", **slider)
        rows = [[W.Label("word swap:"), cross, self_]]
        c = None
        if self.reweight_word is not None:
            options = sorted({self.scale_key(v) for v in scales} | {self.scale})
            c = W.SelectionSlider(options=options, value=self.scale, description="c",
                                  continuous_update=False)
            rows.append([W.Label(f"re-weight '{self.reweight_word}':"), c])

        def value_c():
            return None if c is None else c.value

        return slider_view(rows, lambda: self.pending(cross.value, self_.value, value_c()),
                           lambda: self.figure(cross.value, self_.value, value_c()), lambda: self.status)
