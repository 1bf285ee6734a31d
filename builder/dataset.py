"""Verified samples to a Hub-ready folder of sharded Parquet: ``data/<config>/<split>-XXXXX-of-YYYYY.parquet``.

Shards stay under ``max_shard_bytes``; row groups stay small for images (the Hub viewer reads one row
group at a time) and carry a page index. Rows are sorted by id and images embedded as PNG bytes, so the
same inputs give byte-identical shards.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from builder.config import reject_unknown
from builder.records import Candidate, Query
from builder.schema import FEATURES, bbox_1000, cues_row, modality_config_name
from builder.splits import SPLITS, SplitSettings, assign_splits, group_key


@dataclass(frozen=True)
class DatasetSettings:
    max_shard_bytes: int = 400 * 2**20  # under the Hub's 500 MB guidance
    max_row_group_bytes: int = 64 * 2**20
    max_row_group_rows: int = 500
    modality_configs: bool = True

    @classmethod
    def from_dict(cls, data: dict) -> DatasetSettings:
        reject_unknown("dataset", data, cls.__dataclass_fields__, {"pretty_name"})
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Sample:
    """One kept sample before its images are read: where the PNGs are, and every other column."""

    row: dict[str, Any]
    image_path: Path
    mask_path: Path
    size: int = field(init=False)  # estimated bytes in a shard, for sizing shards and row groups

    def __post_init__(self) -> None:
        self.size = self.image_path.stat().st_size + self.mask_path.stat().st_size + 2048


@dataclass
class DatasetReport:
    configs: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows
    shards: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # config -> split -> files
    bytes: dict[str, dict[str, int]] = field(default_factory=dict)
    split_conflicts: int = 0
    groups_per_split: dict[str, int] = field(default_factory=dict)


def sample_row(candidate: Candidate, query: Query, verification: dict[str, Any]) -> dict[str, Any]:
    """Every column but the images, from the pipeline's records."""
    return {
        "id": query.query_id, "bbox": [float(v) for v in candidate.bbox],
        "bbox_1000": bbox_1000(candidate.bbox, candidate.width, candidate.height),
        "width": candidate.width, "height": candidate.height, "query": query.text, "query_type": query.query_type,
        "label": candidate.label, "instance": candidate.instance, "group_size": candidate.group_size,
        "modality": candidate.modality, "body_region": candidate.body_region, "source": candidate.source,
        "license": candidate.license, "case_id": candidate.case_id, "patient_id": candidate.patient_id,
        "slice_index": candidate.slice_index, "plane": candidate.plane, "orientation": candidate.orientation,
        "cues": cues_row(candidate.cues), "generator": query.generator, "prompt_version": query.prompt_version,
        "verification": verification,
    }


def make_samples(records: list[tuple[Candidate, Query, dict[str, Any]]], candidates_dir: Path,
                 split_settings: SplitSettings) -> tuple[dict[str, list[Sample]], int]:
    """Samples per split (patient-level), sorted by id, and the count of official-split conflicts."""
    splits, conflicts = assign_splits([c for c, _, _ in records], split_settings)
    by_split: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for candidate, query, verification in records:
        split = splits[(candidate.source, group_key(candidate))]
        by_split[split].append(Sample(sample_row(candidate, query, verification),
                                      candidates_dir / candidate.image, candidates_dir / candidate.mask))
    for samples in by_split.values():
        samples.sort(key=lambda s: s.row["id"])
    return by_split, conflicts


def config_members(samples: list[Sample], settings: DatasetSettings) -> dict[str, list[Sample]]:
    configs: dict[str, list[Sample]] = {"default": list(samples),
                                        "multi_object": [s for s in samples if s.row["group_size"] > 1]}
    if settings.modality_configs:
        for s in samples:
            configs.setdefault(modality_config_name(s.row["modality"]), []).append(s)
    return configs


def _chunks(samples: list[Sample], max_bytes: int, max_rows: int | None = None) -> list[list[Sample]]:
    chunks: list[list[Sample]] = [[]]
    size = 0
    for s in samples:
        if chunks[-1] and (size + s.size > max_bytes or (max_rows and len(chunks[-1]) >= max_rows)):
            chunks.append([])
            size = 0
        chunks[-1].append(s)
        size += s.size
    return [c for c in chunks if c]


def _table(samples: list[Sample], schema: pa.Schema) -> pa.Table:
    rows = []
    for s in samples:
        row = dict(s.row)
        row["image"] = {"bytes": s.image_path.read_bytes(), "path": None}
        row["mask"] = {"bytes": s.mask_path.read_bytes(), "path": None}
        rows.append(FEATURES.encode_example(row))
    return pa.Table.from_pylist(rows, schema=schema)


def write_split(samples: list[Sample], folder: Path, split: str, settings: DatasetSettings) -> list[str]:
    """Shards of one config's split; returns their paths relative to the dataset root."""
    schema = FEATURES.arrow_schema
    shards = _chunks(samples, settings.max_shard_bytes)
    written = []
    for i, shard in enumerate(shards):
        path = folder / f"{split}-{i:05d}-of-{len(shards):05d}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        with pq.ParquetWriter(tmp, schema, compression="zstd", write_page_index=True,
                              use_dictionary=["query_type", "label", "modality", "body_region", "source",
                                              "license", "plane", "orientation", "generator", "prompt_version"],
                              ) as writer:
            for group in _chunks(shard, settings.max_row_group_bytes, settings.max_row_group_rows):
                writer.write_table(_table(group, schema))
        tmp.replace(path)
        written.append(path)
    return written


def write_dataset(records: list[tuple[Candidate, Query, dict[str, Any]]], candidates_dir: Path, out_dir: Path,
                  settings: DatasetSettings, split_settings: SplitSettings) -> DatasetReport:
    """Write every config's shards into ``out_dir/data`` (replacing an earlier build's shards)."""
    by_split, conflicts = make_samples(records, candidates_dir, split_settings)
    data = out_dir / "data"
    if data.exists():
        shutil.rmtree(data)
    report = DatasetReport(split_conflicts=conflicts)
    members = {split: config_members(samples, settings) for split, samples in by_split.items()}
    config_names = sorted({name for per_split in members.values() for name in per_split},
                          key=lambda n: (n != "default", n != "multi_object", n))
    for name in config_names:
        for split in SPLITS:
            samples = members[split].get(name, [])
            if not samples:
                continue
            folder = data / name
            folder.mkdir(parents=True, exist_ok=True)
            files = write_split(samples, folder, split, settings)
            report.configs.setdefault(name, {})[split] = len(samples)
            report.shards.setdefault(name, {})[split] = [str(f.relative_to(out_dir)) for f in files]
            report.bytes.setdefault(name, {})[split] = sum(f.stat().st_size for f in files)
    groups: dict[str, set] = {s: set() for s in SPLITS}
    for split, samples in by_split.items():
        groups[split] = {(s.row["source"], s.row["patient_id"] or s.row["case_id"]) for s in samples}
    report.groups_per_split = {s: len(g) for s, g in groups.items()}
    return report
