"""The query-synthesis prompt, its answer schema and the checks an answer must pass.

Versioned: ``PROMPT_VERSION`` is part of every cache key and recorded on every Query, so changing the
wording (bump it!) never replays answers written for the old prompt.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from builder.anatomy import display_name
from builder.records import QUERY_TYPES, Candidate

PROMPT_VERSION = "queries-v1"
SCHEMA_PATH = Path(__file__).parent / "schemas" / "queries.schema.json"

SYSTEM = (
    "You are a radiologist writing referring expressions for a visual grounding dataset. Each expression "
    "must let a reader find exactly one target region in the image. Write as a clinician speaks: short, "
    "natural, using anatomical and morphological terms. Base every statement on the computed cues you are "
    "given and on what the image shows; do not invent findings.\n"
    "Never mention coordinates, pixel positions or counts, measurements in pixels, numeric label ids, "
    "masks, outlines or colours of the annotation. Do not use digits at all (spell ordinals as words), "
    "except inside anatomical names such as L1.\n"
    "Query types:\n"
    "- category: names what the target is (add a distinguishing word if the structure appears more than once);\n"
    "- attribute: describes it by shape, size or intensity;\n"
    "- spatial: locates it, in the patient's frame where a side is given, or relative to named structures;\n"
    "- disambiguation: singles it out from the other instances or neighbouring structures listed.\n"
    "Answer with JSON only."
)

MODALITY_WORDS = {"ct": "CT", "mr": "MRI", "mri": "MRI", "us": "ultrasound", "xray": "X-ray", "x-ray": "X-ray",
                  "pet": "PET", "endoscopy": "endoscopy", "dermoscopy": "dermoscopy"}

CUE_LINES = (("size", "size"), ("size_of_body", "size relative to the body"), ("size_rank", "size rank"),
             ("shape", "shape"), ("grid", "position in the image"), ("patient_side", "patient side"),
             ("vertical", "vertical position"), ("centrality", "centrality"), ("intensity", "intensity"))


def modality_word(modality: str) -> str:
    return MODALITY_WORDS.get(modality.lower(), modality)


@cache
def _base_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def response_schema(k: int) -> dict[str, Any]:
    """The answer schema with exactly ``k`` queries."""
    schema = copy.deepcopy(_base_schema())
    schema["properties"]["queries"]["minItems"] = k
    schema["properties"]["queries"]["maxItems"] = k
    return schema


def png_data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def outlined_png(image_png: bytes, mask_png: bytes) -> bytes:
    """The slice in RGB with the target's boundary drawn in red, so the model knows which region is meant."""
    image = np.asarray(Image.open(io.BytesIO(image_png)).convert("RGB")).copy()
    mask = np.asarray(Image.open(io.BytesIO(mask_png)).convert("L")) > 127
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    edge = mask & ~inner
    if max(mask.shape) >= 256:  # thicken so it survives the endpoint's downscaling
        thick = edge.copy()
        thick[1:, :] |= edge[:-1, :]
        thick[:, 1:] |= edge[:, :-1]
        edge = thick
    image[edge] = (255, 0, 0)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _cue_lines(candidate: Candidate) -> list[str]:
    lines = []
    for name, title in CUE_LINES:
        word = candidate.cue_word(name)
        if word:
            lines.append(f"- {title}: {word}")
    order = [c["word"] for c in candidate.cues.get("order") or []]
    if order:
        lines.append(f"- among the same structures: {', '.join(order)}")
    relations = [r["word"] for r in candidate.cues.get("relations") or []]
    if relations:
        lines.append(f"- relations: {'; '.join(relations)}")
    return lines


