"""Shape, size, location, relation and intensity cues of a target, each a measured value and a word.

Patient sides come only from geometry that is known: the affine for volumes (RAS+: +x is the patient's
right), the declared radiological convention for 2D images; never from pixel position otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import perimeter as perimeter_of

from builder.anatomy import display_name
from builder.records import Cue, Cues, Relation, Slice, Target
from builder.slicing import BODY_HU


@dataclass(frozen=True)
class CueSettings:
    size_words: tuple[float, float, float] = (0.002, 0.02, 0.08)  # tiny < a ≤ small < b ≤ medium < c ≤ large
    side_majority: float = 0.8  # share of the target's pixels on one side to call it that side
    max_relations: int = 5  # nearest other structures described
    adjacency_px: int = 2
    inside_fraction: float = 0.9
    ct_iso_hu: float = 15.0  # CT: |mean difference| below this is isodense
    iso_effect: float = 0.5  # other modalities: |difference| / ring std below this is iso

    @classmethod
    def from_dict(cls, data: dict) -> CueSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "size_words" in known:
            known["size_words"] = tuple(known["size_words"])
        return cls(**known)


SIZE_WORDS = ("tiny", "small", "medium", "large")
ROW_WORDS = ("upper", "middle", "lower")
COL_WORDS = ("left", "center", "right")


def size_word(fraction: float, bounds: tuple[float, float, float]) -> str:
    return SIZE_WORDS[int(np.searchsorted(bounds, fraction, side="right"))]


def rank_word(rank: int, n: int) -> str:
    if n == 1:
        return "only"
    if rank == n:
        return "smallest"
    return {1: "largest", 2: "second largest", 3: "third largest"}.get(rank, f"rank {rank} by size")


def shape_word(elongation: float, circularity: float, solidity: float) -> str:
    if solidity < 0.75:
        return "irregular"
    if elongation >= 2.5:
        return "elongated"
    if solidity < 0.9 and circularity < 0.6:
        return "lobulated"
    if elongation < 1.3 and circularity >= 0.75:
        return "round"
    return "oval"


def grid_word(row: int, col: int) -> str:
    if (row, col) == (1, 1):
        return "center of the image"
    return f"{ROW_WORDS[row]} {COL_WORDS[col]} of the image"


def intensity_words(modality: str) -> tuple[str, str, str]:
    """(brighter, darker, similar) in the modality's own vocabulary."""
    if modality == "CT":
        return "hyperdense", "hypodense", "isodense"
    if modality == "MRI":
        return "hyperintense", "hypointense", "isointense"
    return "brighter", "darker", "similar"


def _grey(slice_: Slice) -> np.ndarray:
    if slice_.raw is not None:
        return slice_.raw.astype(np.float32, copy=False)
    image = slice_.image
    return image.mean(axis=2, dtype=np.float32) if image.ndim == 3 else image.astype(np.float32)


def _crop(target: Target, pad: int) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (int(v) for v in target.bbox)
    h, w = target.mask.shape
    return slice(max(0, y0 - pad), min(h, y1 + pad)), slice(max(0, x0 - pad), min(w, x1 + pad))


def intensity_cue(target: Target, grey: np.ndarray, settings: CueSettings) -> Cue:
    """Mean inside the mask against a ring around it (other structures' pixels included: they are context)."""
    radius = max(3, int(round(0.15 * math.sqrt(target.area))))
    window = _crop(target, radius + 1)
    mask = target.mask[window]
    # = binary_dilation(mask, iterations=radius) (a diamond of taxicab radius), in one O(N) chamfer pass
    # instead of ``radius`` full passes (radius reaches ~100 px on large endoscopy polyps)
    ring = (ndimage.distance_transform_cdt(~mask, metric="taxicab") <= radius) & ~mask
    inside, around = grey[window][mask], grey[window][ring]
    brighter, darker, similar = intensity_words(target.slice.case.modality)
    if around.size == 0:
        return Cue(0.0, similar)
    delta = float(inside.mean() - around.mean())
    spread = float(around.std()) + 1e-6
    effect = delta / spread
    if target.slice.case.modality == "CT" and target.slice.raw is not None:
        iso = abs(delta) < settings.ct_iso_hu
    else:
        iso = abs(effect) < settings.iso_effect
    word = similar if iso else (brighter if delta > 0 else darker)
    return Cue(round(effect, 3), word)


