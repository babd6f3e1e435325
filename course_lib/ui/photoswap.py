"""Sliders for Photoswap's three step counts. The logic is :meth:`PhotoswapSliders.select` (a plain
callback the tests drive); :meth:`PhotoswapSliders.widget` only wires ipywidgets to it."""
from __future__ import annotations

from ..methods.photoswap import PhotoswapConfig, photoswap
from .attention import show_beside


class PhotoswapSliders:
    """Re-run a swap (same source latent) for chosen lambda_M, lambda_A, lambda_phi; results are cached."""

    def __init__(self, pipe, source_prompt: str, target_prompt: str, num_inference_steps: int, latents,
                 uncond_embeddings=None, guidance_scale: float = 7.5, local_blend=None):
        self.pipe, self.source_prompt, self.target_prompt = pipe, source_prompt, target_prompt
        self.steps, self.latents, self.uncond = num_inference_steps, latents, uncond_embeddings
        self.guidance_scale, self.local_blend = guidance_scale, local_blend
        self.cache: dict[tuple[int, int, int], object] = {}
        self.current = None

    def select(self, lambda_M: int, lambda_A: int, lambda_phi: int):
        """The target image for these step counts (a ``ValueError`` beyond the step count)."""
        key = (int(lambda_M), int(lambda_A), int(lambda_phi))
        if key not in self.cache:
            cfg = PhotoswapConfig(*key, local_blend=self.local_blend)
            self.cache[key] = photoswap(self.pipe, self.source_prompt, self.target_prompt, cfg, num_inference_steps=self.steps,
                                        guidance_scale=self.guidance_scale, latents=self.latents,
                                        uncond_embeddings=self.uncond, progress=False)[1]
        self.current = self.cache[key]
        return self.current

    def widget(self, source_image=None):
        import ipywidgets as W

        sliders = {name: W.IntSlider(value=v, min=0, max=self.steps, description=name, continuous_update=False)
                   for name, v in PhotoswapConfig().steps(self.steps).items()}
        out = W.Output()

        def redraw(_=None):
            im = self.select(sliders["lambda_M"].value, sliders["lambda_A"].value, sliders["lambda_phi"].value)
            show_beside(out, source_image, im, "M {} A {} phi {}".format(*(s.value for s in sliders.values())),
                        size=2.4, image_title="source")

        for s in sliders.values():
            s.observe(redraw, names="value")
        redraw()
        return W.VBox([W.HBox(list(sliders.values())), out])
