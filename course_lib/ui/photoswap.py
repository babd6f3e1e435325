"""Sliders for Photoswap's three step counts (Gu et al., NeurIPS 2023; notebook 04): how many of the
first steps the target takes the source's self-attention maps (lambda_M), cross-attention maps
(lambda_A) and self-attention outputs (lambda_phi).

The logic is :meth:`PhotoswapSliders.select` (a plain callback the tests drive): a swap is looked up
when it was made before and generated (then kept) otherwise, and ``status`` says which.
:meth:`PhotoswapSliders.figure` draws a view as a static figure; :meth:`PhotoswapSliders.widget` wires
ipywidgets to the callback with a status line."""
from __future__ import annotations

import time
from typing import Callable

from ..methods.photoswap import PhotoswapConfig, photoswap
from ._view import draw_row, slider_view


class PhotoswapSliders:
    """Re-run a swap ``source_prompt`` -> ``target_prompt`` (same source latent) for chosen lambda_M,
    lambda_A, lambda_phi; results are cached in ``cache`` {(lambda_M, lambda_A, lambda_phi): image}.

    ``describe(image) -> str`` adds a line under the target's title (e.g. what the oracle reads)."""

    def __init__(self, pipe, source_prompt: str, target_prompt: str, num_inference_steps: int, latents,
                 uncond_embeddings=None, guidance_scale: float = 7.5, local_blend=None,
                 describe: Callable | None = None):
        self.pipe, self.source_prompt, self.target_prompt = pipe, source_prompt, target_prompt
        self.steps, self.latents, self.uncond = num_inference_steps, latents, uncond_embeddings
        self.guidance_scale, self.local_blend, self.describe = guidance_scale, local_blend, describe
        self.cache: dict[tuple[int, int, int], object] = {}
        self.current = None
        self.key = tuple(PhotoswapConfig().steps(num_inference_steps).values())  # the paper's lambdas, scaled
        self.status = "ready"

    def config(self, lambda_M: int, lambda_A: int, lambda_phi: int) -> PhotoswapConfig:
        """The swap's configuration (a ``ValueError`` for counts that are no whole numbers >= 0 or
        exceed the run's steps)."""
        cfg = PhotoswapConfig(lambda_M, lambda_A, lambda_phi, local_blend=self.local_blend)
        cfg.steps(self.steps)  # checks the counts against the run
        return cfg

    def select(self, lambda_M: int, lambda_A: int, lambda_phi: int):
        """The target image for these step counts (a ``ValueError`` beyond the step count); sets
        ``status`` (looked up, or generated in how many seconds)."""
        key = (int(lambda_M), int(lambda_A), int(lambda_phi))
        cfg = self.config(*key)
        label = "λ_M = {}, λ_A = {}, λ_φ = {}".format(*key)
        if key in self.cache:
            self.status = f"{label}: looked up"
        else:
            t = time.perf_counter()
            self.cache[key] = photoswap(self.pipe, self.source_prompt, self.target_prompt, cfg, num_inference_steps=self.steps,
                                        guidance_scale=self.guidance_scale, latents=self.latents,
                                        uncond_embeddings=self.uncond, progress=False)[1]
            self.status = f"{label}: generated in {time.perf_counter() - t:.1f} s"
        self.key, self.current = key, self.cache[key]
        return self.current

    def pending(self, key: tuple[int, int, int]) -> str | None:
        """What the status line says while a swap is computed (None when it is cached)."""
        if tuple(int(k) for k in key) in self.cache:
            return None
        return f"generating the swap ({self.steps} DDIM steps, source and target) ..."

    def figure(self, lambda_M: int | None = None, lambda_A: int | None = None, lambda_phi: int | None = None,
               source_image=None, size: float = 2.4):
        """The view as a matplotlib figure: the source (when given) and the target at these counts (the
        current ones where not given)."""
        key = [k if v is None else v for k, v in zip(self.key, (lambda_M, lambda_A, lambda_phi))]
        im = self.select(*key)
        title = "target: λ_M = {}, λ_A = {}, λ_φ = {}".format(*self.key)
        if self.describe:
            title += f"\n{self.describe(im)}"
        images, titles = ([source_image], ["source"]) if source_image is not None else ([], [])
        return draw_row([*images, im], [*titles, title], size=size, fontsize=7, title_lines=2 if self.describe else 1)

    def widget(self, source_image=None):
        """Integer sliders for the three counts (0 to the run's steps), a status line and the view;
        cached settings show at once, others are generated (the status line says so while it works)."""
        import ipywidgets as W

        sliders = [W.IntSlider(value=v, min=0, max=self.steps, description=name, continuous_update=False)
                   for name, v in zip(("λ_M", "λ_A", "λ_φ"), self.key)]

        def values():
            return tuple(s.value for s in sliders)

        return slider_view([sliders], lambda: self.pending(values()),
                           lambda: self.figure(*values(), source_image=source_image), lambda: self.status)
