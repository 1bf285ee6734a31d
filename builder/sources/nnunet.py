"""nnU-Net v2 raw: ``dataset.json`` (labels name→id, channel_names, file_ending), ``_0000`` channel files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from builder.records import Case, CaseRef, ErrorRecord
from builder.sources.base import Adapter, check_label_values, resolve_metadata
from builder.sources.msd import read_dataset_json
from builder.sources.volumes import load_volume_pair


class NnunetAdapter(Adapter):
    format = "nnunet"

    def refs(self) -> Iterator[CaseRef | ErrorRecord]:
        if (err := self.require_dir()) is not None:
            yield err
            return
        meta_path = self.root / "dataset.json"
        try:
            meta = read_dataset_json(meta_path)
        except FileNotFoundError:
            yield self.error(meta_path, "missing_dataset_json", "dataset.json not found")
            return
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield self.error(meta_path, "bad_dataset_json", f"dataset.json is not valid JSON: {exc}")
            return
        ending = meta.get("file_ending", ".nii.gz")
        channel = int(self.spec.options.get("channel", 0))
        if "dataset" in meta:  # nnU-Net v2 allows an explicit file list instead of the folder convention
            for case_id, entry in sorted(meta["dataset"].items()):
                images = entry.get("images", [])
                image = images[channel] if channel < len(images) else None
                if image is None:
                    yield self.error(meta_path, "bad_dataset_json", f"case {case_id} lists no channel {channel}", case_id)
                    continue
                yield CaseRef(self.spec, case_id, (str(self.root / image), str(self.root / entry["label"])))
            return
        labels_dir = self.root / "labelsTr"
        label_files = sorted(labels_dir.glob(f"*{ending}")) if labels_dir.is_dir() else []
        if not label_files:
            yield self.error(labels_dir, "empty_source", f"no label files (*{ending}) in {labels_dir}")
            return
        for label in label_files:
            case_id = label.name[: -len(ending)]
            image = self.root / "imagesTr" / f"{case_id}_{channel:04d}{ending}"
            yield CaseRef(self.spec, case_id, (str(image), str(label)))

    def load(self, ref: CaseRef) -> Case:
        meta = read_dataset_json(self.root / "dataset.json")
        names: dict[int, str] = {}
        for name, value in meta.get("labels", {}).items():
            if isinstance(value, list):  # region-based training: the last id is the region's own
                value = value[-1]
            if int(value) != 0:
                names[int(value)] = name
        channel = int(self.spec.options.get("channel", 0))
        modality = meta.get("channel_names", {}).get(str(channel))
        image, labels, affine, spacing = load_volume_pair(Path(ref.files[0]), Path(ref.files[1]), channel=0)
        mod, region, lic, names = resolve_metadata(
            self.spec, modality=modality, license=meta.get("licence") or meta.get("license"), label_names=names)
        check_label_values(labels, names, ref.files[1])
        return Case(source=self.spec.name, case_id=ref.case_id, modality=mod, body_region=region, license=lic,
                    image=image, label_map=labels, label_names=names, files=ref.files, patient_id=ref.case_id,
                    split=ref.split, affine=affine, spacing=spacing, orientation="RAS", window=self.spec.window)
