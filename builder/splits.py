"""Train/validation/test by patient or case, never by slice.

Sources with official splits keep them. Otherwise a seeded hash of (source, patient or case id) picks
the split, so reruns agree and no patient lands in two splits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from builder.config import reject_unknown
from builder.records import Candidate

SPLITS = ("train", "validation", "test")
OFFICIAL_NAMES = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
                  "validation": "validation", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class SplitSettings:
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    keep_official: bool = True

    @classmethod
    def from_dict(cls, data: dict, seed: int = 0) -> SplitSettings:
        reject_unknown("splits", data, cls.__dataclass_fields__)
        ratios = tuple(float(r) for r in data.get("ratios", cls.ratios))
        if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
            raise ValueError(f"[splits] ratios must be three non-negative numbers summing to 1, got {ratios}")
        return cls(ratios, int(data.get("seed", seed)), bool(data.get("keep_official", True)))


def group_key(candidate: Candidate) -> str:
    """The unit that must not straddle splits: the patient where known, else the case."""
    return candidate.patient_id or candidate.case_id


def hashed_split(source: str, group: str, settings: SplitSettings) -> str:
    digest = hashlib.sha256(f"{settings.seed}\x00{source}\x00{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    train, val, _ = settings.ratios
    return "train" if u < train else "validation" if u < train + val else "test"




def assign_splits(candidates: list[Candidate], settings: SplitSettings) -> tuple[dict[tuple[str, str], str], int]:
    """Split per (source, patient/case group), and how many groups had conflicting official splits.

    A group whose cases carry one official split takes it for all its cases (an unlisted slice of a listed
    patient follows the patient); a group with none, or with conflicting ones, is hashed as a whole, so a
    patient never straddles two splits.
    """
    official: dict[tuple[str, str], set[str]] = {}
    for c in candidates:
        key = (c.source, group_key(c))
        names = official.setdefault(key, set())
        if settings.keep_official and c.split and c.split.lower() in OFFICIAL_NAMES:
            names.add(OFFICIAL_NAMES[c.split.lower()])
    splits, conflicts = {}, 0
    for key, names in official.items():
        if len(names) == 1:
            splits[key] = next(iter(names))
        else:
            conflicts += len(names) > 1
            splits[key] = hashed_split(key[0], key[1], settings)
    return splits, conflicts
