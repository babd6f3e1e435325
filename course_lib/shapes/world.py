"""Shapes World: a seeded procedural scene generator that also returns the full ground truth.

A scene is sampled as a :class:`SceneSpec` (pure data: what is where), then rendered with 4x
supersampling into an image plus per-object masks, boxes and keypoints. The same seed always gives
the same scene at any size, so a 64x64 scene for tiny-sd and a 512x512 scene for Stable Diffusion
show the same layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageDraw

from . import vocab as V
from .scenery import WORLDS, Scenery, draw_scenery, sample_scenery

SUPERSAMPLE = 4


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ObjectSpec:
    """One object: what it is and where (centre in [0, 1] image coordinates, y downwards)."""

    shape: str
    color: str
    size: str = "medium"
    aspect: str = "regular"
    pattern: str = "plain"
    center: tuple[float, float] = (0.5, 0.5)
    rotation: float = 0.0  # degrees, counter-clockwise
    radius: float | None = None  # fraction of image side; default from the size word

    def __post_init__(self):
        if self.shape not in V.ALL_SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; choose from {V.ALL_SHAPES}")
        if self.color not in V.COLORS:
            raise ValueError(f"unknown colour {self.color!r}; choose from {V.COLOR_NAMES}")
        if self.size not in V.SIZES:
            raise ValueError(f"unknown size {self.size!r}; choose from {V.SIZES}")
        if self.aspect not in V.ASPECTS:
            raise ValueError(f"unknown aspect {self.aspect!r}; choose from {V.ASPECTS}")
        if self.pattern not in V.ALL_PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}; choose from {V.ALL_PATTERNS}")

    @property
    def r(self) -> float:
        return self.radius if self.radius is not None else V.SIZE_RADIUS[self.size]

    def phrase(self) -> str:
        words = ["a"]
        if self.size != "medium":
            words.append(self.size)
        if self.aspect != "regular":
            words.append(self.aspect)
        words.append(self.color)
        if self.pattern != "plain":
            words.append(self.pattern)
        words.append(self.shape)
        return " ".join(words)


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    background: str = "white"
    relation: str | None = None  # for two objects: how objects[0] relates to objects[1]
    position: str = "center"  # for one object: the position word used in the caption
    scenery: "Scenery | None" = None  # unnamed free content drawn under the objects (never in the caption)

    def __post_init__(self):
        if self.background not in V.BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; choose from {V.BACKGROUNDS}")
        if not 1 <= len(self.objects) <= 3:
            raise ValueError("a scene holds 1 to 3 objects")

    @property
    def caption(self) -> str:
        objs = self.objects
        if len(objs) == 1:
            body = objs[0].phrase() + V.POSITION_PHRASE[self.position]
        elif len(objs) == 2 and self.relation:
            body = f"{objs[0].phrase()} {self.relation} {objs[1].phrase()}"
        elif len(objs) == 2:
            body = f"{objs[0].phrase()} and {objs[1].phrase()}"
        else:
            body = ", ".join(o.phrase() for o in objs[:-1]) + " and " + objs[-1].phrase()
        return f"{body} on a {self.background} background"

    def replace_object(self, index: int = 0, **changes) -> "SceneSpec":
        """The same scene with one object's attributes changed (the ground truth of an edit)."""
        objs = list(self.objects)
        objs[index] = replace(objs[index], **changes)
        return replace(self, objects=tuple(objs))


# ----------------------------------------------------------------------------- ground truth
@dataclass
class ObjectTruth:
    shape: str
    color: str
    size: str
    aspect: str
    pattern: str
    rotation: float
    center: tuple[float, float]  # pixels (x, y)
    mask: np.ndarray  # bool HxW, visible pixels
    amodal_mask: np.ndarray  # bool HxW, the whole object as if nothing covered it
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the visible mask
    keypoints: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def centroid(self) -> tuple[float, float]:
        return self.keypoints["centroid"]


@dataclass
class Scene:
    spec: SceneSpec
    image: Image.Image
    objects: list[ObjectTruth]
    background: str
    background_mask: np.ndarray  # bool HxW: pixels no object covers
    scenery_mask: np.ndarray | None = None  # bool HxW: visible pixels of the unnamed scenery (free content)

    @property
    def caption(self) -> str:
        return self.spec.caption

    @property
    def size(self) -> int:
        return self.image.size[0]


# ----------------------------------------------------------------------------- geometry
def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], 1)


