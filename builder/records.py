"""Typed records that flow between MedGround's stages.

Source ─► CaseRef ─► Case ─► Slice ─► Target (+Cues) ─► … ; any failure becomes an ErrorRecord.

Conventions (DESIGN.md), stated once here:
- ``bbox`` is ``(x_min, y_min, x_max, y_max)`` in absolute pixels of the stored image, on pixel
  *edges*: a mask covering columns 10..19 has ``x_min = 10`` and ``x_max = 20``.
- Volumes carry a 4×4 affine and are reoriented to RAS+ before slicing; slices are displayed in the
  radiological convention. ``Slice.directions`` says which patient direction the image's columns and
  rows run towards, or is ``None`` when a 2D source does not state its orientation.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BBox = tuple[float, float, float, float]

# Orientation of a 2D source: "unknown" (no patient side may be derived from pixel position),
# "radiological" (patient right on the image's left, anterior or superior up), or "image"
# (a modality without patient sides: endoscopy, dermoscopy, microscopy; image-relative words only).
ORIENTATIONS = ("unknown", "radiological", "image")


def safe_name(text: str) -> str:
    """An id component safe in file names and URLs. '__' separates components of composite ids, so a name
    that had to be changed (other characters, '__', a leading or trailing '_') gets a short hash of the
    original: distinct names never share an id ('case 1' and 'case-1' stay apart)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    cleaned = re.sub(r"_{2,}", "-", cleaned).strip("-_")
    if cleaned == text:
        return text
    return f"{cleaned}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"


def label_ids_present(label_map: np.ndarray) -> list[int]:
    """Non-zero label ids in a label map; a bincount, much faster than np.unique on large images."""
    if label_map.size == 0:
        return []
    if label_map.min() < 0:
        return [int(v) for v in np.unique(label_map) if v != 0]
    return [int(v) for v in np.flatnonzero(np.bincount(label_map.ravel())) if v != 0]


@dataclass(frozen=True)
class SourceSpec:
    """One ``[[sources]]`` entry of a build config (or a ``--source FORMAT:PATH``)."""

    name: str
    format: str
    path: str
    modality: str | None = None
    body_region: str | None = None
    license: str | None = None
    labels: dict[int, str] | None = None  # label id -> name; overrides the source's own map
    orientation: str | None = None
    window: str | None = None  # CT window preset override
    options: dict[str, Any] = field(default_factory=dict)  # adapter-specific extras


