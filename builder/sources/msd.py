"""Medical Segmentation Decathlon v1: ``dataset.json`` (labels id→name, modality, training list)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from builder.records import Case, CaseRef, ErrorRecord
from builder.sources.base import Adapter, check_label_values, resolve_metadata
from builder.sources.volumes import load_volume_pair


def read_dataset_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def case_id_of(path: str, suffix: str = ".nii.gz") -> str:
    name = Path(path).name
    return name[: -len(suffix)] if name.endswith(suffix) else Path(path).stem


class MsdAdapter(Adapter):
    format = "msd"

    def _meta(self) -> dict:
        return read_dataset_json(self.root / "dataset.json")

    def refs(self) -> Iterator[CaseRef | ErrorRecord]:
        if (err := self.require_dir()) is not None:
            yield err
            return
        meta_path = self.root / "dataset.json"
        try:
            meta = self._meta()
        except FileNotFoundError:
            yield self.error(meta_path, "missing_dataset_json", "dataset.json not found")
            return
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield self.error(meta_path, "bad_dataset_json", f"dataset.json is not valid JSON: {exc}")
            return
        for entry in meta.get("training", []):
            try:
                image, label = entry["image"], entry["label"]
            except (KeyError, TypeError):
                yield self.error(meta_path, "bad_dataset_json", f"training entry without image/label: {entry!r}")
                continue
            yield CaseRef(self.spec, case_id_of(image), (str(self.root / image), str(self.root / label)))

    def load(self, ref: CaseRef) -> Case:
        meta = self._meta()
        names = {int(k): v for k, v in meta.get("labels", {}).items() if int(k) != 0}
        modalities = meta.get("modality", {})
        channel = int(self.spec.options.get("channel", 0))
        modality = modalities.get(str(channel)) if isinstance(modalities, dict) else modalities
        image, labels, affine, spacing = load_volume_pair(Path(ref.files[0]), Path(ref.files[1]), channel)
        mod, region, lic, names = resolve_metadata(
            self.spec, modality=modality, license=meta.get("licence") or meta.get("license"), label_names=names)
        check_label_values(labels, names, ref.files[1])
        return Case(source=self.spec.name, case_id=ref.case_id, modality=mod, body_region=region, license=lic,
                    image=image, label_map=labels, label_names=names, files=ref.files, patient_id=ref.case_id,
                    split=ref.split, affine=affine, spacing=spacing, orientation="RAS", window=self.spec.window)
