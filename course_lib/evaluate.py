"""How the course scores an edit: the held-out cases every lesson draws, the oracle's verdicts on
them, and the tables the notebooks print.

The notebooks and the benchmarks (``python -m course_tools.bench <suite>``) use the same functions, so a
figure in a lesson and a row of the bench are measured the same way. Everything here reads images with
the Shapes World oracle (:func:`course_lib.shapes.read_image`) and compares them with the scene's
ground truth. Nothing here trains or loads a model; only :func:`drawn_right` generates, with the
pipeline it is given.

- tables: :class:`Row`, :func:`format_table`
- held-out scenes: :func:`held_out_scenes`, :func:`judge_generation`
- Prompt-to-Prompt and Plug-and-Play (02, 03): :func:`swap_case`, :func:`edit_scores`,
  :func:`swap_parts`, :func:`layout_kept`, :func:`drawn_right`
- Photoswap (04): :func:`swap_scores`, :func:`subject_of`
- Paint by Example (05): :func:`pbe_cases`, :func:`fitted_box`, :func:`pbe_scores`, the seam
  (:func:`background_by_kind`, :func:`seam_row`, :data:`SEAM_BAR`)
- Imagic (06): :func:`imagic_case`, :func:`edit_succeeded`, :func:`object_kept`
- DragDiffusion (07): :func:`drag_case`, :func:`ended_at`, :func:`drag_scores`, :func:`drag_kept_shape`
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .methods.concepts import shows_concept
from .methods.drag import leading_edge, move_handles, stretch_handles
from .methods.pbe import object_box
from .metrics import box_iou, mask_iou, psnr
from .sampling import sample
from .shapes import vocab as V
from .shapes.oracle import judge, read_image
from .shapes.world import HELD_OUT_SEED_OFFSET, SceneSpec, background_image, make_scene, single_object


# --- tables -----------------------------------------------------------------------------------

@dataclass
class Row:
    suite: str
    name: str
    value: float
    unit: str = ""
    bar: float | None = None
    higher_is_better: bool = True
    detail: str = ""

    @property
    def passed(self) -> bool:
        if self.bar is None:
            return True
        if math.isnan(self.value):
            return False
        return self.value >= self.bar if self.higher_is_better else self.value <= self.bar

    def format_bar(self) -> str:
        if self.bar is None:
            return "(reported)"
        return f"{'>=' if self.higher_is_better else '<='} {self.bar:g}{self.unit}"


def format_table(rows: list[Row]) -> str:
    head = ("suite", "measure", "value", "bar", "ok", "detail")
    body = [(r.suite, r.name, f"{r.value:.4g}{r.unit}", r.format_bar(), "yes" if r.passed else "NO", r.detail)
            for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda cols: " | ".join(c.ljust(w) for c, w in zip(cols, widths))
    return "\n".join([line(head), "-+-".join("-" * w for w in widths), *map(line, body)])


# --- held-out scenes --------------------------------------------------------------------------

def held_out_scenes(n: int, offset: int = 0, **kw):
    """``n`` held-out scenes (seeds never used for training), default one object each."""
    kw.setdefault("n_objects", 1)
    return [make_scene(HELD_OUT_SEED_OFFSET + 500_000 + offset + i, **kw) for i in range(n)]


def judge_generation(image, scene) -> dict:
    r = read_image(image)
    o = scene.objects[0]
    found = r.find(color=o.color)
    return {"shape": found is not None and found.shape == o.shape, "color": found is not None,
            "background": r.background == scene.background,
            "all": r.find(shape=o.shape, color=o.color) is not None and r.background == scene.background}


# --- Prompt-to-Prompt and Plug-and-Play -------------------------------------------------------

def swap_case(scene, i: int):
    """(target spec, source word, target word): a colour swap for even i, a shape swap for odd i."""
    o = scene.spec.objects[0]
    if i % 2 == 0:
        new = V.COLOR_NAMES[(V.COLOR_NAMES.index(o.color) + 1 + i // 2 % 5) % len(V.COLOR_NAMES)]
        return scene.spec.replace_object(0, color=new), o.color, new
    new = V.SHAPES[(V.SHAPES.index(o.shape) + 1 + i // 2 % 5) % len(V.SHAPES)]
    return scene.spec.replace_object(0, shape=new), o.shape, new


def edit_scores(source_img, target_img, target_spec: SceneSpec, source_mask=None, readings=None):
    """(success, background PSNR): the oracle finds the target object; pixels outside the union of
    the source and target objects (dilated by 1 px) stay. ``readings``: the oracle's (source, target)
    readings when the caller already has them."""
    o = target_spec.objects[0]
    rs, rt = readings or (read_image(source_img), read_image(target_img))
    found = rt.find(shape=o.shape, color=o.color)
    union = np.zeros(np.asarray(source_img).shape[:2], bool)
    for r in (rt, rs):
        for obj in r.objects:
            union |= obj.mask
    if source_mask is not None:
        union |= source_mask
    keep = ~ndimage.binary_dilation(union, iterations=1)
    return found is not None, psnr(source_img, target_img, keep)


def swap_parts(source_img, target_img, source_spec: SceneSpec, target_spec: SceneSpec,
               readings=None) -> tuple[bool, bool]:
    """(the swapped attribute is read in the target, the source shows its own object).

    They tell the failures of an edit apart: one that did not bring the new colour or shape, and one
    whose source the model had already drawn wrong (then the shape a colour swap must keep is not
    there to keep). ``readings`` as in :func:`edit_scores`."""
    s, t = source_spec.objects[0], target_spec.objects[0]
    rs, rt = readings or (read_image(source_img), read_image(target_img))
    changed = {"color": t.color} if t.color != s.color else {"shape": t.shape}
    return rt.find(**changed) is not None, rs.find(shape=s.shape, color=s.color) is not None


def layout_kept(source_img, target_img, readings=None) -> float:
    """Mask IoU of the largest object in the source and in the target: did the edited object stay
    where, and as large as, the source's? A colour swap in place scores near 1. A shape swap in place
    scores below 1 by the shapes' own difference (disc and square of one size 0.8, disc and triangle
    0.45), so compare it between methods on the same cases. An object drawn elsewhere scores near 0,
    an image with no object 0. ``readings`` as in :func:`edit_scores`."""
    rs, rt = readings or (read_image(source_img), read_image(target_img))
    a, b = rs.find(), rt.find()
    return mask_iou(a.mask, b.mask) if a is not None and b is not None else 0.0


TARGET_DRAWS = 4
DRAWABLE = 0.75  # a case's target counts as drawable when this share of its draws is read right (3 of 4)


def drawn_right(pipe, spec: SceneSpec, steps: int, seed: int, draws: int = TARGET_DRAWS) -> float:
    """Share of ``draws`` fresh-noise generations of ``spec``'s caption in which the oracle reads its
    first object (shape and colour); the noise is seeded ``10_000 + seed``, apart from the seeds of the
    edits' own starting latents."""
    o = spec.objects[0]
    g = torch.Generator().manual_seed(10_000 + seed)
    imgs = sample(pipe, [spec.caption] * draws, steps, 7.5, generator=g, progress=False)
    return float(np.mean([judge(im, o.shape, o.color) for im in imgs]))


