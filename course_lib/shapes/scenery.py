"""Scenery: the unnamed free content of a Shapes World scene.

A caption names the objects, their colours, sizes and places, and the background. Everything drawn
here it never names: a ground below a horizon, hills on it, clouds in the sky, pebbles on the ground,
grey clutter. A text-to-image model trained on such scenes must decide all of it from its starting
noise and along the whole denoising trajectory, as a photograph's model decides the parts of a
picture its caption leaves out. That is what makes the naive edit (the same noise, one word
changed) move much more than the word: the free content is decided anew.

Everything here is grey (saturation 0), so the oracle still tells the named, coloured objects apart
from it, and every element contrasts with what it is drawn on, so the oracle can read it back
(:func:`course_lib.shapes.oracle.read_scenery`).

Kinds (``WORLDS``): ``plain`` (no scenery: the world the course began with), ``ground`` (a sloped
horizon with a ground band, pebbles on it, clouds above), ``hills`` (the same with a wavy horizon and
hills), ``clutter`` (grey blobs of many sizes anywhere, no horizon).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

WORLDS = ("plain", "ground", "hills", "clutter")

# The mean grey of each named background at height y (0 top, 1 bottom): what an element must stand
# out from. (The checkered background's two greys are 228 and 182.)
_SKY = {"white": lambda y: 240.0, "gray": lambda y: 125.0, "checkered": lambda y: 205.0,
        "gradient": lambda y: 70.0 + 165.0 * y}


@dataclass(frozen=True)
class Patch:
    """One grey ellipse: centre and radii as fractions of the image side, rotation in degrees."""

    kind: str  # "cloud" | "hill" | "pebble" | "blob"
    center: tuple[float, float]
    radii: tuple[float, float]
    rotation: float
    tone: float  # grey level 0-255


@dataclass(frozen=True)
class Scenery:
    """The free content of one scene. ``horizon`` is the ground line's height at the image's centre
    (None: no ground); the line is ``horizon + slope * (x - 0.5) + a * sin(2 pi f x + phase)`` with
    ``wave = (a, f, phase)``. ``back`` is drawn before the ground (clouds, hills), ``front`` after
    it (pebbles, blobs); the named objects are drawn over all of it."""

    kind: str
    horizon: float | None = None
    slope: float = 0.0
    wave: tuple[float, float, float] = (0.0, 1.0, 0.0)
    ground_tone: float = 0.0
    back: tuple[Patch, ...] = ()
    front: tuple[Patch, ...] = ()

    def __post_init__(self):
        if self.kind not in WORLDS:
            raise ValueError(f"unknown scenery {self.kind!r}; choose from {WORLDS}")

    def horizon_at(self, x):
        a, f, ph = self.wave
        return self.horizon + self.slope * (np.asarray(x) - 0.5) + a * np.sin(2 * math.pi * f * np.asarray(x) + ph)


def _contrast(rng: np.random.Generator, ref: float, lo: float, hi: float, darker_p: float = 0.75) -> float:
    """A grey ``lo``-``hi`` levels away from ``ref``, darker with probability ``darker_p`` when there is room."""
    d = rng.uniform(lo, hi)
    darker = rng.random() < darker_p
    for sign in ((-1, 1) if darker else (1, -1)):
        t = ref + sign * d
        if 20.0 <= t <= 240.0:
            return float(t)
    return float(np.clip(ref - d if ref > 128 else ref + d, 20.0, 240.0))


def sample_scenery(rng: np.random.Generator | int, kind: str, background: str) -> Scenery | None:
    """Sample the free content of one scene on ``background`` (``kind`` from ``WORLDS``; ``plain``
    gives None). Draws only from ``rng``, so the objects of a scene do not depend on it."""
    if kind not in WORLDS:
        raise ValueError(f"unknown scenery {kind!r}; choose from {WORLDS}")
    if background not in _SKY:
        raise ValueError(f"unknown background {background!r}; choose from {tuple(_SKY)}")
    if kind == "plain":
        return None
    rng = np.random.default_rng(rng)
    sky = _SKY[background]
    if kind == "clutter":
        blobs = []
        for _ in range(int(rng.integers(8, 17))):
            c = (float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.05, 0.95)))
            r = rng.uniform(0.03, 0.09)
            blobs.append(Patch("blob", c, (float(r), float(r * rng.uniform(0.45, 1.0))),
                               float(rng.uniform(-90, 90)), _contrast(rng, sky(c[1]), 50, 100)))
        return Scenery(kind, front=tuple(blobs))
    h = float(rng.uniform(0.42, 0.78))
    slope = float(rng.uniform(-0.2, 0.2))
    wave = ((float(rng.uniform(0.01, 0.05)), float(rng.uniform(0.5, 2.0)), float(rng.uniform(0, 2 * math.pi)))
            if kind == "hills" else (0.0, 1.0, 0.0))
    ground = _contrast(rng, sky(h), 60, 110)
    probe = Scenery(kind, h, slope, wave, ground)
    back = []
    for _ in range(int(rng.integers(0, 4))):  # clouds, in the sky
        top = float(probe.horizon_at(0.5)) - 0.14
        if top < 0.08:
            break
        c = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.06, top)))
        back.append(Patch("cloud", c, (float(rng.uniform(0.07, 0.16)), float(rng.uniform(0.03, 0.06))),
                          float(rng.uniform(-10, 10)), _contrast(rng, sky(c[1]), 40, 75, darker_p=0.5)))
    if kind == "hills":
        for _ in range(int(rng.integers(1, 4))):
            x = float(rng.uniform(0.1, 0.9))
            y = float(probe.horizon_at(x))
            tone = sky(y) + rng.uniform(0.5, 0.7) * (ground - sky(y))
            back.append(Patch("hill", (x, y), (float(rng.uniform(0.12, 0.32)), float(rng.uniform(0.06, 0.18))),
                              0.0, float(tone)))
    front = []
    for _ in range(int(rng.integers(3, 10))):  # pebbles, on the ground
        x = float(rng.uniform(0.05, 0.95))
        y0 = float(probe.horizon_at(x)) + 0.04
        if y0 > 0.95:
            continue
        r = rng.uniform(0.025, 0.06)
        front.append(Patch("pebble", (x, float(rng.uniform(y0, 0.97))), (float(r), float(r * rng.uniform(0.5, 0.85))),
                           float(rng.uniform(-30, 30)), _contrast(rng, ground, 50, 100)))
    return Scenery(kind, h, slope, wave, ground, tuple(back), tuple(front))


def _ellipse(p: Patch, s: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """The ellipse drawn ``s`` pixels wide: (rows, columns) of its bounding box, and its mask there."""
    a = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    pts = np.stack([p.radii[0] * np.cos(a), p.radii[1] * np.sin(a)], 1) * s
    th = -math.radians(p.rotation)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    pts = pts @ rot.T + np.array(p.center) * s
    x0, y0 = np.clip(np.floor(pts.min(0)).astype(int) - 1, 0, s)
    x1, y1 = np.clip(np.ceil(pts.max(0)).astype(int) + 2, 0, s)
    m = Image.new("L", (max(1, x1 - x0), max(1, y1 - y0)), 0)
    ImageDraw.Draw(m).polygon([(q[0] - x0, q[1] - y0) for q in pts], fill=255)
    return (slice(y0, y1), slice(x0, x1)), np.asarray(m, dtype=np.float32)[: y1 - y0, : x1 - x0] / 255.0


def draw_scenery(img: np.ndarray, scenery: Scenery | None) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``scenery`` over a background drawing ``img`` (S x S x 3 floats, already supersampled).
    Returns the new drawing and the scenery's coverage (S x S floats in [0, 1])."""
    s = img.shape[0]
    cover = np.zeros((s, s), np.float32)
    if scenery is None:
        return img, cover
    img = img.copy()

    def put(box, m: np.ndarray, tone: float):
        if m.size:
            img[box] = img[box] * (1 - m[..., None]) + tone * m[..., None]
            np.maximum(cover[box], m, out=cover[box])

    for p in scenery.back:
        put(*_ellipse(p, s), p.tone)
    if scenery.horizon is not None:
        x = (np.arange(s) + 0.5) / s
        line = scenery.horizon_at(x) * s  # per column, in drawing pixels
        top = int(np.clip(np.floor(line.min()), 0, s))
        rows = np.arange(top, s)[:, None] + 0.5
        put((slice(top, s), slice(0, s)), (rows >= line[None, :]).astype(np.float32), scenery.ground_tone)
    for p in scenery.front:
        put(*_ellipse(p, s), p.tone)
    return img, cover
