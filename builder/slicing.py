"""Cases to displayable 2D slices.

Volumes arrive in RAS+ (axis 0 → patient right, 1 → anterior, 2 → superior). Every plane is shown in
the radiological convention: patient right on the image's left, anterior (axial) or superior (coronal,
sagittal) up; sagittal views have anterior on the left. Non-square pixels are resampled to square so
shapes are not distorted. Slices are chosen per structure, deterministically: up to N slices among
those where the structure's area is near its maximum, evenly spread, slivers skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from builder.anatomy import is_midline_structure
from builder.records import Case, Slice, label_ids_present

# CT windows (width, level) in HU.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "abdomen": (400.0, 40.0),
    "liver": (150.0, 30.0),
    "mediastinum": (350.0, 50.0),
    "lung": (1500.0, -600.0),
    "brain": (80.0, 40.0),
    "bone": (1800.0, 400.0),
}
# Default window per body region.
REGION_WINDOWS = {"abdomen": "abdomen", "pelvis": "abdomen", "chest": "lung", "thorax": "lung",
                  "brain": "brain", "head": "brain", "neck": "mediastinum", "spine": "bone", "bone": "bone"}
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
BODY_HU = -500.0  # CT voxels above this are inside the body (air is ≈ −1000)


@dataclass(frozen=True)
class SliceSettings:
    planes: tuple[str, ...] = ("axial",)
    slices_per_structure: int = 3
    near_max_fraction: float = 0.6  # eligible slices hold at least this fraction of the structure's max area
    min_structure_px: int = 30  # skip slivers: a structure smaller than this in a slice never selects it
    mr_percentiles: tuple[float, float] = (0.5, 99.5)

    @classmethod
    def from_dict(cls, data: dict) -> SliceSettings:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "planes" in known:
            bad = [p for p in known["planes"] if p not in PLANE_AXIS]
            if bad:
                raise ValueError(f"unknown planes {bad}; choose from {sorted(PLANE_AXIS)}")
            known["planes"] = tuple(known["planes"])
        if "mr_percentiles" in known:
            known["mr_percentiles"] = tuple(known["mr_percentiles"])
        return cls(**known)


def window_name(case: Case) -> str:
    name = case.window or REGION_WINDOWS.get(case.body_region, "abdomen")
    if name not in CT_WINDOWS:
        raise ValueError(f"unknown CT window '{name}' (known: {sorted(CT_WINDOWS)})")
    return name


def display_scaler(case: Case, settings: SliceSettings):
    """A function mapping raw intensities to uint8: CT windowing or MR percentile scaling."""
    if case.modality == "CT":
        width, level = CT_WINDOWS[window_name(case)]
        lo, hi = level - width / 2, level + width / 2
    else:
        values = case.image[case.image != 0]
        if values.size == 0:
            values = case.image.ravel()
        lo, hi = (float(v) for v in np.percentile(values, settings.mr_percentiles))
        if hi <= lo:
            hi = lo + 1.0

    def scale(raw: np.ndarray) -> np.ndarray:
        return np.clip((raw - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)

    return scale


def structure_areas(label_map: np.ndarray, axis: int, n_labels: int) -> np.ndarray:
    """(slices, labels) pixel counts of every label in every slice along ``axis``."""
    moved = np.moveaxis(label_map, axis, 0)
    return np.stack([np.bincount(s.ravel(), minlength=n_labels)[:n_labels] for s in moved])


def choose_slices(areas: np.ndarray, settings: SliceSettings) -> list[int]:
    """Up to N slices near the structure's maximum area, evenly spread, always including the maximum."""
    if areas.max() < settings.min_structure_px:
        return []
    peak = int(np.argmax(areas))
    threshold = max(settings.min_structure_px, settings.near_max_fraction * areas[peak])
    eligible = np.flatnonzero(areas >= threshold)
    n = settings.slices_per_structure
    if len(eligible) <= n:
        return [int(i) for i in eligible]
    picks = list(dict.fromkeys(int(eligible[i]) for i in np.round(np.linspace(0, len(eligible) - 1, n)).astype(int)))
    if peak not in picks:
        nearest = min(range(len(picks)), key=lambda i: (abs(picks[i] - peak), picks[i]))
        picks[nearest] = peak
    return sorted(set(picks))


def _to_display(plane_2d: np.ndarray) -> np.ndarray:
    """(in-plane axis a, in-plane axis b) → (rows, cols) in the radiological view: both axes flipped, transposed."""
    return plane_2d[::-1, ::-1].T


def _plane_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(volume, index, axis=axis)