# --- Photoswap --------------------------------------------------------------------------------

def swap_scores(source_img, target_img, subject_mask: np.ndarray | None) -> dict:
    """Oracle scores of one swap (see the module docstring). ``subject_mask``: the source's subject."""
    r = read_image(target_img)
    cands = [o for o in r.objects if o.color == V.HELD_OUT_CONCEPT["color"]]
    if subject_mask is not None and cands:
        o = max(cands, key=lambda c: mask_iou(c.mask, subject_mask))
    else:
        o = max(cands, key=lambda c: c.area) if cands else None
    identity = shows_concept(o)
    both = o is not None and subject_mask is not None
    iou = mask_iou(o.mask, subject_mask) if both else 0.0
    biou = box_iou(o.mask, subject_mask) if both else 0.0
    edited = np.zeros(np.asarray(source_img).shape[:2], bool)
    if subject_mask is not None:
        edited |= subject_mask
    if o is not None:
        edited |= o.mask
    keep = ~ndimage.binary_dilation(edited, iterations=2)
    bg = psnr(source_img, target_img, keep) if keep.any() else float("nan")
    return {"identity": identity, "purple": o is not None, "iou": iou, "box_iou": biou, "bg": bg}


def subject_of(image, color: str):
    found = read_image(image).find(color=color)
    return None if found is None else found.mask


# --- Paint by Example -------------------------------------------------------------------------

def fitted_box(obj_box, exemplar_box, size: int) -> tuple[int, int, int, int]:
    """The smallest box with the exemplar box's proportions that covers ``obj_box``, centred on it
    and moved (or cut) to stay inside the image: a mask a user would draw for *this* exemplar."""
    ox0, oy0, ox1, oy1 = obj_box
    aspect = (exemplar_box[2] - exemplar_box[0]) / (exemplar_box[3] - exemplar_box[1])
    w = min(max(ox1 - ox0, (oy1 - oy0) * aspect), size)
    h = min(max(w / aspect, oy1 - oy0), size)  # covering wins over the proportions where the image is too small
    x0 = int(round(min(max((ox0 + ox1 - w) / 2, 0), size - w)))
    y0 = int(round(min(max((oy0 + oy1 - h) / 2, 0), size - h)))
    return x0, y0, min(size, x0 + int(round(w))), min(size, y0 + int(round(h)))


