import pytest
import numpy as np
from PIL import Image, ImageFilter

from course_tools.bench.base import oracle_accuracy
from course_lib.shapes import vocab as V
from course_lib.shapes.oracle import read_image
from course_lib.shapes.world import single_object


def test_oracle_accuracy_on_rendered_held_out_scenes():
    acc, bg, n = oracle_accuracy(120)
    assert n > 150
    assert acc >= 0.99, acc
    assert bg >= 0.99, bg


def test_every_shape_colour_and_background_is_read():
    for i, shape in enumerate(V.ALL_SHAPES):
        for j, bg in enumerate(V.BACKGROUNDS):
            color = V.COLOR_NAMES[(i + j) % len(V.COLOR_NAMES)]
            r = read_image(single_object(shape, color, bg, rotation=10.0 * j).image)
            assert r.background == bg
            assert r.find(shape=shape, color=color) is not None, (shape, color, bg, r.describe())


def test_aspect_size_and_pattern():
    r = read_image(single_object("square", "green", aspect="tall").image).objects[0]
    assert r.aspect == "tall"
    r = read_image(single_object("circle", "blue", size="large").image).objects[0]
    assert r.size == "large"
    r = read_image(single_object("hexagon", "red", size="large", pattern="striped").image).objects[0]
    assert r.pattern == "striped" and r.shape == "hexagon"


def test_unrecognisable_things_are_not_forced_into_a_class():
    # an irregular blob: saturated but no Shapes World shape
    rng = np.random.default_rng(0)
    a = np.full((64, 64, 3), 240, np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    blob = np.zeros((64, 64), bool)
    for _ in range(6):
        cx, cy, r = rng.uniform(18, 46), rng.uniform(18, 46), rng.uniform(4, 9)
        blob |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    blob[30:34, 5:60] = True
    a[blob] = (220, 40, 40)
    r = read_image(a)
    assert all(o.shape == "unknown" for o in r.objects)
    # a grey image has no objects at all
    assert read_image(np.full((64, 64, 3), 128, np.uint8)).objects == []
    # an off-palette hue (pink, between purple and red) has colour "unknown"
    p = np.asarray(single_object("circle", "red").image).copy()
    m = read_image(p).objects[0].mask
    p[m] = (230, 40, 150)
    assert read_image(p).objects[0].color == "unknown"


def test_blurred_renders_are_still_read():
    img = single_object("star", "yellow", "gray", size="large").image.filter(ImageFilter.GaussianBlur(0.8))
    assert read_image(img).find(shape="star", color="yellow") is not None


def test_swap_parts_tells_a_missing_attribute_from_a_wrong_source():
    from course_lib.evaluate import swap_parts
    from course_lib.shapes.world import render_spec

    src = single_object("square", "red", "white", size="large")
    blue = src.spec.replace_object(0, color="blue")
    star = src.spec.replace_object(0, shape="star")
    assert swap_parts(src.image, render_spec(blue).image, src.spec, blue) == (True, True)
    assert swap_parts(src.image, render_spec(star).image, src.spec, star) == (True, True)
    assert swap_parts(src.image, src.image, src.spec, blue) == (False, True)  # the edit did nothing
    # the "source" the model drew is a red star, not the red square its prompt asked for
    assert swap_parts(render_spec(star).image, render_spec(blue).image, src.spec, blue) == (True, False)


def test_layout_kept_tells_an_edit_in_place_from_a_moved_object():
    from course_lib.evaluate import layout_kept
    from course_lib.shapes.world import render_spec

    src = single_object("square", "red", "white", size="large")
    blue = render_spec(src.spec.replace_object(0, color="blue")).image
    moved = single_object("square", "blue", "white", size="small", center=(0.2, 0.2))
    assert layout_kept(src.image, blue) > 0.9
    assert layout_kept(src.image, moved.image) < 0.3
    assert layout_kept(src.image, Image.new("RGB", src.image.size, "white")) == 0.0  # nothing drawn


def test_drawn_right_counts_the_generations_the_oracle_reads_as_the_prompt(monkeypatch):
    """bench p2p's reference for each swap: the share of fresh-noise generations of the target prompt
    that show its object; the split of the success rows rests on it."""
    from course_lib import evaluate as editing
    from course_lib.shapes.world import render_spec

    scene = single_object("square", "red", "white", size="large")
    other_colour = render_spec(scene.spec.replace_object(0, color="blue")).image
    other_shape = render_spec(scene.spec.replace_object(0, shape="star")).image
    asked = []

    def fake_sample(pipe, prompts, *a, **kw):
        asked.append(prompts)
        return [scene.image, other_colour, other_shape, scene.image]

    monkeypatch.setattr(editing, "sample", fake_sample)
    assert editing.drawn_right(None, scene.spec, 20, seed=0, draws=4) == 0.5
    assert asked == [[scene.spec.caption] * 4]


@pytest.mark.parametrize("world", ["ground", "hills", "clutter"])
def test_the_oracle_reads_the_free_content_and_still_the_objects(world):
    from course_lib.evaluate import held_out_scenes
    from course_lib.metrics import mask_iou
    from course_lib.shapes.oracle import read_scenery
    from course_lib.shapes.world import make_scene

    ious = [mask_iou(read_scenery(s.image, s.background), s.scenery_mask)
            for s in (make_scene(10_000_000 + i, world=world) for i in range(40))]
    assert np.median(ious) > 0.9
    plain = make_scene(10_000_000)
    assert read_scenery(plain.image, plain.background).mean() < 0.02  # a plain scene has next to none
    scenes = held_out_scenes(60, world=world)
    readings = [read_image(s.image) for s in scenes]
    right = [r.find(shape=s.objects[0].shape, color=s.objects[0].color) is not None for r, s in zip(readings, scenes)]
    assert np.mean(right) >= 0.99  # the named objects are read as in the plain world
    assert np.mean([r.background == s.background for r, s in zip(readings, scenes)]) >= 0.99  # the sky between
