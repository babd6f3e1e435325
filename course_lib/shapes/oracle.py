"""The oracle: read any Shapes World image back (rendered or generated) into objects and background.

How it decides, in order (every later quality figure of the course rests on this):

1. **Objects are saturated, backgrounds are not.** The image is upsampled 4x (bilinear, so that
   anti-aliased edges give sub-pixel boundaries); a pixel is object when its HSV saturation is
   >= 0.4 and its value >= 0.2. Connected regions smaller than 0.4% of the image are noise.
2. **Colour** is the nearest palette hue to each pixel's hue. A region whose pixels fall mostly
   (>= 25% each) into two colours is split per colour (two touching objects). A region whose median
   hue is more than 25 degrees from every palette hue has colour ``"unknown"``.
3. **Shape** is matched in a frame that removes position, scale, rotation and stretching: the
   region's pixel covariance is whitened, the outline's radius is sampled at 64 angles around the
   centroid, and this signature is compared with each shape's template signature at every rotation
   (circular shift). The nearest template wins. The shape is ``"unknown"`` -- unrecognisable --
   when the best match's RMS radius error exceeds ``UNKNOWN_DISTANCE`` (0.15 of the mean radius;
   on 622 isolated objects of rendered held-out scenes the worst was 0.072), when the runner-up is
   nearly as close (best / second-best > ``AMBIGUITY`` = 0.75; worst seen on renders 0.57, e.g. a
   small hexagon against a circle), or when the region is too small to read.
4. **Aspect** (tall / wide / regular) from the ratio of the region's vertical and horizontal extent,
   **size** from its area relative to the shape's template, **pattern** from the share of dark
   pixels inside it (stripes about 50%, dots about 15%).
5. **Background** from the pixels at least two pixels away from any object: a strong vertical trend
   is ``gradient``, a large residual spread is ``checkered``, else ``white`` or ``gray`` by brightness.
   Where unnamed scenery (:mod:`course_lib.shapes.scenery`) covers much of the picture -- no named
   background explains ``BACKGROUND_FIT`` of those pixels within ``SCENERY_TOL`` grey levels -- the
   background is the one that explains most of them (the sky between the clouds, the gaps in the clutter).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from . import vocab as V
from .world import SceneSpec, ObjectSpec, render

SAT_MIN, VAL_MIN = 0.4, 0.2
MIN_AREA_FRAC = 0.004
HUE_TOL = 25.0
UNKNOWN_DISTANCE = 0.15
AMBIGUITY = 0.75
N_ANGLES = 64
UPSAMPLE = 4


@dataclass
class SeenObject:
    shape: str
    color: str
    mask: np.ndarray  # bool HxW at the image's resolution
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area: int
    shape_distance: float  # RMS error of the best template match (relative radius)
    aspect: str = "regular"
    size: str = "medium"
    pattern: str = "plain"
    hue: float = 0.0
    scores: dict = field(default_factory=dict)  # template distance per shape

    @property
    def recognised(self) -> bool:
        return self.shape != "unknown" and self.color != "unknown"


@dataclass
class Reading:
    objects: list[SeenObject]
    background: str
    background_mask: np.ndarray

    def find(self, shape: str | None = None, color: str | None = None) -> SeenObject | None:
        """The largest object with this shape and/or colour, or None."""
        c = [o for o in self.objects if (shape is None or o.shape == shape) and (color is None or o.color == color)]
        return max(c, key=lambda o: o.area) if c else None

    def describe(self) -> str:
        objs = ", ".join(f"{o.color} {o.shape}" for o in self.objects) or "nothing"
        return f"{objs} on a {self.background} background"


# ----------------------------------------------------------------------------- pixels
def _to_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.max() > 1.5:
        a = a / 255.0
    return a


def _hsv(a: np.ndarray):
    mx, mn = a.max(-1), a.min(-1)
    d = mx - mn
    s = np.where(mx > 1e-6, d / np.maximum(mx, 1e-6), 0.0)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    dd = np.maximum(d, 1e-6)
    h = np.where(mx == r, ((g - b) / dd) % 6, np.where(mx == g, (b - r) / dd + 2, (r - g) / dd + 4)) * 60.0
    return h, s, mx


_PALETTE = np.array([V.COLORS[c][1] for c in V.COLOR_NAMES])


def _hue_dist(h, ref):
    d = np.abs(h[..., None] - ref) % 360.0
    return np.minimum(d, 360.0 - d)


def _upsample(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[:2]
    img = Image.fromarray(np.clip(a * 255, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((w * f, h * f), Image.BILINEAR), dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------- shape signatures
def signature(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Whitened radial signature (N_ANGLES,) of a boolean mask, its centroid and covariance."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 20:
        return None
    pts = np.stack([xs + 0.5, ys + 0.5], 1).astype(np.float64)
    mu = pts.mean(0)
    c = np.cov((pts - mu).T) + 1e-6 * np.eye(2)
    ev, evec = np.linalg.eigh(c)
    w = evec @ np.diag(1.0 / np.sqrt(ev)) @ evec.T
    q = (pts - mu) @ w.T
    ang = np.arctan2(q[:, 1], q[:, 0])
    rad = np.hypot(q[:, 0], q[:, 1])
    b = ((ang + math.pi) / (2 * math.pi) * N_ANGLES).astype(int) % N_ANGLES
    sig = np.zeros(N_ANGLES)
    np.maximum.at(sig, b, rad)
    if (sig == 0).any():  # fill empty bins from neighbours
        good = sig > 0
        idx = np.arange(N_ANGLES)
        sig = np.interp(idx, idx[good], sig[good], period=N_ANGLES)
    return sig / sig.mean(), mu, c


@lru_cache(maxsize=1)
def _templates() -> dict[str, tuple[np.ndarray, float]]:
    """Signature and area factor (area / (pi r^2)) of each shape, rendered large and unrotated."""
    out = {}
    for shape in V.ALL_SHAPES:
        spec = SceneSpec((ObjectSpec(shape=shape, color="red", radius=0.4),), "white")
        m = render(spec, 256).objects[0].mask
        out[shape] = (signature(m)[0], m.sum() / (math.pi * (0.4 * 256) ** 2))
    return out


def match_shape(mask: np.ndarray) -> tuple[str, float, dict[str, float]]:
    """Nearest template shape over all rotations; ("unknown", d, scores) past UNKNOWN_DISTANCE."""
    s = signature(mask)
    if s is None:
        return "unknown", math.inf, {}
    sig = s[0]
    scores = {}
    for shape, (tpl, _) in _templates().items():
        shifts = np.stack([np.roll(tpl, k) for k in range(N_ANGLES)])
        scores[shape] = float(np.sqrt(((shifts - sig) ** 2).mean(1)).min())
    ranked = sorted(scores, key=scores.get)
    best, second = scores[ranked[0]], scores[ranked[1]]
    known = best <= UNKNOWN_DISTANCE and best <= AMBIGUITY * second
    return (ranked[0] if known else "unknown"), best, scores


# ----------------------------------------------------------------------------- the oracle
BACKGROUND_FIT = 0.85  # share of the background pixels the named background must explain to be read plainly


@lru_cache(maxsize=64)
def _background_grey(background: str, size: int) -> np.ndarray:
    """The named background drawn alone at ``size`` pixels, as grey levels 0-255 (read-only)."""
    from .world import background_image

    g = np.asarray(background_image(background, size), dtype=np.float32).mean(-1)
    g.setflags(write=False)
    return g


def _background_fits(a: np.ndarray, bgmask: np.ndarray) -> dict[str, float]:
    """For each named background, the share of the pixels in ``bgmask`` within ``SCENERY_TOL`` grey
    levels of that background drawn alone at that place."""
    gray = a.mean(-1) * 255.0
    return {b: float((np.abs(gray - _background_grey(b, a.shape[0])) <= SCENERY_TOL)[bgmask].mean())
            if bgmask.any() else 0.0 for b in V.BACKGROUNDS}


def _background(a: np.ndarray, bgmask: np.ndarray) -> str:
    plain = _plain_background(a, bgmask)
    if a.shape[0] != a.shape[1] or bgmask.sum() < 0.1 * bgmask.size:
        return plain
    if _background_fits(a, bgmask)[plain] >= BACKGROUND_FIT:
        return plain
    # much of the picture is unnamed scenery. Ground and hills lie low, so the named background is
    # what shows in the top third (the sky); clutter leaves gaps everywhere.
    top = bgmask.copy()
    top[a.shape[0] // 3:] = False
    fits = _background_fits(a, top if top.sum() >= 0.05 * bgmask.size else bgmask)
    return max(fits, key=fits.get)


def _plain_background(a: np.ndarray, bgmask: np.ndarray) -> str:
    gray = a.mean(-1)
    if bgmask.sum() < 0.1 * bgmask.size:
        bgmask = np.ones_like(bgmask)
    ys, xs = np.nonzero(bgmask)
    v = gray[ys, xs]
    h = gray.shape[0]
    yy = (ys + 0.5) / h
    slope = np.polyfit(yy, v, 1)[0] if len(set(ys.tolist())) > 2 else 0.0
    resid = v - np.polyval(np.polyfit(yy, v, 1), yy) if len(set(ys.tolist())) > 2 else v - v.mean()
    if slope > 0.35:
        return "gradient"
    if resid.std() > 0.045:
        return "checkered"
    return "white" if v.mean() > 0.72 else "gray"


def read_image(image) -> Reading:
    """Look at an image (PIL, HxWx3 array in [0,1] or [0,255], or 3xHxW) and say what is there."""
    a = _to_array(image)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"expected an RGB image, got array of shape {a.shape}")
    H, W = a.shape[:2]
    f = UPSAMPLE if max(H, W) <= 128 else 1
    up = _upsample(a, f) if f > 1 else a
    hue, sat, val = _hsv(up)
    fg = (sat >= SAT_MIN) & (val >= VAL_MIN)
    fg = ndimage.binary_opening(fg, iterations=1)
    dist = _hue_dist(hue, _PALETTE)
    nearest = dist.argmin(-1)
    labels, n = ndimage.label(fg)
    min_area = MIN_AREA_FRAC * up.shape[0] * up.shape[1]
    regions = []
    for i in range(1, n + 1):
        reg = labels == i
        area = reg.sum()
        if area < min_area:
            continue
        counts = np.bincount(nearest[reg], minlength=len(_PALETTE))
        big = [k for k in np.nonzero(counts >= max(0.25 * area, min_area))[0]]
        if len(big) >= 2:  # touching objects of different colours
            for k in big:
                sub, m = ndimage.label(reg & ndimage.binary_closing(nearest == k, iterations=2))
                for j in range(1, m + 1):
                    if (sub == j).sum() >= min_area:
                        regions.append(sub == j)
        else:
            regions.append(reg)
    objects = []
    for reg in regions:
        hs = hue[reg]
        # circular median-ish: mean of unit vectors, weighted by saturation
        ang = np.deg2rad(hs)
        wsat = sat[reg]
        mh = (np.rad2deg(np.arctan2((np.sin(ang) * wsat).sum(), (np.cos(ang) * wsat).sum())) + 360) % 360
        d = _hue_dist(np.array([mh]), _PALETTE)[0]
        color = V.COLOR_NAMES[int(d.argmin())] if d.min() <= HUE_TOL else "unknown"
        shape, sd, scores = match_shape(reg)
        # back to the image's resolution
        small = reg.reshape(H, f, W, f).mean((1, 3)) >= 0.5 if f > 1 else reg
        ys, xs = np.nonzero(reg)
        bbox = (int(xs.min()) // f, int(ys.min()) // f, -(-int(xs.max() + 1) // f), -(-int(ys.max() + 1) // f))
        cen = ((xs.mean() + 0.5) / f, (ys.mean() + 0.5) / f)
        height, width = (ys.max() - ys.min() + 1), (xs.max() - xs.min() + 1)
        ratio = height / width
        aspect = "tall" if ratio > 1.4 else "wide" if ratio < 1 / 1.4 else "regular"
        size = "medium"
        if shape in _templates():
            r = math.sqrt(reg.sum() / (math.pi * _templates()[shape][1])) / (up.shape[0])
            size = min(V.SIZE_RADIUS, key=lambda k: abs(V.SIZE_RADIUS[k] - r))
        inner = ndimage.binary_erosion(reg, iterations=f)
        pattern = "plain"
        if inner.sum() > 20:
            v = val[inner]
            dark = (v < 0.75 * np.percentile(v, 90)).mean()
            pattern = "plain" if dark < 0.08 else ("dotted" if dark < 0.3 else "striped")
        objects.append(SeenObject(shape=shape, color=color, mask=small, bbox=bbox, centroid=cen,
                                  area=int(small.sum()), shape_distance=sd, aspect=aspect, size=size,
                                  pattern=pattern, hue=float(mh), scores=scores))
    objects.sort(key=lambda o: -o.area)
    covered = np.zeros((H, W), bool)
    for o in objects:
        covered |= o.mask
    bgmask = ~ndimage.binary_dilation(covered, iterations=2)
    return Reading(objects=objects, background=_background(a, bgmask), background_mask=bgmask)


def judge(image, shape: str, color: str, background: str | None = None) -> bool:
    """True when the oracle finds an object of this shape and colour (and this background)."""
    r = read_image(image)
    ok = r.find(shape=shape, color=color) is not None
    return ok and (background is None or r.background == background)


# ----------------------------------------------------------------------------- scenery
SCENERY_TOL = 30.0  # grey levels: every scenery element differs from what it lies on by 40 or more


def read_scenery(image, background: str) -> np.ndarray:
    """The unnamed free content of an image (:mod:`course_lib.shapes.scenery`): pixels that are grey
    (not an object's saturated colour) and more than ``SCENERY_TOL`` grey levels away from the named
    ``background`` at that place. Bool HxW. On a plain scene it is (nearly) empty; comparing it
    between a source and an edit tells whether the ground, hills, clouds and pebbles stayed put."""
    a = _to_array(image)
    _, s, v = _hsv(a)
    grey = ~((s >= SAT_MIN) & (v >= VAL_MIN))
    return grey & (np.abs(a.mean(-1) - _background_grey(background, a.shape[0]) / 255.0) * 255.0 > SCENERY_TOL)
