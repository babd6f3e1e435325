"""DragDiffusion (Shi et al., CVPR 2024): move the content at handle points h_i to target points g_i.

The algorithm, as in the paper (Sec. 3, Fig. 2) and its reference code:

1. **Identity-preserving fine-tuning**: a LoRA on the UNet's attention projections, trained with the
   denoising loss on the input image (80 steps, rank 16 scaled to the UNet's width, lr 5e-4, batch
   4), so that inverting and regenerating keeps the image's identity. A copy of the UNet; the
   pipeline is not modified.
2. **DDIM inversion** of the image to step t (35 of 50): z_t.
3. **Diffusion latent optimisation** of z_t alone, alternating
   - *motion supervision* (Eq. 3): with F the UNet decoder block's feature map (upsampled to the
     supervision resolution) and d_i = (g_i - h_i) / ||g_i - h_i||,
       L = sum_i sum_{q in Omega(h_i, r1)} || F_{q + d_i}(z) - sg(F_q(z)) ||_1
           + lambda * || (z_{t-1}(z) - z_{t-1}(z_t^0)) * (1 - M) ||_1 ;
     the stop-gradient reference sg(F_q) makes the patch at q + d_i take the handle's content,
     so the content moves one (supervision) pixel towards g_i per step; M is the editable region.
   - *point tracking* (Eq. 4): each handle moves to the nearest neighbour (L1 on features) of its
     original feature F_{h_i^0}(z_t^0) within the square of radius r2 around it.
   - stop when every handle is within ``stop_distance`` of its target, or after ``max_iterations``;
   - (the course's addition) each element of z_t stays within ``max_drift`` of its inversion.
4. **Reference-latent control**: denoise the optimised latent together with z_t; in the decoder's
   self-attention the edited branch's keys and values are the reference's, SDPA(q_edit, k_ref,
   v_ref) — a :class:`~course_lib.attention.Controller` (on tiny-sd in the full-resolution decoder
   layers only: ``DragConfig.control_levels``).

Points are (x, y) in the image's pixels (x to the right, y down, as a click gives them); the
editable-region mask is an H x W boolean array, True where the image may change.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import checks
from ..attention import BatchLayout, Controller, Layer, controlling, unet_layers
from ..attention.features import FeatureStore, resolve_module
from ..finetune import check_image, fit_unet, image_size, lora_copy, use_unet
from ..inversion import ddim_invert
from ..sampling import decode, denoise, encode, encode_text, to_pil


@dataclass
class DragConfig:
    """DragDiffusion's settings: the paper's and its reference code's, except where tiny-sd differs
    (said per field)."""

    use_lora: bool = True
    lora_steps: int = 80
    lora_rank: int | None = None  # None: 16 x the UNet's first width / 320 (reference code: 16 on SD 1.5; tiny-sd 4)
    lora_lr: float = 5e-4
    lora_batch: int = 4
    num_inference_steps: int = 50
    drag_step: int = 35  # t: invert this many of the steps, optimise z_t there
    feature_block: str = "up_blocks.1"  # output of the second decoder block
    # features upsampled to this x the image side; None: to 4 x the latent side, as the reference code (SD 1.5's
    # 64x64 latents -> 256 px at 512, scale 0.5). tiny-sd's VAE halves twice, not three times: scale 1.0
    supervision_scale: float | None = None
    r1: int = 1  # motion-supervision patch radius (supervision pixels)
    r2: int = 2  # point-tracking search radius (reference code: 3; tiny-sd's flat shapes let a wide search drift)
    lam: float = 0.1  # lambda, weight of the unmasked-region term
    lr: float = 0.05  # Adam on z_t (reference code: 0.01; at that rate tiny-sd's content barely moves in 80 steps)
    max_iterations: int = 80
    # each element of the optimised latent stays within this of z_t (None: unbounded, as the reference code, whose lr
    # 0.01 moves an element at most 0.8 in 80 steps). At lr 0.05 elements ran 3-4 away (tiny-sd's latents have std
    # 0.8), and a dragged object could come out in other colours (bench drag: a blue hexagon turned cyan and yellow)
    max_drift: float | None = 2.0
    tie_break: float = 0.0  # point tracking: near-ties go to the nearer pixel (0 = the paper's plain argmin)
    stop_distance: float = 1.0  # supervision pixels (reference code: 2 of 256 at 512); 1 on tiny-sd = 1 image px
    reference_control: bool = True
    control_places: Sequence[str] = ("up",)  # decoder self-attention layers
    # ... at these levels (times the latent was halved; None = all). The reference code controls SD 1.5's
    # layers 10-15, levels 0 and 1. A level-1 token of tiny-sd is 8x8 image pixels, as wide as half an
    # object, and there the control pulled a moved object's latent towards the background: it came out
    # in another colour, and the drag failed (2 of 16 validation drags; notebook 07, exercise 3).
    control_levels: Sequence[int] | None = (0,)
    guidance_scale: float = 1.0  # the reference code denoises without classifier-free guidance
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.drag_step <= self.num_inference_steps:
            raise ValueError(f"drag_step must be in 1..{self.num_inference_steps}, got {self.drag_step}")
        if self.r1 < 0 or self.r2 < 1:
            raise ValueError(f"need r1 >= 0 and r2 >= 1, got r1={self.r1}, r2={self.r2}")
        if self.supervision_scale is not None and self.supervision_scale <= 0:
            raise ValueError("supervision_scale must be positive (or None: 4 x the latent's side)")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError("lora_rank must be >= 1 (or None: scaled to the UNet's width)")
        if self.control_levels is not None and not all(isinstance(v, int) and v >= 0 for v in self.control_levels):
            raise ValueError(f"control_levels must be levels >= 0 (0 = full resolution) or None for all, "
                             f"got {self.control_levels!r}")
        if self.max_drift is not None and not self.max_drift > 0:
            raise ValueError(f"max_drift must be positive (or None: unbounded), got {self.max_drift!r}")
        if self.max_iterations < 0 or self.lora_steps < 0:
            raise ValueError("max_iterations and lora_steps must be >= 0")
        checks.steps(self.num_inference_steps)
        checks.guidance(self.guidance_scale)
        for name in ("lam", "tie_break", "stop_distance"):
            checks.non_negative(getattr(self, name), name)
        for name in ("lr", "lora_lr"):
            if not checks.non_negative(getattr(self, name), name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass
class DragResult:
    image: object  # the edited PIL image
    reconstruction: object  # the input regenerated from z_t with the same model and control
    handles: np.ndarray  # final tracked handle positions, image pixels (x, y)
    start_handles: np.ndarray
    targets: np.ndarray
    iterations: int
    losses: list[float] = field(default_factory=list)
    handle_paths: list[np.ndarray] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    unet: torch.nn.Module | None = field(default=None, repr=False)  # the LoRA copy (reuse it for another drag)


# ----------------------------------------------------------------------------- input checks
def check_points(handles, targets, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Handle and target lists as float arrays (n, 2) of (x, y); clear errors for bad input."""
    def as_points(name, points):
        p = np.asarray(points, dtype=float)
        if p.size == 0:
            raise ValueError(f"no {name} points given")
        if p.ndim == 1 and p.shape[0] == 2:
            p = p[None]
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(f"{name} points must be a list of (x, y) pairs, got an array of shape {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError(f"{name} points must be finite numbers")
        return p

    h, g = as_points("handle", handles), as_points("target", targets)
    if len(h) != len(g):
        raise ValueError(f"{len(h)} handle points but {len(g)} target points: each handle needs one target")
    for name, p in (("handle", h), ("target", g)):
        bad = [tuple(q) for q in p if not (0 <= q[0] <= size - 1 and 0 <= q[1] <= size - 1)]
        if bad:
            raise ValueError(f"{name} point(s) {bad} lie outside the {size}x{size} image "
                             f"(x and y must be in [0, {size - 1}])")
    return h, g


def check_mask(mask, size: int) -> np.ndarray | None:
    """The editable region as a bool (size, size) array (:func:`course_lib.checks.mask`: PIL of any mode,
    bool, 0/1 or 0..255 integers, 0..1 floats); None means the whole image may change."""
    if mask is None:
        return None
    return checks.mask(mask, size, "mask of the editable region (pass mask=None to let the whole image "
                                   "change, or mark the region to edit)")


def check_control_levels(unet, config: "DragConfig"):
    """Refuse a reference-latent control that would match no layer of this UNet (it would do nothing)."""
    if not config.reference_control or config.control_levels is None:
        return
    have = sorted({layer.level for layer in unet_layers(unet).values()
                   if layer.is_self and layer.place in config.control_places})
    if not set(config.control_levels) & set(have):
        raise ValueError(f"control_levels={tuple(config.control_levels)} match no self-attention layer of this UNet "
                         f"in {tuple(config.control_places)}: its levels there are {have} (0 = full resolution); "
                         f"pass control_levels=({have[0] if have else 0},), None for all, or reference_control=False")


def _object_frame(mask, direction):
    """(the object mask as bool, the unit drag direction, the unit direction 90 degrees from it)."""
    m = np.asarray(mask, bool)
    if not m.any():
        raise ValueError("the object mask is empty")
    d = np.asarray(direction, float)
    d = d / max(np.linalg.norm(d), 1e-9)
    return m, d, np.array([-d[1], d[0]])


def move_handles(mask, direction, inset: float = 3.0) -> np.ndarray:
    """Five handles for moving a flat object along ``direction`` ((dx, dy), any length), as a (5, 2)
    array of (x, y): its centroid, then points ``inset`` pixels inside its leading edge, its trailing
    edge and its two sides. Drag them all by the same vector.

    Why several: inside a flat shape the features around the centroid are nearly equal, so motion
    supervision there has almost no gradient and point tracking "arrives" while the content has moved
    only part of the way; a patch that reaches the leading edge pulls the object's feature into the
    background ahead of it (6 moves of 8 px on tiny-sd without LoRA: centroid alone 6.0% of the side
    from the target, centroid + leading point 3.5%). Parts of the object that no handle reaches are
    left behind: a wide cross moved by its centre and leading edge kept its arms in place and broke
    apart. With the trailing and side points too, the drag bench's 10 moves ended 3.0% of the side
    from the target instead of 6.1%, and 8 validation moves 1.3% instead of 2.1%.
    """
    m, d, perp = _object_frame(mask, direction)
    ys, xs = np.nonzero(m)
    centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    return np.stack([centroid, leading_edge(m, d) - inset * d, leading_edge(m, -d) + inset * d,
                     leading_edge(m, perp) - inset * perp, leading_edge(m, -perp) + inset * perp])


def stretch_handles(mask, direction, spread: float = 0.8) -> np.ndarray:
    """Handles for stretching a flat object along ``direction``: its leading edge
    (:func:`leading_edge`), then, where the object reaches there, the furthest points along the drag
    at ``spread`` x half the object's width to either side of it; (n, 2) array of (x, y), n <= 3.

    One point drags one patch of the edge: on tiny-sd the rest of the edge held it back, and the edge
    ended 5.2% of the side from its target on the drag bench's 10 stretches of 6 px (5.8% on 8
    validation stretches); with the two extra points 4.3% (4.8%). Keeping only points within 2 or 4 px
    of the leading edge (a triangle's tip alone) was no better on either set.
    """
    m, d, perp = _object_frame(mask, direction)
    lead = leading_edge(m, d)
    ys, xs = np.nonzero(m)
    pts = np.stack([xs + 0.5, ys + 0.5], 1)
    along, across = pts @ d, pts @ perp
    half = (across.max() - across.min()) / 2
    out = [lead]
    for sign in (-1, 1):
        line = np.abs(across - (lead @ perp + sign * spread * half)) < 1
        if line.any():
            a = along[line]
            out.append(pts[line][a >= a.max() - 1].mean(0))
    return np.stack(out)


def leading_edge(mask, direction) -> np.ndarray:
    """(x, y) of a mask's leading edge along ``direction``: the mean of its pixel centres within 1 px
    of the furthest one. Where a stretch's handle sits, and where the drag bench reads it back."""
    ys, xs = np.nonzero(np.asarray(mask, bool))
    px, py = xs + 0.5, ys + 0.5
    proj = px * direction[0] + py * direction[1]
    far = proj >= proj.max() - 1
    return np.array([px[far].mean(), py[far].mean()])


# ----------------------------------------------------------------------------- the two steps
def bilinear(feat: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Features (1, C, H, W) sampled at points (..., 2) given as (x, y) pixels -> (C, ...)."""
    h, w = feat.shape[-2:]
    grid = torch.stack([2 * points[..., 0] / max(w - 1, 1) - 1, 2 * points[..., 1] / max(h - 1, 1) - 1], -1)
    out = F.grid_sample(feat, grid.reshape(1, 1, -1, 2).to(feat.dtype), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.reshape(feat.shape[1], *points.shape[:-1])


def patch_offsets(r: int, device=None) -> torch.Tensor:
    """The (2r+1)^2 offsets (x, y) of the square patch Omega(., r)."""
    a = torch.arange(-r, r + 1, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(a, a, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2)


def motion_supervision_loss(feat: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, r1: int,
                            stop_distance: float = 0.0) -> torch.Tensor:
    """sum_i sum_{q in Omega(h_i, r1)} |F(q + d_i) - sg(F(q))|_1, the first term of Eq. 3.

    ``feat`` (1, C, H, W) at the supervision resolution, points (n, 2) in its pixels. Handles within
    ``stop_distance`` of their target are left out (they have arrived).
    """
    loss = feat.new_zeros(())
    off = patch_offsets(r1, feat.device)
    for h, g in zip(handles, targets):
        v = g - h
        dist = torch.linalg.norm(v)
        if dist <= max(stop_distance, 1e-6):
            continue
        d = v / dist
        q = h[None] + off
        reference = bilinear(feat, q).detach()  # sg(F_q)
        moved = bilinear(feat, q + d)
        loss = loss + (moved - reference).abs().mean() * len(off)
    return loss


@torch.no_grad()
def track_points(feat0: torch.Tensor, feat: torch.Tensor, handles: torch.Tensor, start_handles: torch.Tensor,
                 r2: int, tie_break: float = 0.0) -> torch.Tensor:
    """Eq. 4: each handle -> the pixel within radius r2 (square) of it whose feature in ``feat`` is
    nearest (L1) to the original handle's feature in ``feat0``.

    ``tie_break`` > 0 adds ``tie_break * |F_{h_i^0}|_1`` per pixel moved, so that in a flat region
    (where many pixels match almost equally) the handle stays rather than drifting ahead of the
    content; a clearly better match still wins."""
    h_img, w_img = feat.shape[-2:]
    new = handles.clone()
    for i, (h, h0) in enumerate(zip(handles, start_handles)):
        f0 = bilinear(feat0, h0[None])[:, 0]  # (C,)
        cx, cy = int(round(h[0].item())), int(round(h[1].item()))
        x0, x1 = max(0, cx - r2), min(w_img - 1, cx + r2)
        y0, y1 = max(0, cy - r2), min(h_img - 1, cy + r2)
        window = feat[0, :, y0:y1 + 1, x0:x1 + 1]
        dist = (window - f0[:, None, None]).abs().sum(0)
        if tie_break > 0:  # near-ties go to the pixel nearer the current handle
            yy, xx = torch.meshgrid(torch.arange(y0, y1 + 1, device=feat.device),
                                    torch.arange(x0, x1 + 1, device=feat.device), indexing="ij")
            moved = ((xx - h[0]) ** 2 + (yy - h[1]) ** 2).sqrt()
            dist = dist + tie_break * f0.abs().sum() * moved
        k = int(dist.argmin())
        new[i, 0], new[i, 1] = x0 + k % dist.shape[1], y0 + k // dist.shape[1]
    return new


class ReferenceLatentControl(Controller):
    """Reference-latent control: in the self-attention of ``places``, every branch attends with its
    own queries to the *reference* branch's keys and values: SDPA(q_edit, k_ref, v_ref).

    Batch layout: branch 0 is the reference (the inverted input), branches 1.. are edits. ``levels``
    keeps only the layers at those levels (0 = the latent's full resolution; None = every level).
    """

    def __init__(self, places: Sequence[str] = ("up",), start_step: int = 0, levels: Sequence[int] | None = None):
        super().__init__()
        self.places, self.start_step = tuple(places), start_step
        self.levels = None if levels is None else tuple(levels)

    def applies(self, layer: Layer) -> bool:
        return layer.is_self and layer.place in self.places and (self.levels is None or layer.level in self.levels)

    def edit_qkv(self, layer: Layer, q, k, v):
        if self.step < self.start_step:
            return q, k, v
        return q, self.layout.copy_source(k), self.layout.copy_source(v)


# ----------------------------------------------------------------------------- the driver
def supervision_scale(pipe, config: DragConfig) -> float:
    """Side of the supervision grid over the image's: ``config.supervision_scale``, or 4 x the latent's
    side (the reference code's 256 px for SD 1.5 at 512 px: 0.5; tiny-sd: 1.0)."""
    if config.supervision_scale is not None:
        return config.supervision_scale
    return 4 / pipe.vae_scale_factor


def lora_rank(unet, config: DragConfig) -> int:
    """``config.lora_rank``, or the reference code's rank 16 scaled by the UNet's first block width over
    SD 1.5's 320 (rounded up): 16 on SD 1.5 and 2.1, 4 on tiny-sd. On tiny-sd rank 16 ties the model
    closer to its input (16 validation drags, supervision at 1.0: the content ended 3.9% of the side
    from the target at rank 16, 3.6% at rank 4)."""
    if config.lora_rank is not None:
        return config.lora_rank
    return max(1, -(-16 * unet.config.block_out_channels[0] // 320))


def fit_identity_lora(pipe, image, prompt: str = "", config: DragConfig | None = None, progress: bool = True):
    """Step 1: a LoRA copy of the UNet fitted to the image (returns (unet, losses))."""
    config = config or DragConfig()
    image = check_image(pipe, image)
    unet = lora_copy(pipe.unet, rank=lora_rank(pipe.unet, config), seed=config.seed)
    losses = fit_unet(pipe, unet, encode(pipe, image), encode_text(pipe, prompt), config.lora_steps, config.lora_lr,
                      config.lora_batch, torch.Generator().manual_seed(config.seed), desc="DragDiffusion: LoRA",
                      progress=progress)
    unet.requires_grad_(False)
    return unet, losses


def _features(store: FeatureStore, name: str, size: int) -> torch.Tensor:
    f = store.features[name].float()
    return F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)


def optimize_latent(pipe, z_t: torch.Tensor, t, cond: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
                    mask: np.ndarray | None, config: DragConfig, progress: bool = True):
    """Step 3 on the supervision grid: returns (optimised z_t, final handles, iterations, losses, paths)."""
    size = int(round(image_size(pipe) * supervision_scale(pipe, config)))
    unet = pipe.unet
    store = FeatureStore([config.feature_block], detach=False)
    resolve_module(unet, config.feature_block)
    m_lat = None
    if mask is not None:
        m = torch.from_numpy(mask).float()[None, None]
        m_lat = F.adaptive_max_pool2d(m, z_t.shape[-2:]).to(z_t.device)
    start = handles.clone()
    losses, paths = [], [handles.cpu().numpy().copy()]
    it = 0
    with controlling(unet, store, BatchLayout(1, guidance=False), num_steps=1):  # one timestep, t, throughout
        with torch.no_grad():
            eps0 = unet(z_t, t, encoder_hidden_states=cond).sample
            prev0 = pipe.scheduler.step(eps0, t, z_t).prev_sample.float()
            feat0 = _features(store, config.feature_block, size)
        z0 = z_t.detach().float()
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=config.lr)
        bar = tqdm(range(config.max_iterations + 1), desc="DragDiffusion: latent", disable=not progress, leave=False)
        with torch.enable_grad():
            for it in bar:
                eps = unet(z.to(z_t.dtype), t, encoder_hidden_states=cond).sample
                feat = _features(store, config.feature_block, size)
                if it > 0:
                    handles = track_points(feat0, feat.detach(), handles, start, config.r2, config.tie_break)
                    paths.append(handles.cpu().numpy().copy())
                if bool((torch.linalg.norm(handles - targets, dim=-1) <= config.stop_distance).all()) \
                        or it == config.max_iterations:
                    break
                loss = motion_supervision_loss(feat, handles, targets, config.r1, config.stop_distance)
                if m_lat is not None and config.lam > 0:
                    prev = pipe.scheduler.step(eps, t, z).prev_sample.float()
                    loss = loss + config.lam * ((prev - prev0) * (1 - m_lat)).abs().sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if config.max_drift is not None:  # a trust region around the inverted latent
                    with torch.no_grad():
                        z.copy_(z0 + (z - z0).clamp(-config.max_drift, config.max_drift))
                losses.append(loss.item())
    return z.detach().to(z_t.dtype), handles, it, losses, paths


def denoise_from(pipe, latents: torch.Tensor, cond: torch.Tensor, start_index: int, num_inference_steps: int,
                 guidance_scale: float = 1.0, controllers: Sequence[Controller] = ()) -> torch.Tensor:
    """DDIM from the step index ``start_index`` (timestep ``timesteps[start_index]``) to the end, with
    attention controllers told the step; returns the final latents (the course's one loop,
    :func:`course_lib.sampling.denoise`, started late)."""
    n = latents.shape[0]
    cond = cond.expand(n, -1, -1) if cond.shape[0] == 1 else cond
    uncond = encode_text(pipe, [""] * n) if checks.is_guided(guidance_scale) else None
    return denoise(pipe, latents, cond, uncond, num_inference_steps, guidance_scale, start_index=start_index,
                   controllers=list(controllers))


def drag_edit(pipe, image, handles, targets, mask=None, prompt: str = "", config: DragConfig | None = None,
              lora_unet: torch.nn.Module | None = None, progress: bool = True) -> DragResult:
    """Drag the content at ``handles`` to ``targets`` ((x, y) image pixels), changing only ``mask``.

    ``lora_unet``: a UNet from :func:`fit_identity_lora` for this image (fitted here when
    ``config.use_lora`` and not given). Returns a :class:`DragResult`.
    """
    config = config or DragConfig()
    image = check_image(pipe, image)
    size = image_size(pipe)
    h, g = check_points(handles, targets, size)
    mask = check_mask(mask, size)
    check_control_levels(pipe.unet, config)
    scale = supervision_scale(pipe, config)
    if (np.linalg.norm(h - g, axis=-1) * scale <= config.stop_distance).all():
        raise ValueError(f"every handle already lies within stop_distance={config.stop_distance} supervision "
                         f"pixels of its target: there is nothing to drag")
    seconds = {}
    t0 = time.perf_counter()
    unet = None
    if config.use_lora:
        unet = lora_unet if lora_unet is not None else fit_identity_lora(pipe, image, prompt, config, progress)[0]
    seconds["lora"] = time.perf_counter() - t0
    with use_unet(pipe, unet if unet is not None else pipe.unet):
        t1 = time.perf_counter()
        traj = ddim_invert(pipe, image, prompt, config.num_inference_steps, 1.0, progress=False)
        z_t = traj[config.drag_step]
        start_index = config.num_inference_steps - config.drag_step
        pipe.scheduler.set_timesteps(config.num_inference_steps, device=z_t.device)
        t = pipe.scheduler.timesteps[start_index]
        cond = encode_text(pipe, prompt)
        dev = z_t.device
        hs = torch.tensor(h * scale, dtype=torch.float32, device=dev)
        gs = torch.tensor(g * scale, dtype=torch.float32, device=dev)
        z_opt, hs_end, iters, losses, paths = optimize_latent(pipe, z_t, t, cond, hs, gs, mask, config, progress)
        t2 = time.perf_counter()
        ctls = [ReferenceLatentControl(config.control_places, levels=config.control_levels)] \
            if config.reference_control else []
        z0 = denoise_from(pipe, torch.cat([z_t, z_opt]), cond, start_index, config.num_inference_steps,
                          config.guidance_scale, ctls)
        recon, edited = to_pil(decode(pipe, z0))
        t3 = time.perf_counter()
    seconds.update(optimise=t2 - t1, denoise=t3 - t2, total=t3 - t0)
    return DragResult(image=edited, reconstruction=recon, handles=hs_end.cpu().numpy() / scale, start_handles=h,
                      targets=g, iterations=iters, losses=losses, handle_paths=[p / scale for p in paths],
                      seconds=seconds, unet=unet)
