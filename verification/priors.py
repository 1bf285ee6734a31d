"""Medical-prior stage: sides agree (label name, query, computed patient side), named structures are
plausible for the modality and body region, exist in the slice's labels, and stated relations
(in, adjacent to, anterior to, …) hold in the masks."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from builder.anatomy import side_in_name
from builder.records import Candidate
from verification.context import CandidateIndex
from verification.settings import VerificationSettings
from verification.text import Mention, RelationClaim
from verification.verdict import Sample, Verdict, outcome
from verification.vocabulary import BY_NAME, plausible, structures_of_label

STAGE = "priors"
# Words a modality owns: "hyperdense" is CT language, "hyperintense" MRI, "hypoechoic" ultrasound.
FAMILY_OF_MODALITY = {"CT": "CT", "MRI": "MRI", "ultrasound": "ultrasound"}
# Cue relation codes (candidates stage) that support a relation word of the query.
CUE_CODES = {
    "inside": {"inside"}, "contains": {"contains"}, "adjacent_to": {"adjacent_to"},
    "above": {"above"}, "below": {"below"}, "anterior_to": {"anterior_to"}, "posterior_to": {"posterior_to"},
    "superior_to": {"above"}, "inferior_to": {"below"},
    "left_of": {"left_of_image", "patient_left_of"}, "right_of": {"right_of_image", "patient_right_of"},
    "patient_left_of": {"patient_left_of"}, "patient_right_of": {"patient_right_of"},
}

# The relation a cue code disproves; containment and adjacency are computed for every listed neighbour.
OPPOSITE = {"above": "below", "below": "above", "anterior_to": "posterior_to", "posterior_to": "anterior_to",
            "superior_to": "inferior_to", "inferior_to": "superior_to", "left_of": "right_of",
            "right_of": "left_of", "patient_left_of": "patient_right_of", "patient_right_of": "patient_left_of"}


def label_matches(label: str, mention: Mention, *, as_part: bool = False) -> bool:
    """Does a label denote the mentioned structure (and side, when the query gives one)?

    "lesion" is the hypernym of every finding label (a polyp is a lesion). A finding label names its
    organ only as its place: "liver" is not the region of ``liver_lesion`` unless ``as_part`` (when the
    question is whether the slice's labels mention a liver at all)."""
    structures = structures_of_label(label)
    finding_label = any(BY_NAME[s].is_finding for s in structures)
    if mention.structure == "lesion":
        hit = finding_label
    else:
        hit = mention.structure in structures and (as_part or finding_label == BY_NAME[mention.structure].is_finding)
    if not hit:
        return False
    named = side_in_name(label)
    return mention.side is None or named is None or named == mention.side


def names_target(mention: Mention, cand: Candidate, parsed_related: set[int]) -> bool:
    return mention.start not in parsed_related and label_matches(cand.label, Mention(mention.structure, 0, 0))


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(rows.mean()), float(cols.mean())


def _axis(cand: Candidate, toward: str) -> tuple[int, int] | None:
    """(axis 0=row/1=col, sign) such that moving toward the patient direction increases sign*coordinate."""
    opposite = {"left": "right", "right": "left", "anterior": "posterior", "posterior": "anterior",
                "superior": "inferior", "inferior": "superior"}
    dirs = cand.directions or []
    for i, d in enumerate(dirs):
        axis = 1 - i  # directions = (columns point to, rows point to)
        if d == toward:
            return axis, 1
        if d == opposite[toward]:
            return axis, -1
    return None


def relation_holds(kind: str, target: np.ndarray, other: np.ndarray, cand: Candidate,
                   settings: VerificationSettings) -> tuple[bool | None, dict[str, Any]]:
    """True/False from the masks, or None when the image's orientation cannot tell."""
    if kind == "inside":
        share = float((target & ndimage.binary_fill_holes(other)).sum() / max(target.sum(), 1))
        return share >= settings.inside_fraction, {"inside_share": round(share, 3)}
    if kind == "contains":
        share = float((other & ndimage.binary_fill_holes(target)).sum() / max(other.sum(), 1))
        return share >= settings.inside_fraction, {"contained_share": round(share, 3)}
    if kind == "adjacent_to":
        near = ndimage.binary_dilation(target, iterations=settings.adjacency_px)
        return bool((near & other).any()), {"adjacency_px": settings.adjacency_px}
    (tr, tc), (orow, ocol) = _centroid(target), _centroid(other)
    if kind in ("above", "below"):
        delta = orow - tr if kind == "above" else tr - orow
        return delta >= 1, {"row_gap": round(delta, 1)}
    toward = {"anterior_to": "anterior", "posterior_to": "posterior", "superior_to": "superior",
              "inferior_to": "inferior", "patient_left_of": "left", "patient_right_of": "right"}.get(kind)
    if kind in ("left_of", "right_of"):
        if cand.directions and cand.directions[0] in ("left", "right"):
            toward = "left" if kind == "left_of" else "right"  # patient's side where it is known
        elif cand.orientation in ("image", "unknown"):
            delta = ocol - tc if kind == "left_of" else tc - ocol
            return delta >= 1, {"col_gap": round(delta, 1), "frame": "image"}
    axis = _axis(cand, toward) if toward else None
    if axis is None:
        return None, {"why": f"the image's orientation does not give the {toward or kind} direction"}
    index, sign = axis
    mine, theirs = (tr, orow) if index == 0 else (tc, ocol)
    delta = sign * (mine - theirs)
    return delta >= 1, {"gap": round(delta, 1), "frame": "patient"}


class PriorsStage:
    name = STAGE

    def __init__(self, settings: VerificationSettings, index: CandidateIndex):
        self.settings = settings
        self.index = index

    def __call__(self, sample: Sample) -> Verdict:
        cand, parsed = sample.candidate, sample.parsed
        related = parsed.related
        failures: list[tuple[str, dict[str, Any]]] = []
        named, computed = side_in_name(cand.label), cand.cue_word("patient_side")
        if named and computed in ("left", "right") and named != computed:
            failures.append(("label_side_conflict", {"label": cand.label, "patient_side": computed}))
        for m in parsed.mentions:
            if m.side and names_target(m, cand, related):
                if (named and m.side != named) or (computed in ("left", "right") and m.side != computed):
                    failures.append(("laterality_mismatch", {"said": f"{m.side} {m.structure}", "label": cand.label,
                                                             "patient_side": computed}))
                elif not named and computed not in ("left", "right"):
                    failures.append(("laterality_unsupported", {"said": f"{m.side} {m.structure}",
                                                                "patient_side": computed}))
        family = FAMILY_OF_MODALITY.get(cand.modality)
        for c in parsed.of("intensity"):
            if c.extra and c.extra != family:
                failures.append(("modality_term_mismatch", {"word_family": c.extra, "modality": cand.modality}))
        for m in parsed.mentions:
            ok, why = plausible(m.structure, cand.modality, cand.body_region)
            if not ok:
                failures.append(("implausible_structure", {"structure": m.structure, "why": why}))
        for m in parsed.mentions:
            if names_target(m, cand, related) or label_matches(cand.label, m, as_part=True):
                continue
            if not any(label_matches(label, m, as_part=True) for label in cand.labels_in_slice):
                code = "unlabelled_finding" if BY_NAME[m.structure].is_finding else "unlabelled_structure"
                failures.append((code, {"structure": m.structure, "side": m.side,
                                        "labels_in_slice": cand.labels_in_slice}))
        if not failures:
            failures += [f for r in parsed.relations
                         if (f := relation_failure(r, cand, self.index, self.settings))]
        return outcome(STAGE, failures, relations=len(parsed.relations))


def relation_failure(rel: RelationClaim, cand: Candidate, index: CandidateIndex, settings: VerificationSettings
                     ) -> tuple[str, dict[str, Any]] | None:
    """Why a stated relation does not hold for this candidate, or None. The relations the candidates stage
    computed on the full label map confirm it; else the masks of same-slice candidates decide (they may
    miss pieces dropped as specks); else a contrary computed relation refutes it; else it is unverifiable."""
    detail: dict[str, Any] = {"relation": rel.kind, "other": rel.other.structure, "side": rel.other.side}
    if rel.kind in ("medial_to", "lateral_to"):
        return "relation_unverifiable", {**detail, "why": "medial/lateral needs a midline the record lacks"}
    if rel.kind == "inside" and label_matches(cand.label, rel.other, as_part=True) \
            and not label_matches(cand.label, rel.other):
        return None  # the label says so: a liver_lesion lies in the liver
    codes = {r.get("relation") for r in cand.cues.get("relations") or []
             if label_matches(str(r.get("other", "")), rel.other)}
    if codes & CUE_CODES.get(rel.kind, set()):
        return None  # computed on the full label map by the candidates stage
    others = [p for p in index.peers(cand) if label_matches(p.label, rel.other)]
    if others:
        try:
            target, other = index.mask(cand.mask), index.union_mask(others)
        except (OSError, ValueError) as exc:
            return "relation_unverifiable", {**detail, "why": f"mask unreadable: {exc}"}
        holds, info = relation_holds(rel.kind, target, other, cand, settings)
        if holds is True:
            return None
        if holds is False:
            return "relation_false", {**detail, **info, "checked": "masks"}
    contrary = CUE_CODES.get(OPPOSITE.get(rel.kind, ""), set())
    if codes & contrary or (codes and rel.kind in ("inside", "contains", "adjacent_to")):
        return "relation_false", {**detail, "cue_relations": sorted(c for c in codes if c), "checked": "cues"}
    return "relation_unverifiable", {**detail, "why": "neither the masks nor the computed relations decide it"}
