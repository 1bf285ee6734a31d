"""Geometry stage: the box and mask are sound, and every spatial, size, count, shape and intensity
word of the query agrees with the cues computed from the mask. No coordinates or ids leak.

``claim_failure`` is also the ambiguity stage's test of whether a query's words fit another instance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from builder.anatomy import side_in_name
from builder.records import Candidate
from verification.context import CandidateIndex
from verification.settings import VerificationSettings
from verification.text import Claim, leaks, parse
from verification.verdict import Sample, Verdict, outcome
from verification.vocabulary import structures_of_label

STAGE = "geometry"
BRIGHT = {"hyperdense", "hyperintense", "brighter", "hyperechoic"}
DARK = {"hypodense", "hypointense", "darker", "hypoechoic"}
AXES = {"anterior": "ap", "posterior": "ap", "superior": "si", "inferior": "si"}
ROW_INDEX = {"upper": 0, "middle": 1, "lower": 2}
COL_INDEX = {"left": 0, "center": 1, "right": 2}


def _grid(cand: Candidate) -> tuple[int, int] | None:
    cue = cand.cues.get("grid")
    if not cue or not isinstance(cue.get("value"), (list, tuple)) or len(cue["value"]) != 2:
        return None
    return int(cue["value"][0]), int(cue["value"][1])


def _image_position_ok(word: str, axis: int, cand: Candidate) -> bool:
    """Grid cell agrees; a word for one half also fits the middle cell when the box centre is on that half."""
    grid = _grid(cand)
    index = (ROW_INDEX if axis == 0 else COL_INDEX)[word]
    if grid is None:
        return False
    if grid[axis] == index:
        return True
    if grid[axis] != 1 or index == 1:
        return False
    x0, y0, x1, y1 = cand.bbox
    centre = ((y0 + y1) / 2 / cand.height) if axis == 0 else ((x0 + x1) / 2 / cand.width)
    return centre < 0.5 if index == 0 else centre > 0.5


def order_words(cand: Candidate) -> list[str]:
    """The candidate's ordinal cue words in the query parser's form: 'the more anterior' -> 'most anterior',
    'the one on the patient's left' -> 'leftmost', 'the upper' -> 'uppermost'."""
    out = []
    for cue in cand.cues.get("order") or []:
        w = str(cue.get("word", "")).lower().replace("the more ", "the most ")
        for side in ("left", "right"):
            if w.startswith("the one on") and side in w:
                w = f"{side}most"
        w = {"the upper": "uppermost", "the lower": "lowermost"}.get(w, w)
        out.append(w)
        # the parser's own reading of the cue word ('the more right-sided one' -> 'rightmost')
        out += [c.word for c in parse(w).claims if c.axis == "order" and c.word not in out]
    return out


def _rank_ok(word: str, cand: Candidate, peers: list[Candidate]) -> bool:
    """Comparatives among instances need the candidates stage's ordinal words (given only where the size
    difference is clear); a single instance may be the largest/smallest of every region in the slice."""
    orders = order_words(cand)
    if word in ("largest", "smallest"):
        comparative = "the larger" if word == "largest" else "the smaller"
        if f"the {word}" in orders or comparative in orders:
            return True
        areas = [p.area for p in peers]
        return cand.group_size == 1 and bool(areas) and (
            cand.area > max(areas) if word == "largest" else cand.area < min(areas))
    if word in ("larger", "smaller"):
        return f"the {word}" in orders
    return cand.cue_word("size_rank") == word


