"""Shapes outside ShapesWorld's vocabulary, drawn the way ShapesWorld draws its own (flat palette colour, white
background, anti-aliased at 4x), to measure what the judge wrongly accepts as a circle, square or triangle.

A kind's `size` is the side of its bounding box before rotation (as `ShapeObject.size`); elongated kinds take it
as their long side. `random_foreign_scene` draws one at a random size, position, colour and (where the kind allows
it) rotation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from vgt.data.shapes import BACKGROUND, BORDER, COLORS, SUPERSAMPLE

FOREIGN_KINDS: tuple[str, ...] = ("ellipse_2to1", "ellipse_1.5to1", "rectangle_2to1", "rectangle_1.5to1", "star",
                                  "cross", "crescent", "semicircle", "hexagon", "pentagon", "diamond",
                                  "inverted_triangle", "blob")


#: kinds whose orientation is part of what they are (a diamond is a square turned 45 deg, an upside-down triangle
#: is a triangle turned 180 deg); every other kind is drawn at a random rotation
FIXED_ORIENTATION = ("diamond", "inverted_triangle", "star")


def _ellipse(aspect: float, n: int = 96) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t) / aspect], axis=1)


def _rectangle(aspect: float) -> np.ndarray:
    return np.array([(-1, -1 / aspect), (1, -1 / aspect), (1, 1 / aspect), (-1, 1 / aspect)], dtype=np.float64)


def _regular(n: int, inner: float | None = None) -> np.ndarray:
    """A regular n-gon (a star with `inner` radius between its points), a vertex pointing up."""
    k = 2 * n if inner else n
    t = -np.pi / 2 + np.arange(k) * 2 * np.pi / k
    r = np.where(np.arange(k) % 2 == 1, inner, 1.0) if inner else np.ones(k)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(arm: float = 1 / 3) -> np.ndarray:
    a = arm
    return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a),
                     (-1, -a), (-a, -a)], dtype=np.float64)


def _semicircle(n: int = 64) -> np.ndarray:
    t = np.linspace(np.pi, 2 * np.pi, n)
    return np.stack([np.cos(t), np.sin(t) + 0.5], axis=1)  # flat side down, box centred


def _blob(rng: np.random.Generator, n: int = 96) -> np.ndarray:
    """An irregular closed curve: a circle whose radius carries random harmonics 2-5 (depth 25-40 %)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    k = np.arange(2, 6)
    amplitude = rng.dirichlet(np.ones(len(k))) * rng.uniform(0.25, 0.4)
    r = 1 + (amplitude[:, None] * np.cos(k[:, None] * t + rng.uniform(0, 2 * np.pi, len(k))[:, None])).sum(axis=0)
    points = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    return points / np.abs(points).max()


def outline(kind: str, rng: np.random.Generator) -> np.ndarray:
    """The kind's outline as polygon vertices in [-1, 1]^2 (y down), before rotation."""
    outlines = {
        "ellipse_2to1": lambda: _ellipse(2.0), "ellipse_1.5to1": lambda: _ellipse(1.5),
        "rectangle_2to1": lambda: _rectangle(2.0), "rectangle_1.5to1": lambda: _rectangle(1.5),
        "star": lambda: _regular(5, inner=0.45), "cross": _cross, "semicircle": _semicircle,
        "hexagon": lambda: _regular(6), "pentagon": lambda: _regular(5),
        "diamond": lambda: np.array([(0, -1), (1, 0), (0, 1), (-1, 0)], dtype=np.float64),
        "inverted_triangle": lambda: np.array([(-1, -1), (1, -1), (0, 1)], dtype=np.float64),
        "blob": lambda: _blob(rng),
    }
    if kind == "crescent":
        raise ValueError("a crescent is no polygon; draw it with draw_foreign")
    if kind not in outlines:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(FOREIGN_KINDS)}")
    return outlines[kind]()


def draw_foreign(image: Image.Image, kind: str, color: tuple[int, int, int], center: tuple[float, float],
                 size: float, rng: np.random.Generator, rotation: float | None = None) -> None:
    """Draw a kind into a supersampled image, `center`/`size` in its pixels; `rotation` in radians (None: random
    for kinds not in FIXED_ORIENTATION)."""
    if rotation is None:
        rotation = 0.0 if kind in FIXED_ORIENTATION else float(rng.uniform(0, 2 * np.pi))
    half = size / 2
    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    turn = np.array([[np.cos(rotation), -np.sin(rotation)], [np.sin(rotation), np.cos(rotation)]])
    if kind == "crescent":  # a disc with a disc of 80 % its radius cut out, 45 % off centre
        outer = _ellipse(1.0)
        inner = 0.8 * _ellipse(1.0) + np.array([0.45, 0.0])
        for points, fill in ((outer, 255), (inner, 0)):
            xy = points @ turn.T * half + np.asarray(center)
            draw.polygon([tuple(p) for p in xy], fill=fill)
    else:
        xy = outline(kind, rng) @ turn.T * half + np.asarray(center)
        draw.polygon([tuple(p) for p in xy], fill=255)
    image.paste(Image.new("RGB", image.size, color), (0, 0), mask)


def random_foreign_scene(kind: str, resolution: int, rng: np.random.Generator,
                         size_range: tuple[float, float] = (0.2, 0.4)) -> tuple[Image.Image, str]:
    """One foreign shape on ShapesWorld's background at a random size (fraction of the image side), position,
    palette colour and rotation, anti-aliased like `render_scene`; returns (image, colour name)."""
    big = resolution * SUPERSAMPLE
    size = float(rng.uniform(*size_range))
    lo, hi = BORDER + size / 2, 1 - BORDER - size / 2
    center = rng.uniform(lo, hi, 2) * big
    color = str(rng.choice(list(COLORS)))
    image = Image.new("RGB", (big, big), BACKGROUND)
    draw_foreign(image, kind, COLORS[color], (float(center[0]), float(center[1])), size * big, rng)
    return image.resize((resolution, resolution), Image.BOX), color