def _in_plane_axes(axis: int) -> tuple[int, int]:
    """(axis shown along columns, axis shown along rows)."""
    return {0: (1, 2), 1: (0, 2), 2: (0, 1)}[axis]


PLANE_DIRECTIONS = {  # patient direction of increasing (column, row)
    "axial": ("left", "posterior"),
    "coronal": ("left", "inferior"),
    "sagittal": ("posterior", "inferior"),
}


def midline_x(case: Case) -> tuple[float | None, str | None]:
    """World x (RAS, mm) of the patient's left/right midline, and how it was found.

    Labelled midline structures (vertebrae, spinal cord, trachea, sternum) first; then the body outline
    when it lies wholly inside the field of view; then the scanner's x = 0, which the isocentre puts
    near the midline for most acquisitions.
    """
    ids = [i for i, name in case.label_names.items() if is_midline_structure(name)]
    if ids:
        vox = np.argwhere(np.isin(case.label_map, ids))
        if len(vox):
            return float((case.affine @ np.r_[vox.mean(axis=0), 1])[0]), "midline_structures"
    if case.modality == "CT":
        body_cols = np.flatnonzero((case.image > BODY_HU).any(axis=(1, 2)))
        if len(body_cols) and body_cols[0] > 0 and body_cols[-1] < case.image.shape[0] - 1:
            center = np.r_[(body_cols[0] + body_cols[-1]) / 2.0, np.array(case.image.shape[1:]) / 2.0 - 0.5, 1]
            return float((case.affine @ center)[0]), "body_outline"
    return 0.0, "scanner_origin"


def pixel_to_world(case: Case, axis: int, index: int, zoom: tuple[float, float]) -> np.ndarray:
    """4×3 matrix taking (col, row, 1) in display pixel-centre coordinates to RAS world (x, y, z, 1)."""
    col_axis, row_axis = _in_plane_axes(axis)
    shape = case.image.shape
    m = np.zeros((4, 3))
    m[col_axis] = [-1.0 / zoom[1], 0.0, shape[col_axis] - 0.5 - 0.5 / zoom[1]]
    m[row_axis] = [0.0, -1.0 / zoom[0], shape[row_axis] - 0.5 - 0.5 / zoom[0]]
    m[axis] = [0.0, 0.0, float(index)]
    m[3] = [0.0, 0.0, 1.0]
    return case.affine @ m


def volume_slices(case: Case, settings: SliceSettings) -> Iterator[Slice]:
    scale = display_scaler(case, settings)
    n_labels = int(max(case.label_names, default=0)) + 1
    mid_x, mid_source = midline_x(case)
    for plane in settings.planes:
        axis = PLANE_AXIS[plane]
        areas = structure_areas(case.label_map, axis, n_labels)
        selected: dict[int, list[int]] = {}
        for label_id in sorted(case.label_names):
            for index in choose_slices(areas[:, label_id], settings):
                selected.setdefault(index, []).append(label_id)
        col_axis, row_axis = _in_plane_axes(axis)
        spacing = case.spacing or (1.0, 1.0, 1.0)
        row_mm, col_mm = spacing[row_axis], spacing[col_axis]
        target_mm = min(row_mm, col_mm)
        zoom = (row_mm / target_mm, col_mm / target_mm)
        for index in sorted(selected):
            raw = _to_display(_plane_slice(case.image, axis, index))
            labels = _to_display(_plane_slice(case.label_map, axis, index))
            if abs(zoom[0] - 1) > 0.01 or abs(zoom[1] - 1) > 0.01:
                raw = ndimage.zoom(raw, zoom, order=1, grid_mode=True, mode="nearest")
                labels = ndimage.zoom(labels, zoom, order=0, grid_mode=True, mode="nearest")
            else:
                zoom = (1.0, 1.0)
            yield Slice(case=case, plane=plane, index=index, image=scale(raw), label_map=np.ascontiguousarray(labels),
                        directions=PLANE_DIRECTIONS[plane], pixel_spacing=(target_mm, target_mm),
                        raw=np.ascontiguousarray(raw), pixel_to_world=pixel_to_world(case, axis, index, zoom),
                        midline_x=mid_x, midline_source=mid_source, labels=tuple(selected[index]))


def image_slice(case: Case) -> Slice:
    """A 2D case is its own single slice; its labels are every label present."""
    present = tuple(label_ids_present(case.label_map))
    directions = ("left", None) if case.orientation == "radiological" else None
    return Slice(case=case, plane="2d", index=0, image=case.image, label_map=case.label_map,
                 directions=directions, labels=present)


def slices_of(case: Case, settings: SliceSettings) -> Iterator[Slice]:
    if case.is_volume:
        yield from volume_slices(case, settings)
    else:
        yield image_slice(case)
