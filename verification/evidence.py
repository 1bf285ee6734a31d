"""Image-based evidence check, the model-free default of the judge stage: the target must stand out
from a ring of its surroundings, by mean contrast (normalised by the ring's spread) or by texture.

Its verdicts carry ``kind="evidence_check"`` and no model: they are never presented as a VLM judgement.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from verification.context import CandidateIndex
from verification.settings import EvidenceSettings
from verification.verdict import Sample, Verdict

STAGE = "judge"
KIND = "evidence_check"
STD_FLOOR = 1.0  # grey levels: a perfectly flat ring must not turn noise into contrast


def evidence(image: np.ndarray, mask: np.ndarray, ring_px: int) -> dict[str, float] | None:
    """Contrast |mean_in - mean_ring| / std_ring and texture |log(std_in / std_ring)|, the larger over
    colour channels; None when the ring is empty (the mask fills the image)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    pad = ring_px + 2  # work on the box plus the ring: whole-image dilation is needlessly slow
    window = (slice(max(rows.min() - pad, 0), rows.max() + pad + 1), slice(max(cols.min() - pad, 0), cols.max() + pad + 1))
    image, mask = image[window], mask[window]
    inner = ndimage.binary_dilation(mask, iterations=1)  # skip the partial-volume boundary
    ring = ndimage.binary_dilation(mask, iterations=1 + ring_px) & ~inner
    if ring.sum() == 0:
        return None
    channels = image[..., None] if image.ndim == 2 else image
    contrast = texture = 0.0
    for c in range(channels.shape[-1]):
        values = channels[..., c].astype(np.float64)
        inside, around = values[mask], values[ring]
        std_in, std_ring = max(inside.std(), STD_FLOOR), max(around.std(), STD_FLOOR)
        contrast = max(contrast, abs(inside.mean() - around.mean()) / std_ring)
        texture = max(texture, abs(float(np.log(std_in / std_ring))))
    return {"contrast": round(float(contrast), 3), "texture": round(texture, 3), "ring_pixels": int(ring.sum())}


class EvidenceJudge:
    name = STAGE

    def __init__(self, settings: EvidenceSettings, index: CandidateIndex):
        self.settings = settings
        self.index = index

    def __call__(self, sample: Sample) -> Verdict:
        cand = sample.candidate
        try:
            image, mask = self.index.image(cand.image), self.index.mask(cand.mask)
        except (OSError, ValueError) as exc:
            return Verdict(STAGE, False, "evidence_unreadable", {"error": f"{type(exc).__name__}: {exc}"},
                           kind=KIND)
        if image.shape[:2] != mask.shape:
            return Verdict(STAGE, False, "evidence_unreadable",
                           {"error": f"image {image.shape[:2]} and mask {mask.shape} differ"}, kind=KIND)
        measured = evidence(image, mask, self.settings.ring_px)
        if measured is None:
            return Verdict(STAGE, False, "no_surroundings", {"why": "the mask leaves no ring to compare"},
                           kind=KIND)
        s = self.settings
        details = {**measured, "min_contrast": s.min_contrast, "min_texture": s.min_texture}
        passed = measured["contrast"] >= s.min_contrast or measured["texture"] >= s.min_texture
        return Verdict(STAGE, passed, "ok" if passed else "no_visual_evidence", details, kind=KIND,
                       score=measured["contrast"])
