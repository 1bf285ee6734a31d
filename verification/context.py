"""The candidates folder as the rules need it: same-slice neighbours, masks and images, loaded lazily.

Relations, ambiguity and the evidence check look beyond one sample (the liver mask to test "in the
liver", every instance of ``hip_left`` to test "the left hip bone"). Masks are read once and cached.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from builder.records import Candidate

log = logging.getLogger(__name__)


class CandidateIndex:
    """Candidates by slice, with their masks; an empty index when no candidates folder is known."""

    def __init__(self, folder: Path | None, candidates: list[Candidate] | None = None):
        self.folder = folder
        self.by_slice: dict[str, list[Candidate]] = defaultdict(list)
        self.by_id: dict[str, Candidate] = {}
        self.load_errors: list[str] = []
        if candidates is None and folder is not None and (folder / "candidates.jsonl").is_file():
            candidates = list(self._read(folder / "candidates.jsonl"))
        for cand in candidates or []:
            self.add(cand)
        self.mask = lru_cache(maxsize=512)(self._mask)
        self.image = lru_cache(maxsize=64)(self._image)

    def _read(self, path: Path):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield Candidate.from_dict(json.loads(line))
                except (json.JSONDecodeError, TypeError) as exc:
                    self.load_errors.append(f"{path}:{n}: {exc}")
                    log.warning("skipping unreadable candidate %s:%d: %s", path, n, exc)

    def add(self, cand: Candidate) -> None:
        if cand.target_id not in self.by_id:
            self.by_id[cand.target_id] = cand
            self.by_slice[cand.slice_id].append(cand)

    def peers(self, cand: Candidate) -> list[Candidate]:
        """Every other candidate of the same slice."""
        return [c for c in self.by_slice.get(cand.slice_id, []) if c.target_id != cand.target_id]

    def path(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() or self.folder is None else self.folder / p

    def _mask(self, relative: str) -> np.ndarray:
        """Boolean mask (H, W); raises OSError/ValueError for a missing or unreadable file."""
        with Image.open(self.path(relative)) as img:
            array = np.asarray(img.convert("L"))
        return array >= 128

    def _image(self, relative: str) -> np.ndarray:
        with Image.open(self.path(relative)) as img:
            return np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)

    def union_mask(self, cands: list[Candidate]) -> np.ndarray | None:
        masks = [self.mask(c.mask) for c in cands]
        return np.logical_or.reduce(masks) if masks else None
