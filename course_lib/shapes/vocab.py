"""The Shapes World vocabulary: every word a caption can use, and the held-out concept.

Colours are chosen 50 or more degrees of hue apart and backgrounds are unsaturated, so that the
oracle can read colour and separate objects from the background even on blurry generated images.
"""
from __future__ import annotations

# Training shapes, and the held-out shape that never appears in any training caption or image.
SHAPES = ("circle", "square", "triangle", "star", "hexagon", "cross")
HELD_OUT_SHAPE = "heart"
ALL_SHAPES = SHAPES + (HELD_OUT_SHAPE,)

# name -> (RGB, hue in degrees). Hues at least 50 degrees apart.
COLORS = {
    "red": ((220, 40, 40), 0.0),
    "yellow": ((232, 200, 30), 50.0),
    "green": ((40, 170, 60), 130.0),
    "cyan": ((30, 185, 200), 185.0),
    "blue": ((45, 75, 225), 230.0),
    "purple": ((160, 50, 210), 280.0),
}
COLOR_NAMES = tuple(COLORS)

# Backgrounds: two plain, two textured; all grey-scale so objects stand out by saturation.
BACKGROUNDS = ("white", "gray", "checkered", "gradient")

SIZES = ("small", "medium", "large")  # "medium" is never written in a caption
SIZE_RADIUS = {"small": 0.13, "medium": 0.19, "large": 0.25}  # fraction of the image side
ASPECTS = ("regular", "tall", "wide")  # "regular" is never written
ASPECT_SCALE = {"regular": (1.0, 1.0), "tall": (0.72, 1.38), "wide": (1.38, 0.72)}

# Object patterns: "striped" is in training data, "dotted" is held out.
PATTERNS = ("plain", "striped")
HELD_OUT_PATTERN = "dotted"
ALL_PATTERNS = PATTERNS + (HELD_OUT_PATTERN,)

# Where a single object sits, and how two objects relate.
POSITIONS = ("center", "left", "right", "top", "bottom")
POSITION_PHRASE = {
    "center": "",
    "left": " on the left",
    "right": " on the right",
    "top": " at the top",
    "bottom": " at the bottom",
}
RELATIONS = ("left of", "right of", "above", "below")

# The held-out concept that concept-learning lessons teach under a rare token.
HELD_OUT_CONCEPT = {"shape": HELD_OUT_SHAPE, "pattern": HELD_OUT_PATTERN, "color": "purple"}
CONCEPT_TOKEN = "sks"  # a rare word: in the tokenizer, never in a training caption

FUNCTION_WORDS = ("a", "an", "and", "of", "on", "the", "at", "in", "with", "background",
                  "left", "right", "above", "below", "top", "bottom", "center", "photo",
                  "picture", "drawing", "shape", "object", "big", "tiny", "two", "three", "front")


def caption_words() -> list[str]:
    """Every whole word the tokenizer gives a single token."""
    words = set(ALL_SHAPES) | set(COLOR_NAMES) | set(BACKGROUNDS) | set(FUNCTION_WORDS)
    words |= {s for s in SIZES if s != "medium"} | {"medium"}
    words |= {a for a in ASPECTS if a != "regular"}
    words |= set(ALL_PATTERNS) | {CONCEPT_TOKEN}
    return sorted(words)