def shape_outline(shape: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Polygon (N, 2) in unit coordinates (y downwards, about radius 1) and named corner/tip points."""
    if shape == "circle":
        poly = _regular(96, phase=0.0)
        tips = {"east": poly[0], "south": poly[24], "west": poly[48], "north": poly[72]}
    elif shape == "square":
        poly = np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
        tips = {f"corner{i}": p for i, p in enumerate(poly)}
    elif shape == "triangle":
        poly = _regular(3, 1.05) + np.array([0, 0.15])
        tips = {f"tip{i}": p for i, p in enumerate(poly)}
    elif shape == "star":
        outer, inner = _regular(5, 1.05), _regular(5, 0.45, -math.pi / 2 + math.pi / 5)
        poly = np.stack([outer, inner], 1).reshape(-1, 2)
        tips = {f"tip{i}": p for i, p in enumerate(outer)}
    elif shape == "hexagon":
        poly = _regular(6, 0.95, 0.0)
        tips = {f"corner{i}": p for i, p in enumerate(poly)}
    elif shape == "cross":
        a, b = 0.32, 0.9
        poly = np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b],
                         [-a, a], [-b, a], [-b, -a], [-a, -a]])
        tips = {"north": np.array([0, -b]), "east": np.array([b, 0]), "south": np.array([0, b]),
                "west": np.array([-b, 0])}
    elif shape == "heart":
        t = np.linspace(0, 2 * math.pi, 120, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        poly = np.stack([x, y + 2.5], 1) / 16.5
        tips = {"bottom": poly[60], "left_lobe": poly[np.argmin(poly[:, 0])],
                "right_lobe": poly[np.argmax(poly[:, 0])]}
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return poly, tips


def _place(points: np.ndarray, obj: ObjectSpec, side: float) -> np.ndarray:
    sx, sy = V.ASPECT_SCALE[obj.aspect]
    p = points * np.array([sx, sy]) * obj.r * side
    th = -math.radians(obj.rotation)  # counter-clockwise on screen with y downwards
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    return p @ rot.T + np.array(obj.center) * side


def extent(obj: ObjectSpec) -> float:
    """Largest distance from centre to outline, as a fraction of the image side."""
    return obj.r * max(V.ASPECT_SCALE[obj.aspect]) * 1.06


# ----------------------------------------------------------------------------- rendering
def _background(name: str, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s] / s
    if name == "white":
        g = np.full((s, s), 240.0)
    elif name == "gray":
        g = np.full((s, s), 125.0)
    elif name == "checkered":
        g = np.where(((x * 8).astype(int) + (y * 8).astype(int)) % 2 == 0, 228.0, 182.0)
    elif name == "gradient":
        g = 70.0 + 165.0 * y
    else:
        raise ValueError(name)
    return np.repeat(g[..., None], 3, 2)


def _pattern_mask(pattern: str, s: int, obj: ObjectSpec) -> np.ndarray | None:
    if pattern == "plain":
        return None
    y, x = np.mgrid[0:s, 0:s] / s
    if pattern == "striped":  # diagonal bands, period 1/10 of the image side
        return ((x + y) * 10) % 1.0 < 0.5
    if pattern == "dotted":
        px, py = (x * 9) % 1.0 - 0.5, (y * 9) % 1.0 - 0.5
        return px * px + py * py < 0.22 ** 2
    raise ValueError(pattern)


def _box_down(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[:2]
    return a.reshape(h // f, f, w // f, f, *a.shape[2:]).mean((1, 3))


def _supersample(size: int) -> int:
    """How many times finer than ``size`` a scene is drawn before it is averaged down (anti-aliasing)."""
    return SUPERSAMPLE if size <= 256 else 2


def _pixels(a: np.ndarray, f: int) -> np.ndarray:
    """A drawing ``f`` times finer than the image, averaged down to 8-bit pixels."""
    return np.clip(np.rint(_box_down(a, f)), 0, 255).astype(np.uint8)


def background_image(background: str, size: int = 64) -> Image.Image:
    """The ``background`` alone, rendered as :func:`render` renders it under a scene's objects: what a
    scene shows where an object is taken away."""
    if background not in V.BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; choose from {V.BACKGROUNDS}")
    f = _supersample(size)
    return Image.fromarray(_pixels(_background(background, size * f), f))


def render(spec: SceneSpec, size: int = 64) -> Scene:
    """Render a scene spec at ``size`` x ``size`` pixels (a multiple of 8) with its ground truth."""
    if size <= 0 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8, got {size}")
    f = _supersample(size)
    s = size * f
    img, scenery_cover = draw_scenery(_background(spec.background, s), spec.scenery)
    visible, amodal, tips_px = [], [], []
    for obj in spec.objects:
        poly, tips = shape_outline(obj.shape)
        pts = _place(poly, obj, s)
        m_img = Image.new("L", (s, s), 0)
        ImageDraw.Draw(m_img).polygon([tuple(p) for p in pts], fill=255)
        m = np.asarray(m_img, dtype=np.float32) / 255.0
        rgb = np.array(V.COLORS[obj.color][0], dtype=np.float64)
        layer = np.broadcast_to(rgb, (s, s, 3)).copy()
        pm = _pattern_mask(obj.pattern, s, obj)
        if pm is not None:
            layer[pm] = rgb * 0.55
        img = img * (1 - m[..., None]) + layer * m[..., None]
        visible = [v * (1 - m) for v in visible]
        visible.append(m)
        amodal.append(m)
        tips_px.append({k: _place(v[None], obj, size)[0] for k, v in tips.items()})
    image = _pixels(img, f)
    covered = np.zeros((size, size), bool)
    objects = []
    for obj, vis, am, tips in zip(spec.objects, visible, amodal, tips_px):
        vm = _box_down(vis, f) >= 0.5
        covered |= _box_down(am, f) > 0.0
        ys, xs = np.nonzero(vm)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else (0, 0, 0, 0)
        centroid = (float(xs.mean()) + 0.5, float(ys.mean()) + 0.5) if len(xs) else (math.nan, math.nan)
        kp = {"centroid": centroid, **{k: (float(v[0]), float(v[1])) for k, v in tips.items()}}
        objects.append(ObjectTruth(
            shape=obj.shape, color=obj.color, size=obj.size, aspect=obj.aspect, pattern=obj.pattern,
            rotation=obj.rotation, center=(obj.center[0] * size, obj.center[1] * size), mask=vm,
            amodal_mask=_box_down(am, f) >= 0.5, bbox=bbox, keypoints=kp))
    scenery_mask = (_box_down(scenery_cover, f) >= 0.5) & ~covered
    return Scene(spec=spec, image=Image.fromarray(image), objects=objects,
                 background=spec.background, background_mask=~covered, scenery_mask=scenery_mask)


# ----------------------------------------------------------------------------- sampling
_POSITION_BOX = {  # (x range, y range) of the centre for a single object
    "center": ((0.44, 0.56), (0.44, 0.56)),
    "left": ((0.2, 0.32), (0.35, 0.65)),
    "right": ((0.68, 0.8), (0.35, 0.65)),
    "top": ((0.35, 0.65), (0.2, 0.32)),
    "bottom": ((0.35, 0.65), (0.68, 0.8)),
}


def _sample_object(rng: np.random.Generator, shapes, colors, patterns, sizes,
                   aspect_p=(0.6, 0.2, 0.2)) -> ObjectSpec:
    shape = shapes[rng.integers(len(shapes))]
    pattern = patterns[rng.integers(len(patterns))] if rng.random() < 0.25 else "plain"
    if pattern not in patterns:
        pattern = patterns[0]
    return ObjectSpec(
        shape=shape, color=colors[rng.integers(len(colors))], size=sizes[rng.integers(len(sizes))],
        aspect=V.ASPECTS[rng.choice(3, p=aspect_p)], pattern=pattern,
        rotation=float(rng.uniform(-25, 25)))


def _clamp(c: float, e: float) -> float:
    return float(min(max(c, e + 0.02), 0.98 - e))


def sample_scene(rng: np.random.Generator | int, *, n_objects: int | None = None,
                 shapes=V.SHAPES, colors=V.COLOR_NAMES, backgrounds=V.BACKGROUNDS,
                 patterns=V.PATTERNS, occlusion_p: float = 0.1) -> SceneSpec:
    """Sample a scene spec. The defaults give the training distribution (no held-out concept)."""
    rng = np.random.default_rng(rng)
    if n_objects is None:
        n_objects = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    bg = backgrounds[rng.integers(len(backgrounds))]
    if n_objects == 1:
        o = _sample_object(rng, shapes, colors, patterns, V.SIZES)
        pos = V.POSITIONS[rng.choice(5, p=[0.4, 0.15, 0.15, 0.15, 0.15])]
        (x0, x1), (y0, y1) = _POSITION_BOX[pos]
        e = extent(o)
        o = replace(o, center=(_clamp(rng.uniform(x0, x1), e), _clamp(rng.uniform(y0, y1), e)))
        return SceneSpec((o,), bg, position=pos)
    # several objects: distinct colours so each object is one colour region
    cidx = rng.permutation(len(colors))[:n_objects]
    objs = []
    for i in range(n_objects):
        o = _sample_object(rng, shapes, colors, patterns, ("small", "medium"))
        objs.append(replace(o, color=colors[cidx[i]]))
    if n_objects == 2:
        rel = ["left of", "right of", "above", "below"][rng.integers(4)]
        if rng.random() < occlusion_p:
            rel = "in front of"
        a, b = objs
        u, v = rng.uniform(0.22, 0.34), rng.uniform(0.66, 0.78)
        w1, w2 = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        if rel == "left of":
            ca, cb = (u, w1), (v, w2)
        elif rel == "right of":
            ca, cb = (v, w1), (u, w2)
        elif rel == "above":
            ca, cb = (w1, u), (w2, v)
        elif rel == "below":
            ca, cb = (w1, v), (w2, u)
        else:  # a in front of b, overlapping it partly
            b = replace(b, size="medium")
            cb = (rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6))
            ang = rng.uniform(0, 2 * math.pi)
            d = 0.16
            ca = (cb[0] + d * math.cos(ang), cb[1] + d * math.sin(ang))
        ea, eb = extent(a), extent(b)
        a = replace(a, center=(_clamp(ca[0], ea), _clamp(ca[1], ea)))
        b = replace(b, center=(_clamp(cb[0], eb), _clamp(cb[1], eb)))
        # draw the back object first so that "in front of" holds; spec order stays caption order
        return SceneSpec((a, b), bg, relation=rel)
    # three objects: spread on a jittered layout, no relation words
    slots = np.array([[0.25, 0.3], [0.75, 0.3], [0.5, 0.72], [0.25, 0.72], [0.75, 0.72], [0.5, 0.28]])
    pick = rng.permutation(len(slots))[:3]
    placed = []
    for o, k in zip(objs, pick):
        e = extent(o)
        c = slots[k] + rng.uniform(-0.04, 0.04, 2)
        placed.append(replace(o, size="small" if rng.random() < 0.5 else o.size,
                              center=(_clamp(c[0], e), _clamp(c[1], e))))
    return SceneSpec(tuple(placed), bg)


def draw_order(spec: SceneSpec) -> SceneSpec:
    """For "A in front of B" the back object B must be drawn first."""
    if spec.relation == "in front of":
        return replace(spec, objects=spec.objects[::-1])
    return spec


HELD_OUT_SEED_OFFSET = 10_000_000  # evaluation scenes use seeds from here on; training scenes below
SCENERY_STREAM = 7919  # the scenery of scene ``seed`` draws from the generator seeded [seed, SCENERY_STREAM]


def with_scenery(spec: SceneSpec, seed: int, world: str = "plain") -> SceneSpec:
    """``spec`` with the free content of ``world`` (see :mod:`course_lib.shapes.scenery`) drawn for
    scene ``seed``. The scenery has its own random stream, so the objects and the caption of a scene
    are the same in every world."""
    return replace(spec, scenery=sample_scenery(np.random.default_rng([seed, SCENERY_STREAM]), world, spec.background))


def make_scene(seed: int, size: int = 64, world: str = "plain", **kwargs) -> Scene:
    """Sample and render one scene. ``kwargs`` go to :func:`sample_scene` (e.g. ``n_objects=1``);
    ``world`` adds unnamed free content (``"plain"``: none; see :data:`WORLDS`).

    The returned scene's objects are listed in caption order.
    """
    spec = sample_scene(np.random.default_rng(seed), **kwargs)
    if world != "plain":
        spec = with_scenery(spec, seed, world)
    return render_spec(spec, size)


def render_spec(spec: SceneSpec, size: int = 64) -> Scene:
    """Render with the right draw order; objects come back in caption order."""
    ordered = draw_order(spec)
    scene = render(ordered, size)
    if ordered is not spec:
        scene.objects = scene.objects[::-1]
        scene.spec = spec
    return scene


def single_object(shape: str, color: str, background: str = "white", image_size: int = 64, **obj) -> Scene:
    """A one-object scene in the centre, e.g. ``single_object("star", "red", "gray", size="large")``."""
    o = ObjectSpec(shape=shape, color=color, **obj)
    return render_spec(SceneSpec((o,), background), image_size)


def concept_scene(seed: int, size: int = 64, background: str | None = None) -> Scene:
    """A rendered reference image of the held-out concept (for DreamBooth / Textual Inversion)."""
    rng = np.random.default_rng(seed)
    c = V.HELD_OUT_CONCEPT
    o = ObjectSpec(shape=c["shape"], color=c["color"], pattern=c["pattern"],
                   size=("medium", "large")[rng.integers(2)], rotation=float(rng.uniform(-20, 20)))
    e = extent(o)
    o = replace(o, center=(_clamp(rng.uniform(0.4, 0.6), e), _clamp(rng.uniform(0.4, 0.6), e)))
    bg = background or V.BACKGROUNDS[rng.integers(len(V.BACKGROUNDS))]
    return render_spec(SceneSpec((o,), bg), size)


def isolated(scene: Scene, index: int, margin: int = 1) -> bool:
    """True when object ``index`` is fully visible and touches no other object (within ``margin`` px)."""
    from scipy import ndimage

    o = scene.objects[index]
    if (o.amodal_mask & ~o.mask).any():
        return False
    grown = ndimage.binary_dilation(o.amodal_mask, iterations=margin + 1)
    return not any((grown & p.amodal_mask).any() for j, p in enumerate(scene.objects) if j != index)
