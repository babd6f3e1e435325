"""Paint by Example's inference: the inputs checked, the reference encoded, the masked image and the
mask as extra input channels of the course's one denoising loop (:func:`course_lib.sampling.denoise`),
and painting a crop around a small mask at the model's full resolution.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from ... import checks
from ...sampling import decode, denoise, encode, to_pil


# ----------------------------------------------------------------------------- inputs
def model_size(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def check_image(pipe, image, what: str = "source image") -> Image.Image:
    """The source as an RGB PIL image of the model's size (:func:`course_lib.checks.image`: any PIL mode,
    uint8 0..255 or float 0..1 arrays and tensors); a wrong size is an error, not a resize."""
    return checks.pipe_image(pipe, image, what)


def check_reference(reference) -> Image.Image:
    """Any image :func:`course_lib.checks.image` accepts, of any size, as RGB (transparent pixels laid
    over white); :func:`encode_reference` squeezes the whole of it into the image encoder's square input
    (as in training and in the paper's code; not a centre crop, which would cut the sides off a wide
    object)."""
    ref = checks.image(reference, None, "reference")
    if min(ref.size) < 4:
        raise ValueError(f"the reference is {ref.size[0]}x{ref.size[1]}: too small to show an object")
    return ref


def check_mask(mask, size: int) -> np.ndarray:
    """A mask as a bool array (True = repaint), read by :func:`course_lib.checks.mask` (PIL of any mode,
    bool, 0/1 or 0..255 integers, 0..1 floats); it must have the image's size and mark a pixel."""
    return checks.mask(mask, size, "mask")


# ----------------------------------------------------------------------------- inference
@torch.no_grad()
def encode_reference(pipe, reference, batch: int = 1):
    """(condition tokens, null vector) of the reference: batch x tokens x width each."""
    ref = check_reference(reference)
    proc = pipe.feature_extractor
    side = getattr(proc, "crop_size", None) or {}
    if side.get("height") and side.get("width"):  # squeeze the whole reference in, as training does
        ref = ref.resize((side["width"], side["height"]), Image.BICUBIC)
    px = proc(images=ref, return_tensors="pt").pixel_values
    enc = pipe.image_encoder
    dtype = next(enc.parameters()).dtype
    cond, null = enc(px.to(pipe.unet.device, dtype), return_uncond_vector=True)
    return cond.expand(batch, -1, -1), null.to(cond.dtype).expand(batch, cond.shape[1], -1)


