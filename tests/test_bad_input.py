"""Bad input, built by the tests themselves: each bad case becomes one clear error naming the file, every
other case completes, and the CLI exits with 2 (completed with errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, synthetic_ct, write_msd, write_nifti

AFFINE = np.diag([1.5, 1.5, 4.0, 1.0])


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """One CLI run over three sources: an MSD set of good and broken cases, a folder2d with a "mask" that is
    not an image, and an empty folder."""
    tmp = tmp_path_factory.mktemp("bad_input")
    image, label = synthetic_ct(seed=1)
    shifted = AFFINE.copy()
    shifted[0, 3] += 5.0  # label grid 5 mm off the image's
    nan_image = image.copy()
    nan_image[3, 4, 2] = np.nan
    nan_image[5, 6, 3] = np.nan
    unknown = label.copy()
    unknown[2:4, 2:4, 2] = 3  # value 3 is not in labels {0: background, 1: spleen}
    msd = write_msd(tmp / "msd", {
        "good_a": (image, label, AFFINE, None),
        "good_b": (*synthetic_ct(seed=2), AFFINE, None),
        "truncated": (image, label, AFFINE, None),
        "shape": (image, label[:, :-3, :].copy(), AFFINE, None),
        "affine": (image, label, AFFINE, shifted),
        "unknown_label": (image, unknown, AFFINE, None),
        "nan": (nan_image, label, AFFINE, None),
    }, extra_entries=[{"image": "./imagesTr/missing.nii.gz", "label": "./labelsTr/missing.nii.gz"}])
    truncated = msd / "imagesTr" / "truncated.nii.gz"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])

    folder = tmp / "folder"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    for stem in ("good", "notimage"):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(folder / "images" / f"{stem}.png")
    mask = np.zeros((64, 80), dtype=np.uint8)
    mask[20:40, 30:50] = 255
    Image.fromarray(mask).save(folder / "masks" / "good.png")
    (folder / "masks" / "notimage.png").write_text("this is not a PNG, just text with a .png name\n")

    empty = tmp / "empty"
    empty.mkdir()

    config = tmp / "bad.toml"
    config.write_text(
        f'[[sources]]\nname = "bad_msd"\nformat = "msd"\npath = "{msd}"\n\n'
        f'[[sources]]\nname = "bad_folder"\nformat = "folder2d"\npath = "{folder}"\nmodality = "endoscopy"\n'
        f'labels = {{ 1 = "polyp" }}\n\n'
        f'[[sources]]\nname = "empty"\nformat = "msd"\npath = "{empty}"\n')
    out = tmp / "out"
    proc = subprocess.run([sys.executable, "-m", "builder", "candidates", "--config", str(config), "--out", str(out),
                           "--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)

    class Run:
        pass

    run = Run()
    run.proc, run.out, run.msd, run.folder, run.empty = proc, out, msd, folder, empty
    run.report = json.loads((out / "report.json").read_text())
    run.errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    run.candidates = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    return run


def _error(run, case_id: str | None = None, source: str | None = None) -> dict:
    found = [e for e in run.errors if (case_id is None or e["case_id"] == case_id)
             and (source is None or e["source"] == source)]
    assert len(found) == 1, (case_id, source, run.errors)
    return found[0]


def test_cli_completes_with_errors_exit_status_2(bad_run):
    assert bad_run.proc.returncode == 2, bad_run.proc.stderr
    # six broken MSD cases (one of them the missing files), one folder2d mask, one empty source
    assert bad_run.report["errors"] == len(bad_run.errors) == 8, bad_run.errors
    assert bad_run.report["by_source"]["bad_msd"]["cases"] == 8
    assert bad_run.report["by_source"]["bad_msd"]["cases_failed"] == 6


def test_good_cases_of_the_same_sources_still_produce_targets(bad_run):
    made = {(c["source"], c["case_id"]) for c in bad_run.candidates}
    assert made == {("bad_msd", "good_a"), ("bad_msd", "good_b"), ("bad_folder", "good")}
    for c in bad_run.candidates:
        assert (bad_run.out / c["image"]).is_file() and (bad_run.out / c["mask"]).is_file()
    # nothing of a failed case leaks into the outputs
    assert not [p for p in (bad_run.out / "images").iterdir() if "good" not in p.name]


@pytest.mark.parametrize("case_id,reason,bad_file,words", [
    ("truncated", "unreadable_file", "imagesTr/truncated.nii.gz", ("decode",)),
    ("shape", "shape_mismatch", "labelsTr/shape.nii.gz", ("(40, 33, 8)", "(40, 36, 8)")),
    ("affine", "affine_mismatch", "labelsTr/affine.nii.gz", ("affine", "5")),
    ("unknown_label", "unknown_label", "labelsTr/unknown_label.nii.gz", ("[3]",)),
    ("nan", "nan_voxels", "imagesTr/nan.nii.gz", ("2 voxels", "NaN")),
    ("missing", "missing_file", "imagesTr/missing.nii.gz", ("does not exist",)),
])
def test_each_broken_volume_is_one_specific_error_naming_its_file(bad_run, case_id, reason, bad_file, words):
    err = _error(bad_run, case_id, "bad_msd")
    assert err["reason"] == reason, err
    assert Path(err["file"]).resolve() == (bad_run.msd / bad_file).resolve(), err
    for word in words:
        assert word in err["message"], (word, err["message"])
    assert not [c for c in bad_run.candidates if c["case_id"] == case_id]


def test_a_mask_that_is_not_an_image(bad_run):
    err = _error(bad_run, "notimage", "bad_folder")
    assert err["reason"] == "unreadable_file"
    assert Path(err["file"]) == bad_run.folder / "masks" / "notimage.png"
    assert "not a readable image" in err["message"]


def test_an_empty_source_folder(bad_run):
    err = _error(bad_run, source="empty")
    assert err["reason"] == "empty_source"
    assert Path(err["file"]) == bad_run.empty
    assert "empty" in err["message"]
    assert bad_run.report["by_source"]["empty"] == {"source_errors": 1}


def test_a_source_of_only_bad_input_exits_1(tmp_path):
    """Nothing produced at all is a different outcome (exit 1) from a partial run (exit 2)."""
    empty = tmp_path / "nothing"
    empty.mkdir()
    from builder.cli import main

    status = main(["candidates", "--source", f"folder2d:{empty}", "--out", str(tmp_path / "out"), "--workers", "1"])
    assert status == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["errors_by_reason"] == {"empty_source": 1}


def test_dataset_json_naming_missing_files_in_nnunet(tmp_path):
    """nnU-Net: a label whose _0000 image is absent is a per-case error naming the absent image."""
    from builder.candidates import run_candidates
    from builder.config import load_config

    root = tmp_path / "nn"
    image, label = synthetic_ct(seed=3)
    write_nifti(root / "imagesTr" / "case_001_0000.nii.gz", image, AFFINE)
    write_nifti(root / "labelsTr" / "case_001.nii.gz", label, AFFINE)
    write_nifti(root / "labelsTr" / "case_002.nii.gz", label, AFFINE)  # its image is missing
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1},
                                                   "numTraining": 2, "file_ending": ".nii.gz"}))
    report = run_candidates(load_config(None, [f"nnunet:{root}"]), tmp_path / "out", workers=1, progress=False)
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 1 and errors[0]["reason"] == "missing_file"
    assert Path(errors[0]["file"]) == root / "imagesTr" / "case_002_0000.nii.gz"
    assert report["by_source"]["nn"]["targets"] > 0
