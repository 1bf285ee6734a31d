"""SAM-Med2D / SA-Med2D-20M: one binary PNG per object, ``<image>_<label>_<instance:03d>.png``.

Pairs come from ``image2label_train.json`` (image → masks) and ``label2image_test.json`` (mask → image),
with paths relative to the folder *above* ``data_demo``-like roots; images listed in neither file are
still cases (with no masks). Label names contain underscores; the instance suffix is the last part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from builder.records import Case, CaseError, CaseRef, ErrorRecord
from builder.sources.base import Adapter, default_orientation, resolve_metadata
from builder.sources.folder2d import list_images
from builder.sources.images2d import read_image, read_mask

MASK_NAME = re.compile(r"^(?P<label>.+)_(?P<instance>\d{3})$")
PAIRING_FILES = {"image2label_train.json": "train", "label2image_test.json": "test"}


class Samed2dAdapter(Adapter):
    format = "samed2d"

    def _resolve(self, relative: str) -> Path:
        """Paths in the JSON files are relative to the root's parent (``data_demo/images/x.png``)."""
        for base in (self.root.parent, self.root):
            candidate = base / relative
            if candidate.exists():
                return candidate
        return self.root.parent / relative

    def refs(self) -> Iterator[CaseRef | ErrorRecord]:
        if (err := self.require_dir()) is not None:
            yield err
            return
        pairs: dict[str, tuple[str, list[str]]] = {}  # image stem -> (split, mask paths)
        for filename, split in PAIRING_FILES.items():
            path = self.root / filename
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield self.error(path, "bad_pairing_json", f"not valid JSON: {exc}")
                continue
            if split == "train":
                items = [(img, m) for img, masks in data.items() for m in masks]
            else:
                items = [(img, m) for m, img in data.items()]
            for image, mask in items:
                stem = Path(image).stem
                entry = pairs.setdefault(stem, (split, []))
                if entry[0] != split:
                    yield self.error(path, "split_conflict", f"{image} is listed in both train and test", stem)
                    continue
                entry[1].append(str(self._resolve(mask)))
        images_dir = self.root / "images"
        images = list_images(images_dir) if images_dir.is_dir() else {}
        if not images and not pairs:
            yield self.error(self.root, "empty_source", f"no images and no pairing files in {self.root}")
            return
        pattern = re.compile(self.spec.options.get("patient_pattern", r"^(.*)_\d+$"))
        for stem in sorted(set(images) | set(pairs)):
            split, masks = pairs.get(stem, (None, []))
            image = images.get(stem)
            if image is None:
                yield self.error(images_dir / f"{stem}.png", "missing_file",
                                 "image named in a pairing file does not exist", stem)
                continue
            match = pattern.match(stem)
            yield CaseRef(self.spec, stem, (str(image), *sorted(masks)), split=split,
                          extra={"patient_id": match.group(1) if match else stem})

    def load(self, ref: CaseRef) -> Case:
        image = read_image(Path(ref.files[0]))
        stem = ref.case_id
        names: dict[str, int] = {}
        label_map = np.zeros(image.shape[:2], dtype=np.int32)
        for mask_path in ref.files[1:]:
            mask_stem = Path(mask_path).stem
            if not mask_stem.startswith(stem + "_"):
                raise CaseError("bad_mask_name", mask_path, f"mask name does not start with image stem '{stem}_'")
            match = MASK_NAME.match(mask_stem[len(stem) + 1:])
            if not match:
                raise CaseError("bad_mask_name", mask_path, "mask name lacks the _<instance:03d> suffix")
            mask = read_mask(Path(mask_path), multiclass=False).astype(bool)
            if mask.shape != label_map.shape:
                raise CaseError("shape_mismatch", mask_path,
                                f"mask size {mask.shape[::-1]} differs from image size {label_map.shape[::-1]}")
            label_id = names.setdefault(match["label"], len(names) + 1)
            if (label_map[mask] != 0).any() and (label_map[mask] != label_id).any():
                raise CaseError("overlapping_masks", mask_path, "mask overlaps another structure's mask")
            label_map[mask] = label_id
        label_names = {i: n for n, i in names.items()}
        mod, region, lic, label_names = resolve_metadata(self.spec, modality=None, license=None,
                                                         label_names=label_names)
        return Case(source=self.spec.name, case_id=stem, modality=mod, body_region=region, license=lic,
                    image=image, label_map=label_map, label_names=label_names, files=ref.files,
                    patient_id=ref.extra.get("patient_id"), split=ref.split,
                    orientation=default_orientation(mod, self.spec.orientation))
