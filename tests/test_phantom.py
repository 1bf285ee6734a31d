"""The demo phantom: deterministic files, and cues that come out right through the real msd adapter and
candidates stage (sides from the affine, including a case stored in LPS; lesions inside the liver)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from builder.anatomy import infer_body_region, is_midline_structure
from builder.candidates import read_candidates, run_candidates
from builder.cli import main as cli_main
from builder.config import BuildConfig, load_config
from builder.phantom import LABELS, ensure_phantom, write_phantom

ROOT = Path(__file__).resolve().parents[1]
N_CASES = 3  # case 0 stored RAS, case 1 LPS, case 2 LAS


def _case_files(folder: Path, case: str) -> dict[str, bytes]:
    return {sub: (folder / sub / f"{case}.nii.gz").read_bytes() for sub in ("imagesTr", "labelsTr")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """configs/demo.toml with fewer cases: phantom written by ensure_phantom, then the candidates stage."""
    out = tmp_path_factory.mktemp("demo")
    config = load_config(ROOT / "configs" / "demo.toml")
    config.raw["demo"]["cases"] = N_CASES
    spec = ensure_phantom(config, out)
    config.sources.append(spec)
    report = run_candidates(config, out / "candidates", workers=1, progress=False)
    return spec, out, report, list(read_candidates(out / "candidates"))


def test_cli_same_seed_same_bytes_other_seed_other_bytes(demo, tmp_path):
    assert cli_main(["phantom", "--out", str(tmp_path / "p"), "--cases", "1", "--seed", "0"]) == 0
    meta = json.loads((tmp_path / "p" / "dataset.json").read_text())
    assert meta["numTraining"] == 1 and len(meta["training"]) == 1
    same = _case_files(tmp_path / "p", "phantom_000")
    assert same == _case_files(Path(demo[0].path), "phantom_000")  # another run, another folder: same bytes
    other = _case_files(write_phantom(tmp_path / "q", n_cases=1, seed=1), "phantom_000")
    assert all(same[k] != other[k] for k in same)


def test_ensure_phantom_leaves_identical_files_alone(tmp_path):
    config = BuildConfig(sources=[], raw={"build": {"seed": 0}, "demo": {"phantom": True, "cases": 1}})
    spec = ensure_phantom(config, tmp_path)
    folder = Path(spec.path)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    assert len(before) == 3
    assert ensure_phantom(config, tmp_path) == spec
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == before  # resume keys hold
    assert ensure_phantom(BuildConfig(sources=[], raw={}), tmp_path) is None


def test_demo_config_declares_demo_data(demo):
    spec, out, report, _ = demo
    assert (spec.name, spec.format, spec.license, spec.modality, spec.body_region) == \
        ("demo_phantom", "msd", "CC0-1.0", "CT", "abdomen")
    assert Path(spec.path) == (out / "sources" / "demo_phantom").resolve()
    meta = json.loads((Path(spec.path) / "dataset.json").read_text())
    assert "synthetic" in meta["name"].lower() and "synthetic demo data" in meta["description"].lower()
    assert meta["licence"] == "CC0-1.0" and meta["modality"] == {"0": "CT"}
    assert infer_body_region(meta["labels"].values()) == "abdomen"
    assert is_midline_structure(LABELS[6])
    assert report["cases"] == N_CASES and report["errors"] == 0


def test_volumes_are_stored_in_different_orientations(demo):
    spec = demo[0]
    codes = [nib.aff2axcodes(nib.load(str(Path(spec.path) / "imagesTr" / f"phantom_{i:03d}.nii.gz")).affine)
             for i in range(N_CASES)]
    assert codes == [("R", "A", "S"), ("L", "P", "S"), ("L", "A", "S")]
    img = nib.load(str(Path(spec.path) / "imagesTr" / "phantom_001.nii.gz"))
    assert img.get_data_dtype() == np.int16 and float(np.asarray(img.dataobj).min()) >= -1024


EXPECTED_SIDE = {"liver": "right", "spleen": "left", "kidney_left": "left", "kidney_right": "right",
                 "liver_lesion": "right", "vertebra": "midline"}


def test_sides_are_the_patients_in_every_case_and_slice(demo):
    candidates = demo[3]
    seen = defaultdict(set)
    for c in candidates:
        if c.label in EXPECTED_SIDE:
            assert c.cue_word("patient_side") == EXPECTED_SIDE[c.label], (c.target_id, c.cues["patient_side"])
            seen[c.label].add(c.case_id)
    cases = {f"phantom_{i:03d}" for i in range(N_CASES)}
    assert all(seen[label] == cases for label in EXPECTED_SIDE), dict(seen)  # the LPS and LAS cases included


def test_liver_sits_on_the_image_left_in_the_radiological_view(demo):
    for c in demo[3]:
        if c.label in ("liver", "spleen"):
            centre = (c.bbox[0] + c.bbox[2]) / 2
            assert (centre < c.width / 2) == (c.label == "liver"), c.target_id


def test_lesions_are_hypodense_inside_the_liver_and_sometimes_several(demo):
    lesions = [c for c in demo[3] if c.label == "liver_lesion"]
    assert lesions
    for c in lesions:
        assert c.cue_word("intensity") == "hypodense", c.target_id
        assert {"relation": "inside", "other": "liver"} in [
            {k: r[k] for k in ("relation", "other")} for r in c.cues["relations"]], c.target_id
    assert max(c.group_size for c in lesions) >= 2  # multi-object disambiguation material