def claim_failure(claim: Claim, cand: Candidate, peers: list[Candidate]) -> tuple[str, dict[str, Any]] | None:
    """Why this word does not fit this candidate (reason code, details), or None when it fits."""
    word = claim.word
    detail = {"word": word, "axis": claim.axis}
    if claim.axis == "side" and cand.orientation == "image" and word in COL_INDEX:
        claim = Claim("image_col", word)
    if claim.axis == "side":
        side = cand.cue_word("patient_side")
        if side is None:
            if side_in_name(cand.label) == word:
                return None
            return "side_unsupported", {**detail, "why": "no patient side is known for this image"}
        return None if side == word else ("wrong_side", {**detail, "patient_side": side})
    if claim.axis in ("image_row", "image_col"):
        axis = 0 if claim.axis == "image_row" else 1
        if _image_position_ok(word, axis, cand):
            return None
        return "wrong_position", {**detail, "grid": cand.cue_word("grid")}
    if claim.axis == "vertical":
        cue = cand.cue_word("vertical")
        if cue is None or AXES.get(cue, AXES[word]) != AXES[word]:
            return "spatial_unsupported", {**detail, "vertical": cue, "plane": cand.plane}
        return None if cue == word else ("wrong_position", {**detail, "vertical": cue})
    if claim.axis == "centrality":
        cue = cand.cue_word("centrality")
        return None if cue == word else ("wrong_position", {**detail, "centrality": cue})
    if claim.axis == "medial":
        side, central = cand.cue_word("patient_side"), cand.cue_word("centrality")
        if word == "medial" and (side == "midline" or central == "central"):
            return None
        if word == "lateral" and central == "peripheral" and side != "midline":
            return None
        return "wrong_position", {**detail, "patient_side": side, "centrality": central}
    if claim.axis == "order":
        words = order_words(cand)
        return None if any(word in w for w in words) else ("wrong_order", {**detail, "order": words})
    if claim.axis == "size":
        words = {cand.cue_word("size"), cand.cue_word("size_of_body")}
        if word in words or (word == "small" and "tiny" in words):
            return None
        return "wrong_size", {**detail, "size": sorted(w for w in words if w)}
    if claim.axis == "rank":
        if _rank_ok(word, cand, peers):
            return None
        return "wrong_size_rank", {**detail, "size_rank": cand.cue_word("size_rank")}
    if claim.axis == "count":
        n = int(word)
        mine = structures_of_label(cand.label)
        same_kind = sum(1 for label in cand.labels_in_slice if structures_of_label(label) & mine) if mine else 0
        if (n == -1 and cand.group_size > 1) or n in (cand.group_size, same_kind):
            return None
        return "wrong_count", {**detail, "group_size": cand.group_size, "same_structure_in_slice": same_kind}
    if claim.axis == "shape":
        cue = cand.cue_word("shape")
        return None if cue == word else ("wrong_shape", {**detail, "shape": cue})
    if claim.axis == "intensity":
        cue = cand.cue_word("intensity")
        polarity = "bright" if cue in BRIGHT else "dark" if cue in DARK else "similar" if cue else None
        return None if polarity == word else ("wrong_intensity", {**detail, "intensity": cue})
    return None


def box_mask_failures(cand: Candidate, index: CandidateIndex, settings: VerificationSettings
                      ) -> list[tuple[str, dict[str, Any]]]:
    """Box inside the image and non-degenerate; mask readable, non-empty, big enough, with the box's extent."""
    x0, y0, x1, y1 = (float(v) for v in cand.bbox)
    if not (0 <= x0 and 0 <= y0 and x1 <= cand.width and y1 <= cand.height):
        return [("bbox_outside_image", {"bbox": cand.bbox, "size": [cand.width, cand.height]})]
    if x1 - x0 < 1 or y1 - y0 < 1:
        return [("bbox_degenerate", {"bbox": cand.bbox})]
    try:
        mask = index.mask(cand.mask)
    except (OSError, ValueError) as exc:
        return [("mask_unreadable", {"mask": cand.mask, "error": f"{type(exc).__name__}: {exc}"})]
    if mask.shape != (cand.height, cand.width):
        return [("mask_size_mismatch", {"mask_shape": list(mask.shape), "image": [cand.height, cand.width]})]
    area = int(mask.sum())
    if area == 0:
        return [("empty_mask", {"mask": cand.mask})]
    if area < settings.min_mask_area:
        return [("mask_too_small", {"area": area, "min_mask_area": settings.min_mask_area})]
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    extent = [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
    if max(abs(a - b) for a, b in zip(extent, (x0, y0, x1, y1))) > settings.bbox_tolerance:
        return [("bbox_mask_mismatch", {"bbox": cand.bbox, "mask_extent": extent})]
    return []


class GeometryStage:
    name = STAGE

    def __init__(self, settings: VerificationSettings, index: CandidateIndex):
        self.settings = settings
        self.index = index

    def __call__(self, sample: Sample) -> Verdict:
        cand = sample.candidate
        failures = box_mask_failures(cand, self.index, self.settings)
        if failures:
            return outcome(STAGE, failures)
        hide = {int(v) for v in cand.bbox} | {cand.area, cand.width, cand.height}
        failures += [(code, {"text": text}) for code, text in leaks(sample.query.text, hide)]
        peers = self.index.peers(cand)
        for claim in sample.parsed.claims:
            failure = claim_failure(claim, cand, peers)
            if failure:
                failures.append(failure)
        return outcome(STAGE, failures, claims=len(sample.parsed.claims))