def patient_side_cue(target: Target, settings: CueSettings) -> Cue | None:
    """Share of the target on the patient's left (value) and the side word; None where sides are unknown."""
    s = target.slice
    known = s.pixel_to_world is not None and s.midline_x is not None
    if not known and s.case.orientation != "radiological":
        return None
    window = _crop(target, 0)
    rows, cols = np.nonzero(target.mask[window])
    rows, cols = rows + window[0].start, cols + window[1].start
    if known:
        world_x = s.pixel_to_world[0, 0] * cols + s.pixel_to_world[0, 1] * rows + s.pixel_to_world[0, 2]
        left_share = float(np.mean(world_x < s.midline_x))  # RAS+: smaller x is further to the patient's left
    else:  # declared radiological 2D image: the patient's left is on the image's right
        left_share = float(np.mean(cols + 0.5 > s.width / 2))
    if left_share >= settings.side_majority:
        return Cue(round(left_share, 3), "left")
    if left_share <= 1 - settings.side_majority:
        return Cue(round(left_share, 3), "right")
    return Cue(round(left_share, 3), "midline")


def body_rows(slice_: Slice) -> tuple[float, float]:
    """Row span of the body (CT) or of the image, for anterior/posterior position."""
    if slice_.raw is not None and slice_.case.modality == "CT":
        rows = np.flatnonzero((slice_.raw > BODY_HU).any(axis=1))
        if len(rows):
            return float(rows[0]), float(rows[-1] + 1)
    return 0.0, float(slice_.height)


def vertical_cue(target: Target, centroid_row: float) -> Cue | None:
    s = target.slice
    if s.plane == "2d":
        return None  # image-relative position is the grid cue's job
    top, bottom = body_rows(s)
    position = 2 * (centroid_row + 0.5 - top) / max(bottom - top, 1.0) - 1  # −1 top … +1 bottom
    up, down = ("anterior", "posterior") if s.plane == "axial" else ("superior", "inferior")
    word = up if position < -0.2 else down if position > 0.2 else "mid"
    return Cue(round(float(position), 3), word)


def horizontal_relation(target_box, other_box, s: Slice) -> str | None:
    """Relation code when the target lies wholly on one side of the other along the image's x axis."""
    if target_box[2] <= other_box[0]:
        image_side = "left"
    elif target_box[0] >= other_box[2]:
        image_side = "right"
    else:
        return None
    if s.plane == "sagittal":
        return "anterior_to" if image_side == "left" else "posterior_to"
    if s.directions is not None and s.directions[0] == "left":  # radiological: image right = patient left
        return "patient_left_of" if image_side == "right" else "patient_right_of"
    return f"{image_side}_of_image"


def vertical_relation(target_box, other_box, s: Slice) -> str | None:
    if target_box[3] <= other_box[1]:
        up = True
    elif target_box[1] >= other_box[3]:
        up = False
    else:
        return None
    if s.plane == "axial":
        return "anterior_to" if up else "posterior_to"
    return "above" if up else "below"


RELATION_PHRASES = {
    "inside": "inside the {}", "contains": "containing the {}", "adjacent_to": "adjacent to the {}",
    "above": "above the {}", "below": "below the {}", "anterior_to": "anterior to the {}",
    "posterior_to": "posterior to the {}", "patient_left_of": "to the patient's left of the {}",
    "patient_right_of": "to the patient's right of the {}", "left_of_image": "left of the {} in the image",
    "right_of_image": "right of the {} in the image",
}


