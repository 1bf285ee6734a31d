"""Slices to targets: one target per connected component of a label, grouped by label.

A component must pass a minimum size in pixels and as a fraction of the image; smaller ones are counted
as skipped, never silently dropped. Instances of one label are ordered largest first, so instance 0 is
the largest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from builder.records import BBox, Slice, Target, safe_name

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class TargetSettings:
    min_component_px: int = 20
    min_component_fraction: float = 0.0002  # of the image's pixels
    max_instances: int = 12  # a label split into more pieces than this is noise, not instances

    @classmethod
    def from_dict(cls, data: dict) -> TargetSettings:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def mask_bbox(mask: np.ndarray) -> BBox:
    """[x_min, y_min, x_max, y_max] on pixel edges: columns 10..19 give x_min=10, x_max=20."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise ValueError("empty mask has no box")
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def target_id(slice_: Slice, label: str, instance: int) -> str:
    return f"{slice_.slice_id}__{safe_name(label)}__{instance:02d}"


def label_targets(slice_: Slice, label_id: int, settings: TargetSettings, skipped: Counter) -> list[Target]:
    """The instances of one label in one slice, largest first."""
    label = slice_.case.label_names[label_id]
    components, count = ndimage.label(slice_.label_map == label_id, structure=EIGHT_CONNECTED)
    if count == 0:
        return []
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    min_px = max(settings.min_component_px, settings.min_component_fraction * components.size)
    keep = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_px]
    if len(keep) < count:
        skipped["component_below_min_size"] += count - len(keep)
    if len(keep) > settings.max_instances:
        skipped["label_too_fragmented"] += len(keep)
        return []
    boxes = ndimage.find_objects(components)
    targets = []
    for instance, component in enumerate(keep):
        box = boxes[component - 1]
        mask = components == component
        targets.append(Target(
            target_id=target_id(slice_, label, instance), slice=slice_, label=label, label_id=label_id,
            instance=instance, group_size=len(keep), mask=mask,
            bbox=(float(box[1].start), float(box[0].start), float(box[1].stop), float(box[0].stop)),
            area=int(sizes[component - 1])))
    return targets


def slice_targets(slice_: Slice, settings: TargetSettings, skipped: Counter) -> dict[int, list[Target]]:
    """Targets of every label the slice was selected for, grouped by label id."""
    groups = {}
    for label_id in slice_.labels:
        group = label_targets(slice_, label_id, settings, skipped)
        if group:
            groups[label_id] = group
    return groups
