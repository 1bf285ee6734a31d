"""Synthetic candidate folders and a scripted VLM answer for the query-stage tests (no real data needed)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from builder.prompts import NUMBER_WORDS
from builder.io import atomic_write_bytes, png_bytes, write_jsonl
from builder.records import Candidate
from tests.loopback_openai import Reply, Request

WORDS = ("faint", "dense", "smooth", "bulky", "subtle", "compact", "rounded", "tapered", "lucent", "narrow",
         "broad", "crisp", "soft", "sharp", "cystic", "solid")


def _cue(word, value=None):
    return None if word is None else {"value": value, "word": word}


def _cues(size, shape, grid, side, vertical, intensity, order=(), rank="largest", relations=()):
    return {
        "size": _cue(size, 0.01), "size_of_body": None, "size_rank": _cue(rank, 1), "elongation": _cue("low", 1.2),
        "circularity": _cue("high", 0.8), "solidity": _cue("high", 0.95), "shape": _cue(shape),
        "grid": _cue(grid, [0, 0]), "patient_side": _cue(side), "vertical": _cue(vertical),
        "centrality": _cue("peripheral", 0.7), "intensity": _cue(intensity, -0.3),
        "order": [_cue(w) for w in order],
        "relations": [{"relation": "above", "other": o, "word": w} for o, w in relations],
    }


# (label, centre row, centre col, radius, cue kwargs) per slice; same-label entries are instances.
SLICES = {
    "ct": dict(modality="CT", body_region="abdomen", plane="axial", orientation="RAS", targets=[
        ("liver", 20, 16, 9, dict(size="large", shape="lobulated", grid="upper left of the image", side="right",
                                  vertical="anterior", intensity="isodense",
                                  relations=[("kidney_right", "anterior to the right kidney")])),
        ("kidney_left", 44, 48, 6, dict(size="small", shape="oval", grid="lower right of the image", side="left",
                                        vertical="posterior", intensity="hyperdense")),
        ("kidney_right", 44, 14, 6, dict(size="small", shape="oval", grid="lower left of the image", side="right",
                                         vertical="posterior", intensity="hyperdense",
                                         relations=[("liver", "posterior to the liver")])),
        ("lesion", 16, 46, 5, dict(size="small", shape="round", grid="upper right of the image", side="left",
                                   vertical="anterior", intensity="hypodense", order=["the larger", "the more anterior"])),
        ("lesion", 30, 40, 3, dict(size="tiny", shape="round", grid="center of the image", side="left",
                                   vertical="posterior", intensity="hypodense", rank="second largest",
                                   order=["the smaller", "the more posterior"])),
    ]),
    "endo": dict(modality="endoscopy", body_region="colon", plane="2d", orientation="image", targets=[
        ("polyp", 14, 14, 6, dict(size="medium", shape="round", grid="upper left of the image", side=None,
                                  vertical=None, intensity="brighter", order=["the largest"])),
        ("polyp", 48, 46, 4, dict(size="small", shape="irregular", grid="lower right of the image", side=None,
                                  vertical=None, intensity="darker", rank="second largest", order=["the second largest"])),
        ("polyp", 14, 48, 3, dict(size="small", shape="oval", grid="upper right of the image", side=None,
                                  vertical=None, intensity="brighter", rank="third largest", order=["the smallest"])),
    ]),
    "mr": dict(modality="MR", body_region="brain", plane="axial", orientation="RAS", targets=[
        ("tumour", 30, 22, 8, dict(size="medium", shape="irregular", grid="center of the image", side="right",
                                   vertical="posterior", intensity="hyperintense")),
    ]),
}


def make_candidates(root: Path, copies: int = 1, kinds: tuple[str, ...] = ("ct", "endo", "mr")) -> list[Candidate]:
    """Write a candidates folder (candidates.jsonl, images/, masks/) with ``copies`` cases of each slice kind."""
    root = Path(root)
    out: list[Candidate] = []
    for copy in range(copies):
        for kind in kinds:
            spec = SLICES[kind]
            case_id = f"{kind}case{copy:03d}"
            slice_id = f"synth__{case_id}__{spec['plane']}0000"
            yy, xx = np.mgrid[:64, :64]
            image = (40 + 20 * np.sin(xx / 7.0) + copy).astype(np.uint8)
            labels = sorted({t[0] for t in spec["targets"]})
            counts: dict[str, int] = {}
            for label, cy, cx, r, _ in spec["targets"]:
                image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 180 if "kidney" in label else 90
            atomic_write_bytes(root / "images" / f"{slice_id}.png", png_bytes(image))
            for label, cy, cx, r, cues in spec["targets"]:
                instance = counts.get(label, 0)
                counts[label] = instance + 1
                group = sum(1 for t in spec["targets"] if t[0] == label)
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                target_id = f"{slice_id}__{label}__{instance}"
                atomic_write_bytes(root / "masks" / f"{target_id}.png", png_bytes(mask))
                rows, cols = np.nonzero(mask)
                out.append(Candidate(
                    target_id=target_id, slice_id=slice_id, source="synth", case_id=case_id, patient_id=case_id,
                    split=None, plane=spec["plane"], slice_index=0, label=label, label_id=labels.index(label) + 1,
                    instance=instance, group_size=group,
                    bbox=[float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)],
                    area=int(mask.sum()), width=64, height=64, modality=spec["modality"],
                    body_region=spec["body_region"], license="CC-BY-4.0", orientation=spec["orientation"],
                    directions=["left", "posterior"] if spec["orientation"] == "RAS" else None,
                    image=f"images/{slice_id}.png", mask=f"masks/{target_id}.png", cues=_cues(**cues),
                    files=[f"{case_id}.nii.gz"], labels_in_slice=labels))
    write_jsonl(root / "candidates.jsonl", (c.to_dict() for c in out))
    return out


def answer_queries(request: Request) -> Reply:
    """A valid answer that depends only on the request's content (so reruns get the same text)."""
    target = re.search(r"Target: the (.+?)\.\n", request.text)
    k_text = re.search(r"Write exactly (\w+)", request.text).group(1)
    k = int(k_text) if k_text.isdigit() else NUMBER_WORDS.index(k_text)
    name = target.group(1) if target else "structure"
    digest = hashlib.sha256(request.key.encode()).digest()
    types = ["category", "attribute", "spatial", "disambiguation"]
    if "NOT the target" in request.text:  # neighbours: lead with the disambiguating query
        types = types[3:] + types[:3]
    queries = [{"type": types[i % 4],
                "text": f"the {WORDS[digest[i] % len(WORDS)]} {WORDS[digest[i + 8] % len(WORDS)]} {name} "
                        f"{['above', 'beside', 'near', 'below'][i % 4]} the others"}
               for i in range(k)]
    return Reply.text(json.dumps({"queries": queries}))