def pbe_cases(n: int, offset: int = 80_000, crop: bool = True, mask: str = "object"):
    """(scene, mask, reference, reference shape, reference colour) for ``n`` held-out scenes.
    ``crop=False``: the reference is the whole 64 px exemplar image (its object in the middle of a
    white field) instead of the object's box crop. ``mask="object"``: the mask is the scene object's
    box (grown 2 px), whatever its proportions; ``"fitted"``: a box of the exemplar's proportions
    that covers it (:func:`fitted_box`)."""
    if mask not in ("object", "fitted"):
        raise ValueError(f"mask must be 'object' or 'fitted', got {mask!r}")
    out = []
    for i, s in enumerate(held_out_scenes(n, offset=offset)):
        o = s.spec.objects[0]
        colours = [c for c in V.COLOR_NAMES if c != o.color]
        shapes = [sh for sh in V.SHAPES if sh != o.shape]
        c, sh = colours[i % len(colours)], shapes[(i // 2) % len(shapes)]
        exemplar = single_object(sh, c, "white", size="large")
        ex_box = object_box(exemplar.objects[0].bbox, exemplar.size)
        x0, y0, x1, y1 = box = object_box(s.objects[0].bbox, s.size)
        if mask == "fitted":
            x0, y0, x1, y1 = fitted_box(box, ex_box, s.size)
        m = np.zeros((s.size, s.size), bool)
        m[y0:y1, x0:x1] = True
        ref = exemplar.image.crop(ex_box) if crop else exemplar.image
        out.append((s, m, ref, sh, c))
    return out


def pbe_scores(source, out, mask, shape, color, background: str | None = None) -> dict:
    """color / shape+color: an object of the exemplar's colour (and shape) read inside the mask; bg:
    PSNR outside the mask; fill: the area of the largest such object over the mask's area. With the
    scene's ``background`` name, also "bg_in": PSNR inside the mask but 2 px away from every object read,
    against that background alone (what the mask hides once its object is gone; NaN where nothing is
    left)."""
    r = read_image(out)
    inside = [o for o in r.objects if (o.mask & mask).sum() > 0.5 * o.area]
    col = [o for o in inside if o.color == color]
    scores = {"color": bool(col), "shape+color": any(o.shape == shape for o in col),
              "bg": psnr(source, out, ~mask), "fill": max((o.area for o in col), default=0) / mask.sum()}
    if background is not None:
        objects = np.zeros(mask.shape, bool)
        for o in r.objects:
            objects |= o.mask
        around = mask & ~ndimage.binary_dilation(objects, iterations=2)
        scores["bg_in"] = psnr(background_image(background, mask.shape[0]), out, around) if around.any() else float("nan")
    return scores


def background_by_kind(res, cases) -> dict[str, float]:
    """The mean "bg_in" of :func:`pbe_scores` (the background inside the mask around the painted object)
    per background kind of the cases' scenes, NaN-free kinds only, in :data:`~course_lib.shapes.vocab.BACKGROUNDS`' order."""
    out = {}
    for b in V.BACKGROUNDS:
        vals = [x["bg_in"] for x, case in zip(res, cases) if case[0].spec.background == b and not np.isnan(x["bg_in"])]
        if vals:
            out[b] = float(np.mean(vals))
    return out


# The seam bar: a painting must give back, around its object, the background the mask hid, on every kind
# of background; a whole-image painting scores 45 dB or more on each, a flat patch on a checkered one under 20.
SEAM_BAR = 35.0


def seam_row(tag: str, res, cases, bar: float | None = SEAM_BAR) -> Row:
    """The row that scores the seam: the background inside the mask around the painted object on the
    *worst* background kind (:func:`background_by_kind`), so that a mode which breaks one kind fails."""
    kinds = background_by_kind(res, cases)
    worst = min(kinds, key=kinds.get) if kinds else None
    return Row("pbe", f"{tag}: background inside the mask around the object, worst background kind",
               kinds[worst] if worst else float("nan"), " dB", bar,
               detail=f"worst: {worst}; " + ", ".join(f"{b} {v:.1f}" for b, v in kinds.items()))


# --- Imagic -----------------------------------------------------------------------------------

def imagic_case(scene, i: int):
    """(target spec, kind, what the oracle must read): colour, aspect or size, in turn."""
    o = scene.spec.objects[0]
    kind = ("color", "aspect", "size")[i % 3]
    if kind == "color":
        new = V.COLOR_NAMES[(V.COLOR_NAMES.index(o.color) + 2 + i % 3) % len(V.COLOR_NAMES)]
        return scene.spec.replace_object(0, color=new), kind, new
    if kind == "aspect":
        new = "wide" if o.aspect == "tall" else "tall"
        return scene.spec.replace_object(0, aspect=new), kind, new
    new = "large" if o.size == "small" else "small"
    return scene.spec.replace_object(0, size=new), kind, new


KEPT_DISTANCE = 0.125  # the edited object's centroid within this share of the side of the input's


def edit_succeeded(image, source_spec, kind: str, new: str, reading=None) -> bool:
    """``reading``: the oracle's reading of ``image`` when the caller already has it."""
    o = source_spec.objects[0]
    r = reading or read_image(image)
    if kind == "color":
        return r.find(color=new) is not None
    seen = r.find(color=o.color)
    return seen is not None and getattr(seen, kind) == new


def object_kept(image, source_scene, kind: str, new: str, reading=None) -> bool:
    """The edited image still shows the input's object: the oracle finds it (by its new colour after a
    colour edit, else by its colour) with the input's shape and its centroid within
    :data:`KEPT_DISTANCE` of the side from the input's. ``reading`` as in :func:`edit_succeeded`."""
    o = source_scene.objects[0]
    seen = (reading or read_image(image)).find(color=new if kind == "color" else o.color)
    if seen is None or seen.shape != o.shape:
        return False
    moved = np.hypot(*(np.asarray(seen.centroid, float) - np.asarray(o.centroid, float)))
    return moved <= KEPT_DISTANCE * source_scene.size


# --- DragDiffusion ----------------------------------------------------------------------------

DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def drag_case(scene, i: int):
    """(kind, handles, targets, mask, direction) for case i of ``scene`` (one object); handles and
    targets are (n, 2) arrays of (x, y), the first handle is the one the case is scored on."""
    o = scene.objects[0]
    side = scene.size
    x0, y0, x1, y1 = o.bbox
    for k in range(4):
        d = np.array(DIRECTIONS[(i + k) % 4], float)
        if i % 2 == 0:
            kind, dist = "move", 8.0
            h = move_handles(o.mask, d)
        else:
            kind, dist = "stretch", 6.0
            h = stretch_handles(o.mask, d)  # the first: the object's leading edge, as ended_at reads it
        g = h + dist * d
        # the object's box swept to its destination must stay in the image; the 3 px margin around it
        # is clipped to the image (an object touching the border can still be dragged away from it)
        lo = np.array([x0, y0]) + np.minimum(d * dist, 0)
        hi = np.array([x1, y1]) + np.maximum(d * dist, 0)
        if (g >= 2).all() and (g <= side - 3).all() and (lo >= 0).all() and (hi <= side).all():
            break
    else:  # no direction fits: drop extra handles that would leave, and stop the first one at the edge
        inside = ((g >= 0) & (g <= side - 1)).all(1)
        inside[0] = True
        h, g = h[inside], g[inside]
        g[0] = np.clip(g[0], 2, side - 3)
    mask = np.zeros((side, side), bool)
    lo, hi = np.clip(lo - 3, 0, side).astype(int), np.clip(hi + 3, 0, side).astype(int)
    mask[lo[1]:hi[1], lo[0]:hi[0]] = True
    return kind, h, g, mask, d


def ended_at(image, scene, kind: str, handle, direction) -> np.ndarray | None:
    seen = read_image(image).find(color=scene.objects[0].color)
    if seen is None:
        return None
    if kind == "move":
        return np.array(seen.centroid, float)
    return leading_edge(seen.mask, direction)


def drag_scores(image, scene, case) -> tuple[float, float]:
    """(distance between target and where the handle content ended, % of side; PSNR outside the mask)."""
    kind, h, g, mask, d = case
    end = ended_at(image, scene, kind, h, d)
    side = scene.size
    dist = np.linalg.norm((end if end is not None else h[0]) - g[0])
    return 100 * dist / side, psnr(scene.image, image, ~mask)


def drag_kept_shape(image, scene) -> bool:
    """The dragged object is still the source's object: the oracle finds an object of its colour and
    reads the source's shape in it. A drag that lands its handle on target but turns a triangle into a
    blob scores well by distance and fails here."""
    o = scene.objects[0]
    seen = read_image(image).find(color=o.color)
    return seen is not None and seen.shape == o.shape
