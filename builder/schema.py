"""The dataset schema as the builder uses it. The features themselves are defined once, in
``medground35k.py`` (which must stay self-contained for the Hub); this module adds the field docs and
the conversions from pipeline records to rows.

Box convention: ``bbox = [x_min, y_min, x_max, y_max]`` in absolute pixels of the stored image, on pixel
edges (a mask covering columns 10..19 has x_min = 10, x_max = 20), float32. ``bbox_1000`` is the same box
normalised to 0–1000 integers as Qwen-style VLMs use: ``round(x / width * 1000)``.
"""

from __future__ import annotations

from typing import Any

from medground35k import FEATURES, modality_config_name  # noqa: F401  (re-exported: the one definition)

FIELD_DOCS = {
    "id": "stable sample id: source, case, plane+slice, label, instance, query index",
    "image": "the slice as lossless PNG (volumes windowed: CT presets by body region, MR percentile scaling)",
    "mask": "the target instance only: single-channel PNG, 0/255, same size as the image",
    "bbox": "[x_min, y_min, x_max, y_max], absolute pixels, pixel edges, float32",
    "bbox_1000": "bbox normalised to 0–1000 integers (Qwen-style grounding)",
    "width": "image width in pixels", "height": "image height in pixels",
    "query": "the referring expression a clinician would say for the target",
    "query_type": "category | attribute | spatial | disambiguation",
    "label": "the source's label name of the target structure",
    "instance": "0-based index among the label's instances in the slice (largest first)",
    "group_size": "how many instances of this label the slice holds (>1: multi-object)",
    "modality": "CT, MRI, endoscopy, …", "body_region": "abdomen, chest, colon, …",
    "source": "source data set name", "license": "the source's licence, carried by every sample",
    "case_id": "case (volume or image) id in the source", "patient_id": "patient id where the source gives one",
    "slice_index": "index along the plane's normal in the RAS+ volume (0 for 2D images)",
    "plane": "axial | coronal | sagittal | 2d",
    "orientation": "RAS (volumes: patient sides from the affine) | radiological | unknown | image",
    "cues": "computed shape, size, location, relation and intensity words (the query writer's evidence)",
    "generator": "model that wrote the query, or 'template' for the offline writer",
    "prompt_version": "version of the prompt or template set",
    "verification": "outcome of every verification stage: passed, reason code, judge kind/model/score",
}


def _word(cues: dict[str, Any], name: str) -> str | None:
    cue = cues.get(name)
    return None if cue is None else cue.get("word")


def _value(cues: dict[str, Any], name: str) -> Any:
    cue = cues.get(name)
    return None if cue is None else cue.get("value")


def cues_row(cues: dict[str, Any]) -> dict[str, Any]:
    """Flatten the candidate's {value, word} cues into the dataset's cue struct."""
    return {
        "size": _word(cues, "size"), "size_fraction": _value(cues, "size"), "size_rank": _value(cues, "size_rank"),
        "shape": _word(cues, "shape"), "elongation": _value(cues, "elongation"),
        "circularity": _value(cues, "circularity"), "solidity": _value(cues, "solidity"),
        "grid": _word(cues, "grid"), "patient_side": _word(cues, "patient_side"),
        "vertical": _word(cues, "vertical"), "centrality": _word(cues, "centrality"),
        "intensity": _word(cues, "intensity"), "intensity_contrast": _value(cues, "intensity"),
        "order": [c["word"] for c in cues.get("order") or []],
        "relations": [r["word"] for r in cues.get("relations") or []],
    }


def bbox_1000(bbox: list[float], width: int, height: int) -> list[int]:
    x0, y0, x1, y1 = bbox
    return [round(x0 / width * 1000), round(y0 / height * 1000), round(x1 / width * 1000), round(y1 / height * 1000)]
