import numpy as np
import pytest
from scipy import ndimage

from course_lib.shapes import vocab as V
from course_lib.shapes.world import (ObjectSpec, SceneSpec, background_image, concept_scene, isolated, make_scene,
                                     render_spec, sample_scene, single_object)


def test_same_seed_same_scene():
    a, b = make_scene(123), make_scene(123)
    assert a.caption == b.caption
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert make_scene(124).caption != a.caption or not np.array_equal(np.asarray(make_scene(124).image), np.asarray(a.image))


@pytest.mark.parametrize("size", [64, 128])
def test_ground_truth_is_consistent(size):
    for seed in range(40):
        s = make_scene(seed, size)
        assert s.image.size == (size, size)
        assert s.background in s.caption
        for o in s.objects:
            assert o.shape in s.caption and o.color in s.caption
            x0, y0, x1, y1 = o.bbox
            ys, xs = np.nonzero(o.mask)
            assert xs.min() == x0 and xs.max() + 1 == x1 and ys.min() == y0 and ys.max() + 1 == y1
            assert not (o.mask & s.background_mask).any()
            assert (o.mask <= o.amodal_mask).all()
            # the visible pixels carry the object's colour
            rgb = np.asarray(s.image)[o.mask].mean(0)
            assert np.abs(rgb - np.array(V.COLORS[o.color][0])).max() < 80


def test_layout_is_the_same_at_any_size():
    small, big = make_scene(7, 64), make_scene(7, 256)
    for a, b in zip(small.objects, big.objects):
        assert np.allclose(np.array(a.centroid) * 4, b.centroid, atol=4)


def test_keypoints_are_corners_and_tips():
    s = single_object("square", "red", rotation=0.0)
    o = s.objects[0]
    corners = [v for k, v in o.keypoints.items() if k.startswith("corner")]
    assert len(corners) == 4
    x0, y0, x1, y1 = o.bbox
    for x, y in corners:
        assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1
    star = single_object("star", "blue").objects[0]
    assert sum(k.startswith("tip") for k in star.keypoints) == 5


def test_training_distribution_never_shows_the_held_out_concept():
    for seed in range(3000):
        spec = sample_scene(seed)
        for o in spec.objects:
            assert o.shape != V.HELD_OUT_SHAPE and o.pattern != V.HELD_OUT_PATTERN
        assert V.CONCEPT_TOKEN not in spec.caption.split()
    c = concept_scene(0)
    assert c.objects[0].shape == V.HELD_OUT_SHAPE and c.objects[0].pattern == V.HELD_OUT_PATTERN


def test_vocabulary_is_rich_enough():
    assert len(V.SHAPES) >= 6 and len(V.COLORS) >= 6 and len(V.BACKGROUNDS) >= 4
    captions = [sample_scene(s).caption for s in range(400)]
    text = " ".join(captions)
    for word in ("small", "large", "tall", "wide", "striped", "left of", "above", "in front of", "checkered"):
        assert word in text
    assert any(len(sample_scene(s).objects) == 3 for s in range(100))


def test_occlusion_puts_the_front_object_on_top():
    for seed in range(3000):
        spec = sample_scene(seed)
        if spec.relation == "in front of":
            s = render_spec(spec)
            front, back = s.objects
            if (front.amodal_mask & back.amodal_mask).any():
                assert (front.mask == front.amodal_mask).all()
                assert not (back.mask == back.amodal_mask).all()
                assert not isolated(s, 1)
                return
    pytest.fail("no occluding scene found")


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown shape"):
        ObjectSpec(shape="dog", color="red")
    with pytest.raises(ValueError, match="unknown colour"):
        ObjectSpec(shape="star", color="pink")
    with pytest.raises(ValueError, match="multiple of 8"):
        make_scene(0, size=60)
    with pytest.raises(ValueError, match="background"):
        SceneSpec((ObjectSpec("star", "red"),), background="grass")


def test_the_background_alone_is_what_a_scene_shows_where_no_object_is():
    from course_lib.shapes.world import background_image
    seen = set()
    for seed in range(100):  # until every background has been compared
        s = make_scene(seed)
        bare = np.asarray(background_image(s.spec.background, s.size))
        assert (bare[s.background_mask] == np.asarray(s.image)[s.background_mask]).all()
        seen.add(s.spec.background)
        if seen == set(V.BACKGROUNDS):
            break
    assert seen == set(V.BACKGROUNDS)
    with pytest.raises(ValueError, match="unknown background"):
        background_image("striped")


@pytest.mark.parametrize("world", ["ground", "hills", "clutter"])
def test_scenery_is_free_content_the_caption_never_names(world):
    from course_lib.shapes.scenery import Scenery

    for seed in range(10_000_000, 10_000_012):
        plain, free = make_scene(seed), make_scene(seed, world=world)
        assert free.caption == plain.caption  # same objects, same words: the scenery is never named
        assert free.spec.objects == plain.spec.objects
        assert isinstance(free.spec.scenery, Scenery) and plain.spec.scenery is None
        a = np.asarray(free.image).astype(int)
        assert (a.max(-1) - a.min(-1))[free.scenery_mask].max() == 0  # grey: the oracle's objects are saturated
        assert not (free.scenery_mask & ~free.background_mask).any()  # objects are drawn over it
        for o, p in zip(free.objects, plain.objects):
            assert (o.mask == p.mask).all()
        # outside the objects and the scenery the picture is the named background itself
        bg = np.asarray(background_image(free.background, 64)).astype(int)
        away = free.background_mask & ~ndimage.binary_dilation(free.scenery_mask, iterations=1)
        assert (np.abs(a - bg)[away].max(-1) <= 1).mean() > 0.99  # (slivers under half a pixel are not in the mask)
    shares = [make_scene(s, world=world).scenery_mask.mean() for s in range(10_000_000, 10_000_030)]
    assert np.mean(shares) > 0.05  # a part of the picture no word decides (a plain scene: none)
    assert make_scene(10_000_001, world=world).image.tobytes() == make_scene(10_000_001, world=world).image.tobytes()


def test_a_plain_world_renders_as_before_and_unknown_worlds_are_refused():
    from course_lib.shapes.scenery import sample_scenery

    s = make_scene(10_000_003)
    assert s.spec.scenery is None and not s.scenery_mask.any()
    assert make_scene(10_000_003, world="plain").image.tobytes() == s.image.tobytes()
    with pytest.raises(ValueError, match="unknown scenery 'forest'"):
        make_scene(1, world="forest")
    with pytest.raises(ValueError, match="unknown background"):
        sample_scenery(0, "ground", "sky")