def relations_of(target: Target, others: dict[int, tuple[slice, slice]], settings: CueSettings) -> tuple[Relation, ...]:
    """Relations to the nearest other labelled structures of the slice (by box gap)."""
    s = target.slice
    tb = target.bbox

    def gap(box) -> float:
        dx = max(box[1].start - tb[2], tb[0] - box[1].stop, 0)
        dy = max(box[0].start - tb[3], tb[1] - box[0].stop, 0)
        return math.hypot(dx, dy)

    nearest = sorted((gap(box), label_id) for label_id, box in others.items() if label_id != target.label_id)
    out: list[Relation] = []
    pad = settings.adjacency_px
    window = _crop(target, pad + 1)
    near_mask = ndimage.binary_dilation(target.mask[window], iterations=pad)
    # holes of the target lie inside its box: fill there, not over the whole image
    target_box = _crop(target, 0)
    filled_target = ndimage.binary_fill_holes(target.mask[target_box]) if nearest else None
    for _, label_id in nearest[: settings.max_relations]:
        box = others[label_id]
        other_box = (box[1].start, box[0].start, box[1].stop, box[0].stop)
        other_in_box = s.label_map[box] == label_id  # every test below stays inside one of the two boxes
        filled_other = ndimage.binary_fill_holes(other_in_box)  # its holes lie inside its box
        codes = []
        if (target.mask[box] & filled_other).sum() >= settings.inside_fraction * target.area:
            codes.append("inside")
        else:
            if (near_mask & (s.label_map[window] == label_id)).any():
                codes.append("adjacent_to")
            codes += [c for c in (horizontal_relation(tb, other_box, s), vertical_relation(tb, other_box, s)) if c]
        other_in_target = (s.label_map[target_box] == label_id) & filled_target
        if other_in_target.sum() >= settings.inside_fraction * other_in_box.sum():
            codes.append("contains")
        name = s.case.label_names[label_id]
        out += [Relation(code, name, RELATION_PHRASES[code].format(display_name(name))) for code in codes]
    return tuple(out)


@dataclass(frozen=True)
class Geometry:
    """Moments of one instance: what ordering and the elongation cue need."""

    area: int
    row: float
    col: float
    major: float  # axis lengths of the ellipse with the same second moments (as skimage's regionprops)
    minor: float


def order_cues(me: Geometry, group: list[Geometry], s: Slice) -> tuple[Cue, ...]:
    """Ordinal words among same-label instances, only where the difference is clear."""
    n = len(group)
    if n < 2:
        return ()
    cues: list[Cue] = []
    areas = sorted((g.area for g in group), reverse=True)
    rank = 1 + sum(1 for g in group if g.area > me.area)
    distinct = all(areas[i] >= 1.2 * areas[i + 1] for i in range(n - 1))
    if distinct:
        if rank == 1:
            cues.append(Cue(rank, "the larger" if n == 2 else "the largest"))
        elif rank == n:
            cues.append(Cue(rank, "the smaller" if n == 2 else "the smallest"))

    def extreme(values: list[float], mine: float, low_words: tuple[str, str], high_words: tuple[str, str],
                min_gap: float) -> None:
        ordered = sorted(values)
        if any(b - a < min_gap for a, b in zip(ordered, ordered[1:])):
            return
        position = ordered.index(mine) + 1
        if position == 1:
            cues.append(Cue(position, low_words[0] if n == 2 else low_words[1]))
        elif position == n:
            cues.append(Cue(position, high_words[0] if n == 2 else high_words[1]))

    min_gap = 0.25 * math.sqrt(sum(g.area for g in group) / n)
    if s.plane == "axial":
        vertical = (("the more anterior", "the most anterior"), ("the more posterior", "the most posterior"))
    elif s.plane in ("coronal", "sagittal"):
        vertical = (("the more superior", "the most superior"), ("the more inferior", "the most inferior"))
    else:
        vertical = (("the upper", "the uppermost"), ("the lower", "the lowermost"))
    extreme([g.row for g in group], me.row, *vertical, min_gap)
    if s.plane == "sagittal":
        horizontal = (("the more anterior", "the most anterior"), ("the more posterior", "the most posterior"))
    elif s.directions is not None and s.directions[0] == "left":
        # comparative, not absolute: of two lesions in the right lobe, one is still the more left-sided
        horizontal = (("the more right-sided one", "the most right-sided one"),
                      ("the more left-sided one", "the most left-sided one"))
    else:
        horizontal = (("the one on the left of the image", "the leftmost in the image"),
                      ("the one on the right of the image", "the rightmost in the image"))
    extreme([g.col for g in group], me.col, *horizontal, min_gap)
    return tuple(cues)


def solidity_of(mask: np.ndarray, area: int) -> float:
    """Pixel area over the pixel count of the convex hull. The hull comes from Qhull over the boundary
    pixels' centres and its pixel count from Pick's theorem (area + perimeter / 2 + 1), instead of
    rasterising the hull image (skimage's way), which dominated cue time on large masks."""
    rows, cols = np.nonzero(mask & ~ndimage.binary_erosion(mask))
    try:
        hull = ConvexHull(np.stack([cols, rows], axis=1).astype(float))
    except (QhullError, ValueError):  # a line or a few pixels: the mask is its own hull
        return 1.0
    return float(min(1.0, area / (hull.volume + hull.area / 2 + 1)))  # 2D: volume = area, area = perimeter


