"""MedSegBench: ``{name}_{size}.npz`` with ``{split}_images`` / ``{split}_label`` arrays.

The official train/val/test splits are kept. Label names, modality, body region and licence come from
``medsegbench_facts.json`` (all 35 data sets), overridable by the config.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from builder.records import Case, CaseError, CaseRef, ErrorRecord
from builder.sources.base import Adapter, check_label_values, default_orientation, resolve_metadata
from builder.sources.images2d import image_array
from builder.sources.npz_reader import NpyMemberReader

FACTS_PATH = Path(__file__).with_name("medsegbench_facts.json")
FILE_NAME = re.compile(r"^(?P<name>[a-z0-9\-]+)_(?P<size>\d+)\.npz$")
SPLITS = {"train": "train", "val": "validation", "test": "test"}


@lru_cache(maxsize=1)
def medsegbench_facts() -> dict[str, dict]:
    return json.loads(FACTS_PATH.read_text(encoding="utf-8"))["datasets"]


def _reader(path: str, key: str) -> NpyMemberReader:
    """One reader per worker process and array, so consecutive items stream forward.

    Keyed by process id: a reader holds an open file whose offset a forked worker would share with its
    parent and siblings, so concurrent reads through an inherited reader corrupt each other.
    """
    return _process_reader(path, key, os.getpid())


@lru_cache(maxsize=16)
def _process_reader(path: str, key: str, pid: int) -> NpyMemberReader:
    return NpyMemberReader(Path(path), key)


class MedsegbenchAdapter(Adapter):
    format = "medsegbench"

    def _files(self) -> list[Path]:
        if self.root.is_file():
            return [self.root]
        return sorted(self.root.glob("*.npz")) if self.root.is_dir() else []

    def refs(self) -> Iterator[CaseRef | ErrorRecord]:
        files = self._files()
        if not files:
            yield self.error(self.root, "empty_source", f"no MedSegBench .npz files at {self.root}")
            return
        for path in files:
            match = FILE_NAME.match(path.name)
            name = self.spec.options.get("dataset") or (match["name"] if match else None)
            if name not in medsegbench_facts():
                yield self.error(path, "unknown_dataset",
                                 f"'{path.name}' is not named {{name}}_{{size}}.npz for a known MedSegBench set")
                continue
            try:
                keys = NpyMemberReader.keys_in(path)
            except Exception as exc:
                yield self.error(path, "unreadable_file", f"not a readable npz: {type(exc).__name__}: {exc}")
                continue
            for split, split_name in SPLITS.items():
                if f"{split}_images" not in keys:
                    continue
                if f"{split}_label" not in keys:
                    yield self.error(path, "missing_array", f"'{split}_images' has no matching '{split}_label'")
                    continue
                try:  # headers only, closed at once: workers open their own readers
                    images = NpyMemberReader(path, f"{split}_images")
                    labels = NpyMemberReader(path, f"{split}_label")
                    images.close()
                    labels.close()
                except Exception as exc:
                    yield self.error(path, "unreadable_file", f"cannot read '{split}' arrays: {exc}")
                    continue
                if len(images) != len(labels) or images.item_shape[:2] != labels.item_shape[:2]:
                    yield self.error(path, "shape_mismatch",
                                     f"{split}_images {images.member.shape} vs {split}_label {labels.member.shape}")
                    continue
                for index in range(len(images)):
                    yield CaseRef(self.spec, f"{name}_{split}_{index:05d}", (str(path),), split=split_name,
                                  index=index, extra={"dataset": name, "array_split": split})

    def load(self, ref: CaseRef) -> Case:
        path, split, name = ref.files[0], ref.extra["array_split"], ref.extra["dataset"]
        facts = medsegbench_facts()[name]
        try:
            image = _reader(path, f"{split}_images")[ref.index]
            label = _reader(path, f"{split}_label")[ref.index]
        except Exception as exc:
            raise CaseError("unreadable_file", path, f"item {ref.index} of '{split}': {exc}") from exc
        if label.ndim == 3 and label.shape[2] == 1:
            label = label[..., 0]
        label = label.astype("int32")
        names = {int(k): v for k, v in facts["labels"].items()}
        if facts["task"] == "binary" and label.max() > 1:  # stored as {0, 255} by some versions
            label = (label >= 128).astype("int32")
        check_label_values(label, dict(self.spec.labels or names), f"{path}:{split}_label[{ref.index}]")
        mod, region, lic, names = resolve_metadata(self.spec, modality=facts["modality"],
                                                   license=facts["license"], label_names=names)
        if not self.spec.body_region:
            region = facts["body_region"]
        return Case(source=self.spec.name, case_id=ref.case_id, modality=mod, body_region=region, license=lic,
                    image=image_array(image), label_map=label, label_names=names, files=ref.files,
                    patient_id=None, split=ref.split, orientation=default_orientation(mod, self.spec.orientation))
