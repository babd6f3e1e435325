"""Plug-and-Play's two thresholds (Tumanyan et al., CVPR 2023; notebook 03) as sliders: the fraction
of the steps with the source's decoder features injected (tau_f) and the fraction with its
self-attention queries and keys (tau_A).

The logic is :meth:`PnPSliders.select` (a plain callback the tests drive): a translation is looked up
when it was made before and generated (then kept) otherwise. Translations are cached by their **step
windows** (``PnPConfig.step_windows``), not by the fractions, so two fractions that inject for the
same steps are the same image. :meth:`PnPSliders.figure` draws a view as a static figure;
:meth:`PnPSliders.widget` wires ipywidgets to the callback with a status line.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Iterable

from ..inversion import ddim_invert
from ..methods.pnp import PnPConfig, pnp_translate
from ._view import draw_row, slider_view


class PnPSliders:
    """Translations of ``image`` to ``target_prompt`` for chosen (tau_f, tau_A), all from its DDIM
    inversion (``trajectory``, computed with ``source_prompt`` when None).

    ``config``: the other options (a :class:`PnPConfig`; its two fractions are the default view).
    ``images``: translations made before with the same trajectory, steps and options,
    {(tau_f, tau_A): image}, shown at once; :meth:`precompute` generates more. ``describe(image) -> str``
    adds a line under the translation (e.g. what the oracle reads).
    """

    def __init__(self, pipe, image, target_prompt: str, source_prompt: str = "", num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, trajectory=None, config: PnPConfig | None = None,
                 images: dict | None = None, describe: Callable | None = None):
        self.pipe, self.image, self.target_prompt, self.source_prompt = pipe, image, target_prompt, source_prompt
        self.steps, self.guidance_scale, self.describe = num_inference_steps, guidance_scale, describe
        self.config = config or PnPConfig()
        self.trajectory = trajectory or ddim_invert(pipe, image, source_prompt, num_inference_steps, 1.0,
                                                    progress=False)
        self.cache: dict[tuple[int, int], object] = {}
        for (f, a), im in (images or {}).items():
            self.cache[self.key(f, a)] = im
        self.feature, self.attention = self.config.feature_steps, self.config.attention_steps
        self.current = None
        self.status = "ready"

    def config_for(self, feature: float, attention: float) -> PnPConfig:
        return replace(self.config, feature_steps=float(feature), attention_steps=float(attention))

    def key(self, feature: float, attention: float) -> tuple[int, int]:
        """The step windows: (steps with the source's features, steps with its queries and keys)."""
        w = self.config_for(feature, attention).step_windows(self.steps)  # checks the fractions
        return w["feature"], w["attention"]

    def label(self, feature: float, attention: float) -> str:
        f, a = self.key(feature, attention)
        return f"τ_f = {feature:g} ({f} of {self.steps} steps), τ_A = {attention:g} ({a} of {self.steps})"

    def select(self, feature: float | None = None, attention: float | None = None):
        """The translation for these fractions (a ``ValueError`` outside [0, 1]); sets ``status``."""
        feature = self.feature if feature is None else float(feature)
        attention = self.attention if attention is None else float(attention)
        key = self.key(feature, attention)
        if key in self.cache:
            self.status = f"{self.label(feature, attention)}: looked up"
        else:
            t = time.perf_counter()
            self.cache[key] = pnp_translate(self.pipe, self.image, self.target_prompt, self.source_prompt,
                                            self.config_for(feature, attention), self.steps, self.guidance_scale,
                                            trajectory=self.trajectory, progress=False)[1]
            self.status = f"{self.label(feature, attention)}: generated in {time.perf_counter() - t:.1f} s"
        self.feature, self.attention, self.current = feature, attention, self.cache[key]
        return self.current

    def precompute(self, pairs: Iterable[tuple[float, float]]) -> None:
        """Generate the (tau_f, tau_A) pairs not cached yet."""
        for f, a in pairs:
            if self.key(f, a) not in self.cache:
                self.select(f, a)
        self.status = "ready"

    def pending(self, feature: float, attention: float) -> str | None:
        """What the status line says while a translation is computed (None when it is cached)."""
        if self.key(feature, attention) in self.cache:
            return None
        return f"{self.label(feature, attention)}: generating ({self.steps} DDIM steps) ..."

    def figure(self, feature: float | None = None, attention: float | None = None, size: float = 2.6):
        """The view as a matplotlib figure: the source beside its translation at (tau_f, tau_A) (the
        current values where not given)."""
        im = self.select(feature, attention)
        title = f"{self.label(self.feature, self.attention)}\n{self.target_prompt}"
        if self.describe:
            title += f"\n{self.describe(im)}"
        return draw_row([self.image, im], ["source", title], size=size, fontsize=6,
                        title_lines=3 if self.describe else 2)

    def widget(self, step: float = 0.1):
        """Sliders for tau_f and tau_A (``step`` apart), a status line and the view; cached pairs show
        at once, others are generated (the status line says so while it works)."""
        import ipywidgets as W

        slider = dict(min=0.0, max=1.0, step=step, continuous_update=False, readout_format=".1f")
        feature = W.FloatSlider(value=self.feature, description="τ_f (features)", **slider)
        attention = W.FloatSlider(value=self.attention, description="τ_A (q, k)", **slider)
        return slider_view([[feature, attention]], lambda: self.pending(feature.value, attention.value),
                           lambda: self.figure(feature.value, attention.value), lambda: self.status)