def body_area(slice_: Slice) -> int:
    """Pixels of the body outline of a CT slice (0 where there is no body to measure against)."""
    if slice_.raw is None or slice_.case.modality != "CT":
        return 0
    return int(ndimage.binary_fill_holes(slice_.raw > BODY_HU).sum())


def geometry_of(target: Target) -> Geometry:
    window = _crop(target, 0)
    rows, cols = np.nonzero(target.mask[window])
    rows, cols = rows + window[0].start, cols + window[1].start
    cov = np.cov(np.stack([rows, cols]).astype(float), bias=True) if target.area > 1 else np.zeros((2, 2))
    low, high = np.clip(np.linalg.eigvalsh(cov), 0, None)
    return Geometry(target.area, float(rows.mean()), float(cols.mean()), 4 * math.sqrt(high), 4 * math.sqrt(low))


@dataclass(frozen=True)
class SliceContext:
    """What every target of a slice measures against, computed once per slice."""

    grey: np.ndarray  # intensities for contrast (HU for CT volumes)
    boxes: dict[int, tuple[slice, slice]]  # label id -> its bounding box, for every label present
    body: int  # body outline pixels (CT), 0 when there is none


def slice_context(s: Slice) -> SliceContext:
    boxes = {i + 1: box for i, box in enumerate(ndimage.find_objects(s.label_map)) if box is not None}
    return SliceContext(_grey(s), boxes, body_area(s))


def compute_cues(group: list[Target], settings: CueSettings, context: SliceContext) -> None:
    """Fill ``cues`` of every target of one label group (they see each other for ordering)."""
    s = group[0].slice
    grey, others, body = context.grey, context.boxes, context.body
    geometries = [geometry_of(t) for t in group]
    ranked = sorted(range(len(group)), key=lambda i: -group[i].area)
    for i, target in enumerate(group):
        geo = geometries[i]
        window = _crop(target, 1)
        elongation = geo.major / max(geo.minor, 1.0)
        perimeter = max(float(perimeter_of(target.mask[window])), 1.0)
        circularity = float(min(1.0, 4 * math.pi * target.area / perimeter**2))
        solidity = solidity_of(target.mask[window], target.area)
        fraction = target.area / float(target.mask.size)
        size_of_body = None
        if body:
            body_share = target.area / body
            size_of_body = Cue(round(body_share, 5), size_word(body_share, settings.size_words))
        grid_row = min(2, int(3 * (geo.row + 0.5) / s.height))
        grid_col = min(2, int(3 * (geo.col + 0.5) / s.width))
        dy = (geo.row + 0.5) / s.height - 0.5
        dx = (geo.col + 0.5) / s.width - 0.5
        radial = math.hypot(dx, dy) / math.hypot(0.5, 0.5)
        centrality = "central" if radial < 0.25 else "peripheral" if radial > 0.55 else "intermediate"
        rank = ranked.index(i) + 1
        target.cues = Cues(
            size=Cue(round(fraction, 5), size_word(fraction, settings.size_words)),
            size_of_body=size_of_body,
            size_rank=Cue(rank, rank_word(rank, len(group))),
            elongation=Cue(round(elongation, 3), "elongated" if elongation >= 2.5 else "compact"),
            circularity=Cue(round(circularity, 3), "circular" if circularity >= 0.75 else "non-circular"),
            solidity=Cue(round(solidity, 3), "solid" if solidity >= 0.9 else "concave"),
            shape=Cue(shape_word(elongation, circularity, solidity), shape_word(elongation, circularity, solidity)),
            grid=Cue([grid_row, grid_col], grid_word(grid_row, grid_col)),
            patient_side=patient_side_cue(target, settings),
            vertical=vertical_cue(target, geo.row),
            centrality=Cue(round(radial, 3), centrality),
            intensity=intensity_cue(target, grey, settings),
            order=order_cues(geo, geometries, s),
            relations=relations_of(target, others, settings),
        )


def cues_to_dict(cues: Cues) -> dict:
    """JSON form: every cue as {"value", "word"} (None where not derivable)."""
    return asdict(cues)
