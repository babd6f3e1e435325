"""The naive suite's scoring: what the edit should leave alone, outside the objects."""
import numpy as np
from PIL import Image

from course_tools.bench.naive import score_case, summary, swap_cases
from course_lib.shapes.world import make_scene, with_scenery


def test_swap_cases_change_one_word_of_the_first_object():
    cases = swap_cases(10)
    assert len(cases) == 10 and sum(len(s.objects) == 2 for s, _, _ in cases) == 3
    for src, tgt, kind in cases:
        a, b = src.objects[0], tgt.objects[0]
        assert (a.color != b.color) == (kind == "colour") and (a.shape != b.shape) == (kind == "shape")
        assert len(src.caption.split()) == len(tgt.caption.split())
        assert sum(x != y for x, y in zip(src.caption.split(), tgt.caption.split())) == 1
        assert b.color not in {o.color for o in src.objects[1:]}  # never another object's colour


def test_scores_tell_redrawn_scenery_from_kept_scenery():
    from course_lib.shapes.world import render_spec

    records = []
    for seed in range(10_000_000, 10_000_008):
        src = with_scenery(make_scene(seed, n_objects=1).spec, seed, "ground")
        tgt = src.replace_object(0, color="blue" if src.objects[0].color != "blue" else "red")
        source = render_spec(src).image
        kept = render_spec(tgt).image  # the new colour, everything else as it was
        redrawn = render_spec(with_scenery(tgt, seed + 100, "ground")).image  # the new colour, other scenery
        r = score_case(source, redrawn, kept, src, tgt)
        assert r["psnr_method"] == float("inf") and r["iou_method"] == 1.0
        assert r["source_right"] and r["naive_right"] and r["method_right"]
        records.append(r)
    s = summary(records)
    assert s["psnr_naive"] < 22 and s["iou_naive"] < 0.6
    assert s["naive_fails"] >= 0.75 and s["method_keeps"] == 1.0 and s["both"] == s["naive_fails"]
    # on a plain world there is no free content: IoU 1 both ways, and only PSNR speaks
    plain = make_scene(10_000_000, n_objects=1).spec
    img = render_spec(plain).image
    r = score_case(img, img, img, plain, plain)
    assert r["iou_naive"] == r["iou_method"] == 1.0 and r["free_share"] < 0.02