@dataclass(frozen=True)
class CaseRef:
    """A cheap, picklable pointer to one case; adapters turn it into a Case on demand."""

    source: SourceSpec
    case_id: str
    files: tuple[str, ...]
    split: str | None = None  # the source's official split, when it has one
    index: int | None = None  # position inside a container file (npz)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """One image (2D) or volume (3D) with its label map, in the source's own geometry.

    Volumes keep their affine (TorchIO's rule: an image never travels without it). 2D cases declare
    their ``orientation`` instead.
    """

    source: str
    case_id: str
    modality: str
    body_region: str
    license: str
    image: np.ndarray  # (X, Y, Z) volume, (H, W) or (H, W, 3) image
    label_map: np.ndarray  # integer, same spatial shape as image; 0 is background
    label_names: dict[int, str]  # id -> name, background excluded
    files: tuple[str, ...]
    patient_id: str | None = None
    split: str | None = None
    affine: np.ndarray | None = None  # 4×4, volumes only
    spacing: tuple[float, ...] | None = None
    orientation: str = "unknown"  # 2D only; volumes are "RAS" after reorientation
    window: str | None = None

    @property
    def is_volume(self) -> bool:
        return self.affine is not None


@dataclass
class Slice:
    """A rendered 2D view (uint8 image) of a case plus its label map in the same pixel grid."""

    case: Case
    plane: str
    index: int  # slice index along the plane's normal in the RAS+ volume; 0 for 2D cases
    image: np.ndarray  # uint8, (H, W) or (H, W, 3)
    label_map: np.ndarray  # (H, W) integer
    # Patient direction that increasing column / row index points to, e.g. ("left", "posterior")
    # for an axial radiological view; None when the orientation is unknown or image-only.
    directions: tuple[str | None, str | None] | None
    pixel_spacing: tuple[float, float] | None = None  # mm per (row, col) after resampling
    raw: np.ndarray | None = None  # intensities before display scaling (HU for CT), same grid as image
    pixel_to_world: np.ndarray | None = None  # 4×3: (col, row, 1) pixel centre -> RAS world mm (volumes)
    midline_x: float | None = None  # world x (mm) of the patient's left/right midline
    midline_source: str | None = None  # how the midline was found
    labels: tuple[int, ...] = ()  # the labels this slice was selected for

    @property
    def slice_id(self) -> str:
        return f"{safe_name(self.case.source)}__{safe_name(self.case.case_id)}__{self.plane}{self.index:04d}"

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class Cue:
    """A computed property: the measured value and the word a query may use for it."""

    value: Any
    word: str


@dataclass(frozen=True)
class Relation:
    """A spatial relation of the target to another labelled structure in the same slice."""

    relation: str  # above, below, patient_left_of, patient_right_of, left_of_image, right_of_image, inside, contains, adjacent_to
    other: str  # the other structure's label name
    word: str  # e.g. "to the patient's left of the liver"


@dataclass(frozen=True)
class Cues:
    size: Cue  # fraction of the image (value), "tiny"/"small"/"medium"/"large"
    size_of_body: Cue | None  # fraction of the body outline (volumes with a body), same words
    size_rank: Cue  # 1 = largest among same-label instances; word "largest", "second largest", …
    elongation: Cue
    circularity: Cue
    solidity: Cue
    shape: Cue  # round, oval, elongated, irregular, lobulated
    grid: Cue  # (row, col) of the 3×3 grid; word "upper left of the image", "center of the image"
    patient_side: Cue | None  # "left"/"right"/"midline" of the patient; None where not derivable
    vertical: Cue | None  # "anterior"/"posterior" (axial) or "superior"/"inferior" (coronal, sagittal)
    centrality: Cue  # "central"/"peripheral" within the image (or body)
    intensity: Cue  # contrast against a ring around the mask; "hyperdense", "hypointense", "brighter", …
    order: tuple[Cue, ...]  # ordinal words among same-label instances: "the larger", "the more superior"
    relations: tuple[Relation, ...]


@dataclass
class Target:
    """One instance of one label in one slice: the grounding anchor."""

    target_id: str
    slice: Slice
    label: str
    label_id: int
    instance: int  # 0-based index among the same label's instances in this slice (largest first)
    group_size: int  # how many instances of this label the slice holds
    mask: np.ndarray  # bool (H, W)
    bbox: BBox
    area: int
    cues: Cues | None = None


@dataclass(frozen=True)
class ErrorRecord:
    """A case, file or sample that could not be processed; counted in reports, never dropped."""

    file: str
    stage: str  # e.g. "source", "slice", "target", "query", "verify"
    reason: str  # a stable reason code, e.g. "truncated_file", "shape_mismatch"
    message: str
    source: str | None = None
    case_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "stage": self.stage,
            "reason": self.reason,
            "message": self.message,
            "source": self.source,
            "case_id": self.case_id,
        }


class CaseError(Exception):
    """Raised by adapters and stages for a bad case; the runner turns it into an ErrorRecord."""

    def __init__(self, reason: str, file: str, message: str):
        super().__init__(f"{file}: {message}")
        self.reason = reason
        self.file = file
        self.message = message


@dataclass
class Candidate:
    """A Target as the candidates stage writes it and every later stage reads it: JSON, no arrays.

    ``image`` and ``mask`` are paths relative to the candidates folder (PNG). ``cues`` maps each cue
    name to ``{"value", "word"}`` (``order`` to a list of those, ``relations`` to a list of
    ``{"relation", "other", "word"}``); ``None`` where a cue cannot be derived (e.g. patient side of a 2D
    slice of unknown orientation).
    """

    target_id: str
    slice_id: str
    source: str
    case_id: str
    patient_id: str | None
    split: str | None  # the source's official split, or None (then hashed by case)
    plane: str
    slice_index: int
    label: str
    label_id: int
    instance: int
    group_size: int
    bbox: list[float]
    area: int
    width: int
    height: int
    modality: str
    body_region: str
    license: str
    orientation: str
    directions: list[str | None] | None
    image: str
    mask: str
    cues: dict[str, Any]
    files: list[str]
    labels_in_slice: list[str] = field(default_factory=list)  # every labelled structure visible in the slice

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(**data)

    def cue_word(self, name: str) -> str | None:
        cue = self.cues.get(name)
        return None if cue is None else cue["word"]


@dataclass
class Query:
    """One referring query written for one candidate (by a VLM or the offline template writer)."""

    query_id: str  # f"{target_id}__q{index}"
    target_id: str
    index: int
    text: str
    query_type: str  # category | attribute | spatial | disambiguation
    generator: str  # "template" or the model name
    prompt_version: str
    raw: str | None = None  # the model's raw answer, kept for audits

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Query:
        return cls(**data)


QUERY_TYPES = ("category", "attribute", "spatial", "disambiguation")
