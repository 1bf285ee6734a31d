"""Every reason code a stage can give, with what it means: the report's glossary and the card's."""

from __future__ import annotations

REASONS: dict[str, str] = {
    # format
    "malformed_json": "the input line or the model's raw answer is not valid JSON",
    "schema_violation": "the record or the model's answer breaks its JSON Schema",
    "output_schema_violation": "the verified record would break sample.schema.json",
    "target_mismatch": "the query was written for another target",
    "query_too_short": "the query is shorter than the minimum or has no words",
    "query_too_long": "the query exceeds the character or word limit",
    "bad_characters": "markup, control characters or URLs in the query",
    "query_not_in_answer": "the query text is not in the model's raw answer",
    # geometry
    "bbox_outside_image": "the box leaves the image",
    "bbox_degenerate": "the box has no width or height",
    "mask_unreadable": "the mask PNG is missing or unreadable",
    "mask_size_mismatch": "the mask and the image differ in size",
    "empty_mask": "the mask is empty",
    "mask_too_small": "the mask is below the minimum area",
    "bbox_mask_mismatch": "the box is not the mask's extent",
    "leaked_coordinates": "coordinates or box numbers in the query",
    "leaked_pixel_value": "pixel values, pixel units or HU numbers in the query",
    "leaked_label_id": "a numeric label, class or mask id in the query",
    "leaked_identifier": "a raw snake_case label name in the query",
    "leaked_number": "a number anatomy does not use (not a vertebral level, rib or segment)",
    "wrong_side": "the patient side in the query contradicts the computed side",
    "side_unsupported": "a patient side is claimed where the image's orientation is unknown",
    "wrong_position": "an image position, anterior/posterior, central/peripheral or medial/lateral word is false",
    "spatial_unsupported": "a direction the slice's plane cannot show (e.g. superior on an axial slice)",
    "wrong_order": "an ordinal position (leftmost, most anterior) not supported by the instance ordering",
    "wrong_size": "the size word contradicts the measured size",
    "wrong_size_rank": "largest/smaller etc. without a clear size difference among the instances",
    "wrong_count": "a count word (two, both, single) contradicts the instances in the slice",
    "wrong_shape": "the shape word contradicts the measured shape",
    "wrong_intensity": "brighter/darker than the surroundings contradicts the measured contrast",
    # priors
    "label_side_conflict": "the label's side contradicts the side computed from the affine",
    "laterality_mismatch": "the side named with the structure contradicts its label or computed side",
    "laterality_unsupported": "a structure's side is named where neither label nor orientation gives one",
    "modality_term_mismatch": "an intensity term of another modality (hyperintense on CT)",
    "implausible_structure": "a structure that this modality or body region cannot show",
    "unlabelled_structure": "a structure that is neither the target nor labelled in the slice",
    "unlabelled_finding": "a finding that is neither the target nor labelled in the slice",
    "relation_false": "a stated relation (in, adjacent to, anterior to, …) does not hold",
    "relation_unverifiable": "a stated relation that neither masks nor computed relations can confirm",
    # ambiguity
    "no_discriminator": "the label has several instances and the query has no word to tell them apart",
    "ambiguous_instance": "the query fits another instance of the same label",
    "ambiguous_target": "the query fits another labelled structure of the slice",
    # judge
    "no_visual_evidence": "evidence check: the target does not stand out from its surroundings",
    "no_surroundings": "evidence check: the mask leaves no ring to compare against",
    "evidence_unreadable": "evidence check: the image or mask could not be read",
    "judge_not_visible": "VLM judge: the target is not visible",
    "judge_box_mismatch": "VLM judge: the box does not mark what the query describes",
    "judge_ambiguous": "VLM judge: the query could refer to another region",
    "judge_low_score": "VLM judge: score below the threshold",
    "judge_image_unreadable": "VLM judge: the image could not be read",
    # any stage
    "stage_error": "the stage raised an unexpected error on this sample (logged)",
}


def meaning(code: str) -> str:
    """The glossary entry; the judge's call failures (judge_refusal, judge_http_5xx, …) are named by the client."""
    if code in REASONS:
        return REASONS[code]
    if code.startswith("judge_"):
        return f"VLM judge call failed: {code.removeprefix('judge_').replace('_', ' ')}"
    return "undocumented reason"
