"""MedGround-35K: verified medical referring-grounding data (image, box, mask, clinical query).

A ``GeneratorBasedBuilder`` over the Parquet shards of a MedGround build, local (``data_dir``) or on the
Hub. datasets ≥ 4 no longer runs loading scripts, so use it by importing the class:

    from medground35k import MedGround35k
    builder = MedGround35k(config_name="multi_object", data_dir="out/demo")
    builder.download_and_prepare()
    ds = builder.as_dataset(split="test")

It yields the same rows as ``datasets.load_dataset(<build dir or repo>, <config>)``. The schema below is the
one place it is defined: the MedGround builder writes its shards with it.
"""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from datasets import Features, Image, List, Value

HUB_REPO = "medground/medground-35k"
SPLITS = {"train": datasets.Split.TRAIN, "validation": datasets.Split.VALIDATION, "test": datasets.Split.TEST}

CUES = Features({
    "size": Value("string"), "size_fraction": Value("float32"), "size_rank": Value("int32"),
    "shape": Value("string"), "elongation": Value("float32"), "circularity": Value("float32"),
    "solidity": Value("float32"), "grid": Value("string"), "patient_side": Value("string"),
    "vertical": Value("string"), "centrality": Value("string"), "intensity": Value("string"),
    "intensity_contrast": Value("float32"), "order": List(Value("string")), "relations": List(Value("string")),
})

STAGE = {"stage": Value("string"), "passed": Value("bool"), "reason": Value("string"),
         "kind": Value("string"), "model": Value("string"), "score": Value("float32")}

FEATURES = Features({
    "id": Value("string"),
    "image": Image(),
    "mask": Image(),
    "bbox": List(Value("float32"), length=4),
    "bbox_1000": List(Value("int32"), length=4),
    "width": Value("int32"),
    "height": Value("int32"),
    "query": Value("string"),
    "query_type": Value("string"),
    "label": Value("string"),
    "instance": Value("int32"),
    "group_size": Value("int32"),
    "modality": Value("string"),
    "body_region": Value("string"),
    "source": Value("string"),
    "license": Value("string"),
    "case_id": Value("string"),
    "patient_id": Value("string"),
    "slice_index": Value("int32"),
    "plane": Value("string"),
    "orientation": Value("string"),
    "cues": CUES,
    "generator": Value("string"),
    "prompt_version": Value("string"),
    "verification": {"kept": Value("bool"), "stages": List(STAGE)},
})

# Modalities of the sources MedGround reads (CT/MRI volumes and the MedSegBench 2D sets).
KNOWN_MODALITIES = (
    "CT", "MRI", "X-ray", "chest X-ray", "X-ray angiography", "panoramic dental X-ray", "ultrasound",
    "transperineal ultrasound", "endoscopy", "endoscopy (surgical video)", "laparoscopy", "dermoscopy",
    "dermatology photograph", "fundus photography", "OCT", "microscopy", "brightfield microscopy",
    "histopathology",
)


def modality_config_name(modality: str) -> str:
    """'CT' -> 'ct', 'X-ray angiography' -> 'x_ray_angiography'."""
    return re.sub(r"[^a-z0-9]+", "_", modality.lower()).strip("_")


class MedGround35kConfig(datasets.BuilderConfig):
    """One configuration: ``default`` (all kept samples), ``multi_object``, or one modality."""


class MedGround35k(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = MedGround35kConfig
    BUILDER_CONFIGS = [
        MedGround35kConfig(name="default", description="all verified samples"),
        MedGround35kConfig(name="multi_object", description="targets with same-label neighbours in the slice"),
    ] + [MedGround35kConfig(name=modality_config_name(m), description=f"{m} samples only") for m in KNOWN_MODALITIES]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=__doc__.split("\n\n")[0], features=FEATURES, homepage=f"https://huggingface.co/datasets/{HUB_REPO}",
            license="other", citation="MedGround: arXiv 2601.06847")

    def _split_generators(self, dl_manager: datasets.DownloadManager):
        pattern = f"data/{self.config.name}/{{split}}-*.parquet"
        generators = []
        for name, split in SPLITS.items():
            if self.config.data_dir:
                files = sorted(str(p) for p in Path(self.config.data_dir).glob(pattern.format(split=name)))
            else:
                files = self._hub_files(dl_manager, pattern.format(split=name))
            if files:
                generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"files": files}))
        if not generators:
            raise FileNotFoundError(f"no shards for config '{self.config.name}' "
                                    f"(looked for {pattern} under {self.config.data_dir or HUB_REPO})")
        return generators

    def _hub_files(self, dl_manager: datasets.DownloadManager, pattern: str) -> list[str]:
        from huggingface_hub import HfFileSystem

        remote = sorted(HfFileSystem().glob(f"datasets/{HUB_REPO}/{pattern}"))
        urls = [f"hf://{path}" for path in remote]
        return list(dl_manager.download(urls)) if urls else []

    def _generate_examples(self, files: list[str]):
        for file in files:
            parquet = pq.ParquetFile(file)
            for group in range(parquet.num_row_groups):
                for row in parquet.read_row_group(group).to_pylist():
                    yield row["id"], row
