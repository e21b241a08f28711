"""The ShapesEval judge: find the objects in an image from its pixels alone, then apply GenEval's rules.

Detection: the background is the median colour of the image border (an image without a plain border, e.g. noise,
holds no objects). Pixels farther from it than a share of the weakest palette/background contrast are candidates;
connected candidate components are the objects, cut by colour where touching objects of different colours form
one component. A component's colour is the median of its strongest half of pixels (so anti-aliased, blurred or
JPEG-ringing edges do not vote), named by the nearest palette colour within `COLOR_TOLERANCE`; a component whose
pixels are not mixtures of background and one colour is no flat object.
Its shape comes from its *coverage* map (how far each pixel lies from background towards the object's colour,
0..1): every shape hypothesis is fitted by mass and centroid (area = total coverage), rendered anti-aliased (and
slightly blurred, so soft edges are not mistaken for round corners) and compared by soft IoU; the best one is the
candidate. Coverage conserves mass under blur, noise and JPEG, so this fit degrades gracefully where a thresholded
mask would not (at 64 px an object may be 10 px wide). The candidate names the shape only if the component also
passes the outline tests against it (IoU, elongation, coarse and fine radial profile): an ellipse, a star, a
hexagon or a diamond is no circle, square or triangle but "unknown". Components under a quarter of the smallest
ShapesWorld object are specks and ignored; larger ones that match no shape or colour stay as unknown objects:
"something else" in the image.

Rules (GenEval's `evaluate`, with its relative-position rule in the same terms): each `include` entry needs
`count` objects of its class, of its `color` if given, each in `position` relation to the objects matched by an
earlier entry; an `exclude` entry fails the image if `count` or more of its class are present. The default
`strict` rules add what ShapesWorld prompts promise: exact counts for every included class and nothing else in
the image (the number of objects found equals the number asked for).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from vgt.data.shapes import COLORS, MIN_SIZE, SHAPES

BORDER_UNIFORM_FRACTION = 0.6  # share of border pixels that must match the background colour
BORDER_TOLERANCE = 40.0  # RGB distance of a border pixel from the background colour to count as background
MAX_FOREGROUND_FRACTION = 0.6  # more foreground than this is no scene on a plain background
CANDIDATE_CONTRAST = 0.3  # candidate pixels: this share of the weakest palette/background contrast
# Specks (noise, JPEG artefacts) are components under a quarter of the smallest ShapesWorld object, a triangle of
# side MIN_SIZE (half its box): at 64 px the smallest object covers ~46 px and specks of up to ~11 px are ignored
MIN_AREA_FRACTION = 0.25 * 0.5 * MIN_SIZE**2
SPLIT_COVERAGE = 0.8  # share of a many-coloured component its per-colour parts must cover to replace it
COLOR_TOLERANCE = 60.0  # RGB distance from a palette colour to be named after it
COLOR_CONSISTENCY = 0.7  # share of pixels within COLOR_TOLERANCE of the background-to-colour line
SHAPE_MIN_IOU = 0.6  # soft IoU with the best fitted shape to count as that shape
# Outline tests against the fitted shape (rendered the same way). Each tolerance lies midway between the largest
# deviation of ShapesWorld's own renders (64 and 128 px, clean, blurred, noisy, JPEG) and the smallest of the
# foreign shapes (`vgt.eval.foreign`) fitted as that shape; docs/shapes_eval.md has the measurements.
ELONGATION_TOLERANCE = 1.2  # moment-ellipse axis ratio in the fitted shape's frame (renders <= 1.06, 1.5:1 >= 1.32)
PROFILE_SECTORS = 16  # angular sectors of the coarse radial profile (stars, crosses, blobs, wrong orientation)
# its largest sector-radius difference, in equal-area-circle radii
PROFILE_TOLERANCE = {"circle": 0.13, "square": 0.14, "triangle": 0.17}
HARMONIC_SECTORS = 48  # angular sectors of the fine radial profile (hexagons, pentagons, diamonds)
HARMONICS = (3, 8)  # its Fourier harmonics compared: 3- to 8-fold corners
# largest harmonic amplitude of the fine profile difference, in equal-area-circle radii
HARMONIC_TOLERANCE = {"circle": 0.045, "square": 0.05, "triangle": 0.07}
# pixel quantisation grows as an object shrinks: below this radius (px) both profile tolerances grow as 1/radius
QUANTIZATION_RADIUS = 7.0
COVERAGE_FLOOR = 0.15  # coverage below this is background noise, not object mass
FIT_BLURS = (0.0, 0.6, 1.2)  # Gaussian blurs (px) each hypothesis is also tried with: soft edges are not a shape
FIT_MARGIN = 2  # pixels around a component that still hold its (blurred) coverage
POSITION_THRESHOLD = 0.1  # GenEval's relative-position slack, in units of the objects' box dimensions
RULES = ("strict", "geneval")


@dataclass(frozen=True)
class Detection:
    """A found object: `shape`/`color` are None when unrecognised; `bbox` is (x0, y0, x1, y1) in pixels."""

    shape: str | None
    color: str | None
    bbox: tuple[float, float, float, float]
    centroid: tuple[float, float]
    area: float
    shape_iou: float

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "bbox": [round(v, 2) for v in self.bbox],
                "centroid": [round(c, 2) for c in self.centroid], "area": round(self.area, 1),
                "shape_iou": round(self.shape_iou, 3)}


@dataclass
class Verdict:
    correct: bool
    reasons: list[str] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)


_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], dtype=np.float32)
_SUBSAMPLES = 4  # per pixel axis when rendering a hypothesis


def _fit_box(shape: str, area: float, cx: float, cy: float) -> tuple[float, float, float]:
    """(box centre x, box centre y, side) of `shape` with the given area and centre of mass."""
    if shape == "circle":
        return cx, cy, float(np.sqrt(4 * area / np.pi))
    if shape == "square":
        return cx, cy, float(np.sqrt(area))
    side = float(np.sqrt(2 * area))  # upright triangle: mass centre lies side/6 below the box centre
    return cx, cy - side / 6, side


def _coverage(shape: str, box: tuple[float, float, float], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a shape on the pixel grid spanned by `ys` x `xs` (pixel indices)."""
    bx, by, side = box
    offsets = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES
    y = (ys[:, None] + offsets[None, :]).reshape(-1)[:, None] - by
    x = (xs[:, None] + offsets[None, :]).reshape(-1)[None, :] - bx
    half = side / 2
    if shape == "circle":
        inside = x * x + y * y <= half * half
    elif shape == "square":
        inside = (np.abs(x) <= half) & (np.abs(y) <= half)
    else:
        inside = (np.abs(x) <= (y + half) / 2) & (y <= half)
    return inside.reshape(len(ys), _SUBSAMPLES, len(xs), _SUBSAMPLES).mean(axis=(1, 3))


