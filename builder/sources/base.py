"""What every source adapter shares: the adapter interface, metadata defaults and normalisation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from builder.anatomy import infer_body_region
from builder.records import Case, CaseError, CaseRef, ErrorRecord, SourceSpec, label_ids_present

# Modalities without a patient side: queries use image-relative words only.
IMAGE_ONLY_MODALITIES = (
    "endoscopy", "laparoscopy", "dermoscopy", "dermatology", "microscopy", "histopathology",
    "fundus", "oct", "brightfield",
)


class Adapter:
    """An adapter lists cheap ``CaseRef``s and loads one ``Case`` at a time (never a whole data set).

    ``refs`` yields an ``ErrorRecord`` for a problem that concerns the source as a whole or one listed
    case that cannot even be referenced; ``load`` raises ``CaseError`` for a bad case.
    """

    format: str = ""

    def __init__(self, spec: SourceSpec):
        self.spec = spec
        self.root = Path(spec.path)

    def refs(self) -> Iterator[CaseRef | ErrorRecord]:
        raise NotImplementedError

    def load(self, ref: CaseRef) -> Case:
        raise NotImplementedError

    def error(self, file: str | Path, reason: str, message: str, case_id: str | None = None) -> ErrorRecord:
        return ErrorRecord(file=str(file), stage="source", reason=reason, message=message,
                           source=self.spec.name, case_id=case_id)

    def require_dir(self) -> ErrorRecord | None:
        """The source-level error for a missing or empty folder, or None."""
        if not self.root.is_dir():
            return self.error(self.root, "missing_source", f"source folder does not exist: {self.root}")
        if not any(self.root.iterdir()):
            return self.error(self.root, "empty_source", f"source folder is empty: {self.root}")
        return None


def normalize_modality(name: str | None) -> str:
    """Map the many spellings sources use to one vocabulary (CT, MRI, X-ray, ultrasound, …)."""
    if not name:
        return "unknown"
    low = name.strip().lower()
    if low in ("ct", "cect", "ncct", "computed tomography") or low.startswith("ct"):
        return "CT"
    if low in ("mr", "mri", "t1", "t2", "t1w", "t2w", "t1gd", "flair", "adc", "dwi", "cine-mri") or "mri" in low:
        return "MRI"
    if "x-ray" in low or low in ("xray", "cr", "dx", "radiograph"):
        return "X-ray"
    if "ultrasound" in low or low in ("us",):
        return "ultrasound"
    return name.strip()


def default_orientation(modality: str, declared: str | None) -> str:
    """A 2D source's orientation: the config's word wins; image-only modalities get 'image'."""
    if declared:
        return declared
    low = modality.lower()
    if any(word in low for word in IMAGE_ONLY_MODALITIES):
        return "image"
    return "unknown"


def check_label_values(label_map: np.ndarray, names: dict[int, str], file: str) -> None:
    """Every non-zero value of the label map must be named; fail with the offending ids otherwise."""
    unknown = [v for v in label_ids_present(label_map) if v not in names]
    if unknown:
        raise CaseError("unknown_label", file,
                        f"label values {unknown} are not in the label map (known: {sorted(names)})")


def resolve_metadata(spec: SourceSpec, *, modality: str | None, license: str | None,
                     label_names: dict[int, str]) -> tuple[str, str, str, dict[int, str]]:
    """Config overrides win over what the source's own files say."""
    names = dict(spec.labels) if spec.labels else label_names
    mod = normalize_modality(spec.modality or modality)
    region = spec.body_region or infer_body_region(names.values())
    lic = spec.license or license or "unknown"
    return mod, region, lic, names
