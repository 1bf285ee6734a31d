"""Anatomical facts the builder needs: which body region a structure belongs to, and display names.

Kept small and explicit; verification's plausibility vocabulary builds on the same table.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

# Keyword (matched against a normalised label name) -> body region.
REGION_KEYWORDS: dict[str, str] = {
    "brain": "brain", "tumour": "brain", "glioma": "brain", "hippocampus": "brain", "ventricle_brain": "brain",
    "lung": "chest", "trachea": "chest", "heart": "chest", "atrium": "chest", "myocardium": "chest",
    "pulmonary": "chest", "esophagus": "chest", "thyroid": "neck", "carotid": "neck", "rib": "chest",
    "sternum": "chest", "costal": "chest", "subclavian": "chest", "brachiocephalic": "chest",
    "liver": "abdomen", "spleen": "abdomen", "kidney": "abdomen", "pancreas": "abdomen",
    "gallbladder": "abdomen", "stomach": "abdomen", "duodenum": "abdomen", "adrenal": "abdomen",
    "bowel": "abdomen", "colon": "abdomen", "aorta": "abdomen", "vena_cava": "abdomen", "portal": "abdomen",
    "hepatic": "abdomen", "polyp": "colon",
    "bladder": "pelvis", "prostate": "pelvis", "hip": "pelvis", "femur": "pelvis", "sacrum": "pelvis",
    "gluteus": "pelvis", "iliac": "pelvis", "uterus": "pelvis", "rectum": "pelvis",
}


def normalize_label(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def region_of(label: str) -> str | None:
    low = normalize_label(label)
    for keyword, region in REGION_KEYWORDS.items():
        if keyword in low:
            return region
    return None


def infer_body_region(labels: Iterable[str]) -> str:
    """The most common region among a source's label names, 'unknown' if none is recognised."""
    votes = Counter(r for r in (region_of(name) for name in labels) if r)
    if not votes:
        return "unknown"
    return votes.most_common(1)[0][0]


def display_name(label: str) -> str:
    """'kidney_left' -> 'left kidney', 'vertebrae_L1' -> 'L1 vertebra', 'inferior_vena_cava' -> 'inferior vena cava'."""
    parts = [p for p in re.split(r"[_\s]+", label.strip()) if p]
    if not parts:
        return label
    if parts[0].lower() in ("vertebrae", "vertebra") and len(parts) == 2:
        return f"{parts[1]} vertebra"
    lowered = [p if re.fullmatch(r"[A-Z]\d+", p) else p.lower() for p in parts]
    for side in ("left", "right"):
        if side in lowered and lowered[0] != side:
            lowered.remove(side)
            lowered.insert(0, side)
    return " ".join(lowered)


def side_in_name(label: str) -> str | None:
    """The patient side a label's name states ('kidney_left' -> 'left'), or None."""
    tokens = set(re.split(r"[^a-z]+", label.lower()))
    if "left" in tokens and "right" not in tokens:
        return "left"
    if "right" in tokens and "left" not in tokens:
        return "right"
    return None


# Structures whose centre marks the patient's left/right midline.
MIDLINE_KEYWORDS = ("vertebra", "spinal_cord", "sacrum", "trachea", "sternum")


def is_midline_structure(label: str) -> bool:
    low = normalize_label(label)
    return any(k in low for k in MIDLINE_KEYWORDS)