def _moments(coverage: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """(area, centre x, centre y, 2x2 covariance) of a coverage map, pixel centres at index + 0.5."""
    area = float(coverage.sum())
    wy, wx = coverage.sum(axis=1), coverage.sum(axis=0)
    cy, cx = float((wy * (ys + 0.5)).sum() / area), float((wx * (xs + 0.5)).sum() / area)
    dy, dx = ys[:, None] + 0.5 - cy, xs[None, :] + 0.5 - cx
    cov = np.array([[(coverage * dx * dx).sum(), (coverage * dx * dy).sum()],
                    [(coverage * dx * dy).sum(), (coverage * dy * dy).sum()]]) / area + np.eye(2) / 12
    return area, cx, cy, cov


def elongation(cov: np.ndarray, reference: np.ndarray | None = None) -> float:
    """Long over short axis of the moment ellipse (1 for a circle or square, 2 for a 2:1 ellipse), measured in the
    frame where `reference`'s ellipse is a circle: how far, and in any direction, a shape is out of proportion."""
    if reference is not None:
        values, vectors = np.linalg.eigh(reference)
        whiten = vectors @ np.diag(values**-0.5) @ vectors.T
        cov = whiten @ cov @ whiten
    low, high = np.linalg.eigvalsh(cov)
    return float(np.sqrt(high / max(low, 1e-9)))


def radial_profile(coverage: np.ndarray, ys: np.ndarray, xs: np.ndarray, cx: float, cy: float,
                   sectors: int = PROFILE_SECTORS) -> np.ndarray:
    """Radius of each angular sector around (cx, cy) that holds its mass (r = sqrt(2 m / dtheta)), over the radius
    of the circle of the same area: a circle gives all ones, a star or cross deep swings, a hexagon six bumps.
    Pixels are split into 4 x 4 sub-pixels so sector borders do not cut the mass in whole pixels."""
    offsets = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES
    sy = (ys[:, None] + offsets[None, :]).reshape(-1) - cy
    sx = (xs[:, None] + offsets[None, :]).reshape(-1) - cx
    mass = np.repeat(np.repeat(coverage, _SUBSAMPLES, axis=0), _SUBSAMPLES, axis=1) / _SUBSAMPLES**2
    angle = np.arctan2(sy[:, None], sx[None, :])
    sector = ((angle + np.pi) / (2 * np.pi) * sectors).astype(int) % sectors
    per_sector = np.bincount(sector.ravel(), weights=mass.ravel(), minlength=sectors)
    return np.sqrt(2 * per_sector / (2 * np.pi / sectors)) / np.sqrt(mass.sum() / np.pi)


@dataclass(frozen=True)
class ShapeFit:
    """How a component matches its best-fitting vocabulary shape, and whether it passes every test."""

    shape: str | None
    iou: float
    box: tuple[float, float, float]
    elongation: float = 0.0
    profile_error: float = 0.0
    harmonic: float = 0.0
    radius: float = 0.0

    @property
    def accepted(self) -> bool:
        slack = max(1.0, QUANTIZATION_RADIUS / max(self.radius, 1e-6))
        return (self.shape is not None and self.iou >= SHAPE_MIN_IOU
                and self.elongation <= ELONGATION_TOLERANCE
                and self.profile_error <= PROFILE_TOLERANCE[self.shape] * slack
                and self.harmonic <= HARMONIC_TOLERANCE[self.shape] * slack)


def fit_shape(coverage: np.ndarray, top: int = 0, left: int = 0) -> ShapeFit:
    """Best-fitting vocabulary shape of a coverage map whose [0, 0] is pixel (top, left), with the evidence."""
    if float(coverage.sum()) < 4:
        return ShapeFit(None, 0.0, (0.0, 0.0, 0.0))
    ys, xs = np.arange(coverage.shape[0]) + top, np.arange(coverage.shape[1]) + left
    area, cx, cy, cov = _moments(coverage, ys, xs)
    best, best_iou, best_box, best_ideal = None, -1.0, (cx, cy, 0.0), coverage
    for shape in SHAPES:
        box = _fit_box(shape, area, cx, cy)
        sharp = _coverage(shape, box, ys, xs)
        for sigma in FIT_BLURS:
            ideal = ndimage.gaussian_filter(sharp, sigma, mode="constant") if sigma else sharp
            iou = float(np.minimum(ideal, coverage).sum() / max(np.maximum(ideal, coverage).sum(), 1e-6))
            if iou > best_iou:
                best, best_iou, best_box, best_ideal = shape, iou, box, ideal
    if best_ideal.sum() < 4:
        return ShapeFit(None, best_iou, best_box)
    _, icx, icy, icov = _moments(best_ideal, ys, xs)
    error = float(np.abs(radial_profile(coverage, ys, xs, cx, cy) - radial_profile(best_ideal, ys, xs, icx, icy)).max())
    fine = radial_profile(coverage, ys, xs, cx, cy, HARMONIC_SECTORS) - radial_profile(best_ideal, ys, xs, icx, icy,
                                                                                          HARMONIC_SECTORS)
    spectrum = np.abs(np.fft.rfft(fine)) * 2 / HARMONIC_SECTORS
    return ShapeFit(best, best_iou, best_box, elongation(cov, icov), error,
                    float(spectrum[HARMONICS[0]:HARMONICS[1] + 1].max()), float(np.sqrt(area / np.pi)))


def _flat_color(inside: np.ndarray) -> tuple[np.ndarray, bool]:
    """(colour offset from the background, whether the pixels are mixtures of background and that colour) of a
    component's pixel offsets [N, 3]. The colour is the median of the strongest half (blended edges do not vote)."""
    strength = np.linalg.norm(inside, axis=1)
    direction = np.median(inside[strength >= np.median(strength)], axis=0)
    along = inside @ direction / max(float(direction @ direction), 1.0)
    off_line = np.linalg.norm(inside - along[:, None] * direction, axis=1)
    return direction, bool(np.mean(off_line < COLOR_TOLERANCE) >= COLOR_CONSISTENCY)


def _split_by_color(labels: np.ndarray, offset: np.ndarray, background: np.ndarray, min_area: float) -> np.ndarray:
    """Separate touching or overlapping objects of different colours: a component is cut into the connected
    parts of its pixels' nearest palette colours (each pixel's distance to the line from background to that
    colour), if at least two parts of object size cover most of it. Pixels of no part (the blend along the
    seam) go back to the background. A component of one colour stays whole."""
    directions = _PALETTE - background
    labels = labels.copy()
    next_label = int(labels.max()) + 1
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        component = labels[box] == i
        if component.sum() < 2 * min_area:
            continue
        pixels = offset[box]
        t = np.clip(pixels @ directions.T / (directions * directions).sum(axis=1), 0.0, 1.0)
        residual = np.linalg.norm(pixels[..., None, :] - t[..., None] * directions, axis=-1)
        nearest = residual.argmin(axis=-1)
        fits = residual.min(axis=-1) < COLOR_TOLERANCE
        parts = []
        for c in np.unique(nearest[component & fits]):
            pieces, n = ndimage.label(component & fits & (nearest == c))
            sizes = np.bincount(pieces.ravel(), minlength=n + 1)
            # a part is an object with an inside: thin runs of blended seam pixels do not survive one erosion
            parts += [pieces == j for j in range(1, n + 1)
                      if sizes[j] >= min_area and ndimage.binary_erosion(pieces == j).sum() >= min_area / 4]
        if len(parts) < 2 or sum(int(p.sum()) for p in parts) < SPLIT_COVERAGE * component.sum():
            continue
        view = labels[box]
        view[component] = 0
        for part in parts:
            view[part] = next_label
            next_label += 1
    return labels


def _rgb_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    """An image as float32 RGB values in 0..255. Arrays are 0..255 integers, or floats in [0, 1] as a pipeline's
    `output_type="np"` gives them; a float array outside [0, 1] is refused rather than guessed at."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    pixels = np.asarray(image)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {pixels.shape}")
    if np.issubdtype(pixels.dtype, np.floating):
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise ValueError("a float image must hold values in [0, 1] (a pipeline's output_type='np'); pass 0..255 "
                             "pixels as a uint8 array or a PIL image")
        return pixels.astype(np.float32) * 255
    return pixels.astype(np.float32)


def detect_objects(image: Image.Image | np.ndarray) -> list[Detection]:
    """All objects in an image (PIL, uint8 array or float array in [0, 1]), largest first."""
    pixels = _rgb_pixels(image)
    height, width = pixels.shape[:2]
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    background = np.median(border, axis=0)
    if np.mean(np.linalg.norm(border - background, axis=1) < BORDER_TOLERANCE) < BORDER_UNIFORM_FRACTION:
        return []
    contrast = np.linalg.norm(_PALETTE - background, axis=1).min()
    offset = pixels - background
    candidates = np.linalg.norm(offset, axis=2) > max(20.0, CANDIDATE_CONTRAST * contrast)
    if candidates.mean() > MAX_FOREGROUND_FRACTION:
        return []
    min_area = max(4.0, MIN_AREA_FRACTION * height * width)
    labels = _split_by_color(ndimage.label(candidates)[0], offset, background, min_area)
    areas = np.bincount(labels.ravel())
    detections = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or areas[i] < min_area:
            continue
        direction, consistent = _flat_color(offset[box][labels[box] == i])
        distances = np.linalg.norm(_PALETTE - (background + direction), axis=1)
        nearest = int(distances.argmin())
        color = _PALETTE_NAMES[nearest] if consistent and distances[nearest] <= COLOR_TOLERANCE else None
        # Coverage: the share of the way from background to the object's own colour, around the component.
        top, left = max(box[0].start - FIT_MARGIN, 0), max(box[1].start - FIT_MARGIN, 0)
        region = (slice(top, min(box[0].stop + FIT_MARGIN, height)), slice(left, min(box[1].stop + FIT_MARGIN, width)))
        coverage = np.clip(offset[region] @ direction / max(float(direction @ direction), 1.0), 0.0, 1.0)
        coverage[(coverage < COVERAGE_FLOOR) | ((labels[region] != i) & (labels[region] != 0))] = 0.0
        fit = fit_shape(coverage, top, left)
        shape, iou, (bx, by, side) = (fit.shape if fit.accepted and consistent else None), fit.iou, fit.box
        if shape is None:  # no fitted box: fall back to the component's own box
            bx, by = (box[1].start + box[1].stop) / 2, (box[0].start + box[0].stop) / 2
            side = float(max(box[0].stop - box[0].start, box[1].stop - box[1].start))
        detections.append(Detection(shape, color, (bx - side / 2, by - side / 2, bx + side / 2, by + side / 2),
                                    (bx, by), float(coverage.sum()), iou))
    return sorted(detections, key=lambda d: -d.area)


def relative_position(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> set[str]:
    """GenEval's relations of box `a` to box `b`: centre offset minus slack, then a 0.5 cut on its direction."""
    boxes = np.array([a, b], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=1)
    dim_a, dim_b = boxes[:, 1] - boxes[:, 0]
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def apply_rules(detections: list[Detection], metadata: dict, rules: str = "strict") -> tuple[bool, list[str]]:
    """GenEval's verdict for detections against a prompt's `include`/`exclude`; returns (correct, reasons)."""
    if rules not in RULES:
        raise ValueError(f"unknown rules {rules!r}; choose from {', '.join(RULES)}")
    strict = rules == "strict"
    by_class: dict[str, list[Detection]] = defaultdict(list)
    for det in detections:
        if det.shape is not None:
            by_class[det.shape].append(det)
    reasons: list[str] = []
    matched_groups: list[list[Detection] | None] = []
    for req in metadata.get("include", []):
        name, count = req["class"], int(req["count"])
        if name not in SHAPES:
            raise ValueError(f"class {name!r} is not a ShapesEval shape ({', '.join(SHAPES)}); wrong prompt file?")
        found = by_class[name][:count]
        matched = True
        if len(found) < count or (strict and len(by_class[name]) != count):
            matched = False
            reasons.append(f"expected {'exactly ' if strict else ''}{count} {name}, found {len(by_class[name])}")
        else:
            if "color" in req and [d.color for d in found].count(req["color"]) < count:
                matched = False
                reasons.append(f"expected {req['color']} {name}, found {', '.join(str(d.color) for d in found)}")
            if "position" in req and matched:
                relation, target = req["position"]
                targets = matched_groups[target] if target < len(matched_groups) else None
                if targets is None:
                    matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for other in targets:
                            actual = relative_position(obj.bbox, other.bbox)
                            if relation not in actual:
                                matched = False
                                reasons.append(f"expected {name} {relation} target, found {sorted(actual) or 'none'}")
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        if len(by_class[req["class"]]) >= int(req["count"]):
            reasons.append(f"expected fewer than {req['count']} {req['class']}, found {len(by_class[req['class']])}")
    if strict:
        asked = sum(int(req["count"]) for req in metadata.get("include", []))
        if len(detections) != asked:
            reasons.append(f"expected {asked} objects and nothing else, found {len(detections)}")
    return not reasons, reasons


def judge_image(image: Image.Image | np.ndarray, metadata: dict, rules: str = "strict") -> Verdict:
    detections = detect_objects(image)
    correct, reasons = apply_rules(detections, metadata, rules)
    return Verdict(correct, reasons, detections)

