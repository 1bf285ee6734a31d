"""Shared test fixtures: the real data in ../shared/fixtures (skipped cleanly when absent), one candidates
run per session over all of it, and small writers for synthetic NIfTI / PNG sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
# CI clones the repository anywhere with shared/ beside the clone: always resolve from the repo's parent.
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
FIXTURES_TOML = ROOT / "tests" / "fixtures.toml"

needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"real fixtures not found at {FIXTURES} (../shared/fixtures beside the repository); "
           "they are present in CI",
)


@pytest.fixture(scope="session")
def fixture_run(tmp_path_factory):
    """The candidates stage over every real fixture, once per session (workers=2).

    Returns a namespace with ``out`` (folder), ``report`` (dict) and ``candidates`` (list of dicts).
    """
    if not FIXTURES.is_dir():
        pytest.skip(f"real fixtures not found at {FIXTURES}")
    from builder.candidates import run_candidates
    from builder.config import load_config
    from builder.io import read_jsonl

    out = tmp_path_factory.mktemp("fixture_candidates")
    report = run_candidates(load_config(FIXTURES_TOML), out, workers=2, progress=False)

    class Run:
        pass

    run = Run()
    run.out = out
    run.report = report
    run.candidates = list(read_jsonl(out / "candidates.jsonl"))
    run.errors = list(read_jsonl(out / "errors.jsonl"))
    return run


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """``python -m builder build --config configs/demo.toml`` once per session (what ``make build`` runs)."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo_build")
    result = subprocess.run([sys.executable, "-m", "builder", "build", "--config", str(ROOT / "configs" / "demo.toml"),
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode in (0, 2), result.stderr[-3000:]
    return out


def of_source(candidates: list[dict], source: str) -> list[dict]:
    return [c for c in candidates if c["source"] == source]


# ---- synthetic sources ---------------------------------------------------------------------------


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def synthetic_ct(shape=(40, 36, 8), side: str = "left", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume in RAS+ voxel order (axis 0 → patient right) with a body ellipse in air and a bright
    organ on the patient's ``side``; label 1 marks the organ."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = shape
    x, y = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    body = ((x - cx) / (0.42 * nx)) ** 2 + ((y - cy) / (0.42 * ny)) ** 2 <= 1
    # RAS+: small x index is the patient's left.
    ox = 0.3 * nx if side == "left" else 0.7 * nx
    organ = ((x - ox) / 4.5) ** 2 + ((y - cy) / 5.5) ** 2 <= 1
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[body] = 30.0
    image[organ] = 150.0
    image += rng.normal(0, 5, size=shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[organ] = 1
    labels[..., 0] = 0  # organ absent from the bottom slice
    return image, labels


def write_msd(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]],
              labels: dict[str, str] | None = None, extra_entries: list[dict] | None = None) -> Path:
    """An MSD v1 data set: ``cases`` maps case id → (image, label, image affine, label affine)."""
    training = []
    for case_id, (image, label, img_aff, lab_aff) in cases.items():
        write_nifti(root / "imagesTr" / f"{case_id}.nii.gz", image, img_aff)
        write_nifti(root / "labelsTr" / f"{case_id}.nii.gz", label, lab_aff if lab_aff is not None else img_aff)
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    training += extra_entries or []
    meta = {"name": "synthetic", "modality": {"0": "CT"}, "labels": labels or {"0": "background", "1": "spleen"},
            "licence": "CC0", "numTraining": len(training), "training": training}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)