@torch.no_grad()
def mask_inputs(pipe, image, mask: np.ndarray):
    """(keep mask at latent size, masked-image latent) — as diffusers' pipeline prepares them."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    keep = torch.from_numpy(~mask).float()[None, None]
    masked = (x * keep).to(device, dtype)
    lat = pipe.vae.encode(masked).latent_dist.mode() * pipe.vae.config.scaling_factor
    keep_small = torch.nn.functional.interpolate(keep, size=lat.shape[-2:]).to(device, dtype)
    return keep_small, lat


@torch.no_grad()
def paint_by_example(pipe, image, mask, reference, num_inference_steps: int = 50, guidance_scale: float = 5.0,
                     num_images: int = 1, generator: torch.Generator | None = None, latents=None,
                     blend_known: bool = False, progress: bool = False, output: str = "pil",
                     init_image=None, strength: float = 1.0):
    """Repaint ``mask`` of ``image`` with the object of ``reference``.

    ``guidance_scale`` s: eps(v) + s (eps(c) - eps(v)) with the learned null vector v (paper: s = 5).
    ``num_images`` samples from different noise (the diversity figure). Same loop as diffusers'
    ``PaintByExamplePipeline.__call__`` (with DDIM), and runs the naive variant too.
    ``blend_known``: after every step, replace the latent outside the mask by the source's latent
    noised to that step (blended latent diffusion), so the known region is kept even where the model
    has not learned to keep it. Off by default: the paper and diffusers' pipeline rely on the model.
    ``init_image`` (one image, or one per sample) with ``strength`` < 1: start from its latent noised to the
    step where a fraction ``strength`` of the schedule is left (SDEdit inside the mask) instead of from pure
    noise (``latents``, or the generator's draw, is then that noise); the model's masked-image input is still
    ``image``'s. :func:`paint_by_example_zoomed` uses it to repaint its result at the model's own scale.
    """
    image = check_image(pipe, image)
    m = check_mask(mask, image.size[0])
    num_images = checks.steps(num_images, "num_images")
    device, dtype = pipe.unet.device, pipe.unet.dtype
    # 1. the condition: the reference's token(s), and the learned null vector for guidance
    cond, null = encode_reference(pipe, reference, num_images)
    guided = checks.is_guided(guidance_scale)
    # 2. the inpainting inputs: masked-image latent and keep-mask, as extra UNet input channels
    keep, masked_lat = mask_inputs(pipe, image, m)
    extra = torch.cat([masked_lat.expand(num_images, -1, -1, -1), keep.expand(num_images, -1, -1, -1)], 1)
    # 3. the starting latents
    f = pipe.vae_scale_factor
    shape = (num_images, pipe.vae.config.latent_channels, image.size[1] // f, image.size[0] // f)
    if latents is None:
        latents = torch.randn(shape, generator=generator, dtype=torch.float32)
    z = (latents.to(device, dtype) * pipe.scheduler.init_noise_sigma)
    start = 0
    strength = checks.fraction(strength, "strength", open_low=True)
    if init_image is not None and strength < 1:  # SDEdit: the init image's latent, noised to the start step
        inits = init_image if isinstance(init_image, (list, tuple)) else [init_image] * num_images
        if len(inits) != num_images:
            raise ValueError(f"init_image: {len(inits)} images for num_images={num_images}")
        z0 = encode(pipe, [check_image(pipe, im, "init_image") for im in inits]).to(device, dtype)
        pipe.scheduler.set_timesteps(checks.steps(num_inference_steps), device=device)
        start = min(num_inference_steps - 1, int(round((1 - strength) * num_inference_steps)))
        z = pipe.scheduler.add_noise(z0, latents.to(device, dtype), pipe.scheduler.timesteps[start:start + 1])
    keep_known = None
    if blend_known:  # after each step, the source's latent noised to the next step outside the mask
        x_src = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        z_src = pipe.vae.encode(x_src.to(device, dtype)).latent_dist.mode() * pipe.vae.config.scaling_factor
        noise = latents.to(device, dtype)

        def keep_known(i, t, z):
            timesteps = pipe.scheduler.timesteps
            known = z_src if i + 1 == len(timesteps) else pipe.scheduler.add_noise(z_src, noise, timesteps[i + 1:i + 2])
            return keep * known + (1 - keep) * z
    # 4. the denoising loop (the course's one loop, with the extra channels)
    z = denoise(pipe, z, cond.to(dtype), null.to(dtype) if guided else None, num_inference_steps, guidance_scale,
                extra_channels=extra, callback=keep_known, progress=progress, desc="Paint by Example", start_index=start)
    # 5. decode
    if output == "latent":
        return z
    img = decode(pipe, z)
    return img if output == "tensor" else to_pil(img)


# The crop :func:`paint_by_example_zoomed` paints, as a multiple of the mask box's longer side. Chosen on
# bench pbe-val's validation cases (shape+colour in the mask, guidance 5): 75% painting the whole image;
# crops of 1.5, 1.75, 2 and 2.5 times: 75%, 86.25%, 80%, 77.5%. On 80 more held-out cases
# (``bench.pbe.validation(guidance=(5.0,), offsets=(85_000, 100_000), context=...)``): 77.5% whole;
# 82.5%, 86.25%, 82.5% for 1.5, 1.75, 2.
ZOOM_CONTEXT = 1.75
MAX_ZOOM = 4  # a crop is at least a quarter of the image's side: more zoom would leave too little detail


def zoom_box(mask: np.ndarray, context: float = ZOOM_CONTEXT) -> tuple[int, int, int, int]:
    """The square (x0, y0, x1, y1) that :func:`paint_by_example_zoomed` paints: ``context`` times the longer
    side of ``mask``'s box (at least 1 / :data:`MAX_ZOOM` of the image's side, at most all of it), centred on
    the box and moved to lie inside the image."""
    if not context >= 1:
        raise ValueError(f"context must be at least 1 (the crop must hold the mask's box), got {context}")
    size = mask.shape[0]
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    side = int(min(size, max(round(max(x1 - x0, y1 - y0) * context), -(-size // MAX_ZOOM))))
    bx = int(round(min(max((x0 + x1 - side) / 2, 0), size - side)))
    by = int(round(min(max((y0 + y1 - side) / 2, 0), size - side)))
    return bx, by, bx + side, by + side


def paint_by_example_zoomed(pipe, image, mask, reference, num_inference_steps: int = 50, guidance_scale: float = 5.0,
                            context: float = ZOOM_CONTEXT, feather: float = 0.0, repaint: float = 0.0,
                            **kwargs) -> list[Image.Image]:
    """:func:`paint_by_example` on a crop around the mask at the model's full resolution (what inpainting
    tools call "only masked"): crop :func:`zoom_box`, enlarge it to the model's size, paint it, shrink the
    result back and put its masked pixels into the image. Outside the mask the source's pixels stay as
    they are. A small mask thereby gets as many latent cells as a large object has: with tiny-sd's
    16x16 latents a small star or cross otherwise gets about 5x5 of them to be drawn in. A mask whose
    crop is the whole image is painted as by :func:`paint_by_example`. ``kwargs`` go to it (``num_images``,
    ``generator``, ``latents``, ``blend_known``, ``progress``); the result is PIL images.

    The enlarged crop shows the background at a scale no training image had, and the model does not
    continue a texture there: a checkered background comes out flat around the new object, a visible
    rectangle. Two remedies, both off by default (``bench pbe`` measures them):

    - ``feather`` (pixels): also paint the whole image from the same noise, and inside the mask blend the
      two, the whole-image painting at the mask's edge and the zoomed one from ``feather`` pixels in;
    - ``repaint`` (a fraction of the schedule, in (0, 1)): paint the zoomed result again on the whole image,
      at the model's own scale, starting from it noised to where ``repaint`` of the schedule is left
      (``init_image`` / ``strength`` of :func:`paint_by_example`), the source's pixels put back outside.
    """
    if kwargs.get("output", "pil") != "pil":
        raise ValueError("paint_by_example_zoomed returns PIL images; use paint_by_example for latents or tensors")
    feather = checks.fraction(feather, "feather", high=float("inf"), open_high=True)
    repaint = checks.fraction(repaint, "repaint", open_high=True)
    image = check_image(pipe, image)
    m = check_mask(mask, image.size[0])
    size = image.size[0]
    x0, y0, x1, y1 = box = zoom_box(m, context)
    inside = m[y0:y1, x0:x1]
    if (feather or repaint) and kwargs.get("latents") is None:  # one noise draw for every painting below
        n, f = kwargs.get("num_images", 1), pipe.vae_scale_factor
        kwargs["latents"] = torch.randn((n, pipe.vae.config.latent_channels, size // f, size // f),
                                        generator=kwargs.get("generator"), dtype=torch.float32)
    crop = image.crop(box).resize((size, size), Image.LANCZOS)
    crop_mask = np.asarray(Image.fromarray(inside).resize((size, size), Image.NEAREST))
    painted = paint_by_example(pipe, crop, crop_mask, reference, num_inference_steps, guidance_scale, **kwargs)
    src = np.asarray(image)
    out = []
    for p in painted:
        small = np.asarray(p.resize((x1 - x0, y1 - y0), Image.LANCZOS))
        arr = src.copy()
        arr[y0:y1, x0:x1][inside] = small[inside]
        out.append(arr)
    if feather:  # the whole-image painting at the mask's edge, the zoomed one inside
        whole = paint_by_example(pipe, image, m, reference, num_inference_steps, guidance_scale, **kwargs)
        alpha = np.clip(ndimage.distance_transform_edt(m) / feather, 0, 1)[..., None]
        out = [np.where(m[..., None], np.round(alpha * a + (1 - alpha) * np.asarray(w)), src).astype(np.uint8)
               for a, w in zip(out, whole)]
    if repaint:  # the whole result painted again at the model's scale, from part of the way down
        again = paint_by_example(pipe, image, m, reference, num_inference_steps, guidance_scale,
                                 init_image=[Image.fromarray(a) for a in out], strength=repaint, **kwargs)
        out = [np.where(m[..., None], np.asarray(a), src) for a in again]
    return [Image.fromarray(a) for a in out]


def mask_image(mask: np.ndarray) -> Image.Image:
    """A bool mask as the white-on-black PIL image diffusers' pipeline takes."""
    return Image.fromarray((np.asarray(mask, bool) * 255).astype(np.uint8), "L")