def describe(candidate: Candidate, siblings: list[Candidate], k: int) -> str:
    """The text part of the request: what the target is and what distinguishes it."""
    name = display_name(candidate.label)
    view = "" if candidate.plane == "2d" else f"{candidate.plane} "
    lines = [f"Image: {modality_word(candidate.modality)} {view}image, body region {candidate.body_region}.",
             f"Target: the {name}.", "Cues computed from the expert mask:"]
    lines += _cue_lines(candidate) or ["- none"]
    if candidate.orientation in ("unknown", "image") and not candidate.cue_word("patient_side"):
        lines.append("The patient's left and right are not known for this image: describe positions relative "
                     "to the image (upper left of the image, ...), never as the patient's side.")
    others = sorted({display_name(x) for x in candidate.labels_in_slice} - {name})
    if others:
        lines.append(f"Other structures labelled in this image: {', '.join(others)}.")
    if siblings:
        lines.append(f"The image holds {_count(len(siblings) + 1)} instances of {name}; the others (NOT the target) are:")
        for sib in siblings:
            words = [w for w in (sib.cue_word(n) for n, _ in CUE_LINES) if w]
            words += [c["word"] for c in sib.cues.get("order") or []]
            lines.append(f"- another {name}: {', '.join(words) or 'no cues'}")
    wanted = ["category", "attribute", "spatial"] + (["disambiguation"] if siblings or others else [])
    lines += [
        "The first image is the slice; the second shows the same slice with the target outlined in red.",
        f"Write exactly {_count(k)} different queries that each identify only this target"
        + (", each one distinguishing it from the other instances" if siblings else "") + ".",
        f"Use each of these types at least once where {_count(k)} allows: {', '.join(wanted)}.",
        'Answer as {"queries": [{"type": "<category|attribute|spatial|disambiguation>", "text": "<query>"}]}.',
    ]
    return "\n".join(lines)


def build_messages(candidate: Candidate, siblings: list[Candidate], k: int, image_png: bytes,
                   mask_png: bytes | None) -> list[dict[str, Any]]:
    """Chat messages for one target; ``mask_png`` adds the outlined copy of the image."""
    content: list[dict[str, Any]] = [
        {"type": "text", "text": describe(candidate, siblings, k)},
        {"type": "image_url", "image_url": {"url": png_data_url(image_png)}},
    ]
    if mask_png is not None:
        content.append({"type": "image_url", "image_url": {"url": png_data_url(outlined_png(image_png, mask_png))}})
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]


# A standalone number (not part of a name such as L1 or T12), a number pair, or pixel/label-id talk.
LEAK = re.compile(r"(?<![A-Za-z0-9])\d+(?:[.,]\d+)?|\bpixels?\b|\bpx\b|\blabel\s*(?:id|#)|\bcoordinates?\b", re.I)


def leak_in(text: str) -> str | None:
    """The first coordinate-like or id-like fragment of a query, or None."""
    match = LEAK.search(text)
    return match.group(0) if match else None


def check_answer(data: dict[str, Any], *, k: int, need_disambiguation: bool) -> tuple[str, str] | None:
    """Content rules the schema cannot express; returns (reason, message for the re-ask) or None."""
    queries = data["queries"]
    for i, q in enumerate(queries):
        text = q["text"].strip()
        fragment = leak_in(text)
        if fragment:
            return "coordinate_leak", (f"query {_ordinal(i)} contains '{fragment}': no numbers, pixel talk, "
                                       "coordinates or label ids are allowed.")
        if not 2 <= len(text.split()) <= 40:
            return "content_violation", f"query {_ordinal(i)} must have between two and forty words."
    texts = [q["text"].strip().lower() for q in queries]
    if len(set(texts)) != len(texts):
        return "content_violation", "two queries are identical; every query must be different."
    types = {q["type"] for q in queries}
    if need_disambiguation and k >= 2 and "disambiguation" not in types:
        return "content_violation", "at least one query must be of type disambiguation."
    if k >= 3 and len(types) < 3:
        return "content_violation", f"use at least three of the types {', '.join(QUERY_TYPES)}."
    return None


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve")


def _count(n: int) -> str:
    """Numbers in words: a prompt that forbids digits should not show any."""
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _ordinal(i: int) -> str:
    return _count(i + 1)
