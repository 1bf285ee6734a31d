"""Issue 2's "Must show" on the real fixtures (../shared/fixtures) through the real adapters, plus the
orientation rule on a synthetic volume with a non-canonical affine, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
from PIL import Image
from scipy import ndimage

from builder.records import safe_name
from tests.conftest import FIXTURES, FIXTURES_TOML, ROOT, needs_fixtures, of_source, read_png, synthetic_ct, write_msd

pytestmark = needs_fixtures


def _sides(cands: list[dict]) -> list[str | None]:
    return [None if c["cues"]["patient_side"] is None else c["cues"]["patient_side"]["word"] for c in cands]


def test_every_fixture_source_yields_targets_without_errors(fixture_run):
    report = fixture_run.report
    assert report["errors"] == 0, fixture_run.errors
    assert set(report["by_source"]) == {"msd_spleen", "totalseg_ct", "sam_med2d", "kvasir_seg", "medsegbench_kvasir"}
    for name, counts in report["by_source"].items():
        assert counts["targets"] > 0, name
        assert counts.get("cases_failed", 0) == 0, name
    assert report["targets"] == len(fixture_run.candidates)


# ---- volumes: the patient's side comes from the affine ----------------------------------------------


def test_msd_spleen_is_on_the_patients_left(fixture_run):
    spleen = [c for c in of_source(fixture_run.candidates, "msd_spleen") if c["label"] == "spleen"]
    assert spleen, "msd_spleen produced no spleen target"
    assert _sides(spleen) == ["left"] * len(spleen)
    for c in spleen:
        assert c["plane"] == "axial" and c["directions"] == ["left", "posterior"]
        assert c["modality"] == "CT" and c["license"] == "CC-BY-SA 4.0"


def test_totalseg_paired_organs_sides_in_candidates(fixture_run):
    cands = of_source(fixture_run.candidates, "totalseg_ct")
    expected = {"liver": "right", "kidney_left": "left", "kidney_right": "right"}
    for label, side in expected.items():
        found = [c for c in cands if c["label"] == label]
        assert found, f"no {label} target"
        assert _sides(found) == [side] * len(found), label
        for c in found:  # no "patient's left of" relation contradicting the side of a paired organ
            words = " ".join(r["word"] for r in c["cues"]["relations"])
            assert "undefined" not in words


def test_totalseg_sides_in_every_slice_where_the_organs_appear():
    """Not only the selected slices: every axial slice holding the organ (largest instance of the liver,
    every instance of each kidney)."""
    from builder.config import load_config
    from builder.cues import CueSettings, compute_cues, slice_context
    from builder.slicing import SliceSettings, slices_of
    from builder.sources import adapter_for
    from builder.targets import TargetSettings, slice_targets

    spec = next(s for s in load_config(FIXTURES_TOML).sources if s.format == "nnunet")
    adapter = adapter_for(spec)
    ref = next(r for r in adapter.refs())
    case = adapter.load(ref)
    ids = {name: i for i, name in case.label_names.items()}
    every_slice = SliceSettings(slices_per_structure=10_000, near_max_fraction=0.0, min_structure_px=1)
    seen: Counter = Counter()
    for s in slices_of(case, every_slice):
        groups = slice_targets(s, TargetSettings(min_component_px=1, min_component_fraction=0.0), Counter())
        for name, side, which in (("liver", "right", "largest"), ("kidney_left", "left", "all"),
                                  ("kidney_right", "right", "all")):
            group = groups.get(ids[name])
            if not group:
                continue
            compute_cues(group, CueSettings(), slice_context(group[0].slice))
            checked = group[:1] if which == "largest" else group
            for t in checked:
                assert t.cues.patient_side.word == side, (name, s.index, t.cues.patient_side)
            seen[name] += 1
    # the organs do appear in many slices of this 30-slice volume
    assert seen["liver"] >= 20 and seen["kidney_left"] >= 15 and seen["kidney_right"] >= 15, seen


def test_totalseg_liver_is_on_the_images_left(fixture_run):
    livers = [c for c in of_source(fixture_run.candidates, "totalseg_ct") if c["label"] == "liver"]
    assert livers
    for c in livers:
        image_path, mask_path = fixture_run.out / c["image"], fixture_run.out / c["mask"]
        assert image_path.is_file() and mask_path.is_file()
        image, mask = read_png(image_path), read_png(mask_path)
        assert image.shape[:2] == mask.shape == (c["height"], c["width"])
        x0, _, x1, _ = c["bbox"]
        assert (x0 + x1) / 2 < c["width"] / 2, c["bbox"]
        # and from the stored mask itself, not only the recorded box
        cols = np.flatnonzero(mask.any(axis=0))
        assert cols.mean() < mask.shape[1] / 2
    kidneys = {c["label"]: c for c in of_source(fixture_run.candidates, "totalseg_ct")
               if c["label"] in ("kidney_left", "kidney_right")}
    # radiological view: the patient's left kidney lies to the image's right of the right kidney
    left, right = kidneys["kidney_left"], kidneys["kidney_right"]
    assert left["bbox"][0] > right["bbox"][2]


# ---- SAM-Med2D: instances, empty images, no side from pixels -----------------------------------------


def test_samed2d_hip_left_is_two_instances_of_one_label(fixture_run):
    hips = [c for c in of_source(fixture_run.candidates, "sam_med2d") if c["label"] == "hip_left"]
    assert len(hips) == 2
    assert {c["slice_id"] for c in hips} == {hips[0]["slice_id"]}
    assert sorted(c["instance"] for c in hips) == [0, 1]
    assert {c["group_size"] for c in hips} == {2}
    assert len({c["label_id"] for c in hips}) == 1
    assert hips[0]["area"] >= hips[1]["area"] if hips[0]["instance"] == 0 else hips[1]["area"] >= hips[0]["area"]
    masks = [read_png(fixture_run.out / c["mask"]) > 0 for c in hips]
    assert not (masks[0] & masks[1]).any()


def test_samed2d_image_without_masks_gives_no_targets_and_no_error(fixture_run):
    assert not [c for c in fixture_run.candidates if c["case_id"] == "amos_0507_31"]
    assert not [e for e in fixture_run.errors if "amos_0507_31" in (e["case_id"] or "") + e["file"]]
    case_result = fixture_run.out / "cases" / safe_name("sam_med2d") / f"{safe_name('amos_0507_31')}.json"
    assert case_result.is_file(), "the empty case was not counted as a processed case"
    record = json.loads(case_result.read_text())
    assert record["candidates"] == [] and record["errors"] == []
    assert fixture_run.report["by_source"]["sam_med2d"]["cases"] == 5


def test_samed2d_no_patient_side_from_pixel_position(fixture_run):
    cands = of_source(fixture_run.candidates, "sam_med2d")
    assert cands
    assert _sides(cands) == [None] * len(cands)
    for c in cands:
        assert c["orientation"] == "unknown" and c["directions"] is None
        words = " ".join(r["word"] for r in c["cues"]["relations"]) + " ".join(o["word"] for o in c["cues"]["order"])
        assert "patient's" not in words, (c["target_id"], words)
        codes = {r["relation"] for r in c["cues"]["relations"]}
        assert not codes & {"patient_left_of", "patient_right_of"}


# ---- Kvasir-SEG: JPEG masks are thresholded, specks are not instances -------------------------------


def test_kvasir_jpeg_noise_makes_no_specks(fixture_run):
    cands = of_source(fixture_run.candidates, "kvasir_seg")
    per_image = Counter(c["case_id"] for c in cands)
    masks = sorted((FIXTURES / "kvasir_seg" / "masks").glob("*.jpg"))
    assert len(masks) == 5 and set(per_image) == {m.stem for m in masks}
    speck_seen = False
    for mask_file in masks:
        grey = np.asarray(Image.open(mask_file).convert("L"))
        components, n = ndimage.label(grey >= 128, structure=np.ones((3, 3)))
        sizes = np.bincount(components.ravel())[1:]
        genuine = int((sizes >= 0.01 * sizes.max()).sum())  # regions of at least 1% of the main polyp
        speck_seen |= bool((sizes < 0.01 * sizes.max()).any())
        assert per_image[mask_file.stem] == genuine, mask_file.name
    assert speck_seen, "the fixture's JPEG speck is gone: this test no longer exercises the trap"
    assert sorted(per_image.values()) == [1, 1, 1, 1, 2]
    assert per_image["cju0roawvklrq0799vmjorwfv"] == 2
    two = sorted((c for c in cands if c["case_id"] == "cju0roawvklrq0799vmjorwfv"), key=lambda c: c["instance"])
    big, small = two
    assert big["area"] > 3 * small["area"]
    assert big["bbox"][2] >= big["width"] - 2  # the large polyp touches the right edge
    assert small["bbox"][1] < small["height"] / 3  # the small one sits in the upper part
    assert big["width"] / 3 < (small["bbox"][0] + small["bbox"][2]) / 2 < 2 * big["width"] / 3  # … centre
    for c in cands:  # endoscopy: image-relative words only
        assert c["orientation"] == "image" and c["cues"]["patient_side"] is None


def test_medsegbench_keeps_official_splits(fixture_run):
    cands = of_source(fixture_run.candidates, "medsegbench_kvasir")
    cases_by_split: dict[str, set] = {}
    for c in cands:
        cases_by_split.setdefault(c["split"], set()).add(c["case_id"])
    assert {k: len(v) for k, v in cases_by_split.items()} == {"train": 3, "validation": 1, "test": 1}
    with np.load(FIXTURES / "medsegbench" / "kvasir_256.npz") as npz:
        assert [len(npz[f"{s}_images"]) for s in ("train", "val", "test")] == [3, 1, 1]
    assert fixture_run.report["by_source"]["medsegbench_kvasir"]["cases"] == 5
    for c in cands:
        assert c["label"] == "polyp" and c["width"] == c["height"] == 256


# ---- orientation on a non-canonical affine -----------------------------------------------------------


def test_lps_stored_volume_still_puts_the_left_organ_on_the_patients_left(tmp_path):
    """A volume stored with an LPS affine (first two axes flipped) holding a structure on the patient's
    left: after RAS+ reorientation the side is 'left' and the structure lies on the image's right."""
    import nibabel as nib

    from builder.candidates import run_candidates
    from builder.config import load_config

    ras_image, ras_label = synthetic_ct(side="left")
    # Store the same anatomy with voxel axes running towards patient Left and Posterior.
    lps_image, lps_label = ras_image[::-1, ::-1].copy(), ras_label[::-1, ::-1].copy()
    nx, ny, _ = ras_image.shape
    spacing = (1.5, 1.5, 4.0)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [(nx - 1) * spacing[0] / 2, (ny - 1) * spacing[1] / 2, 0.0]  # centred on the scanner origin
    assert nib.aff2axcodes(affine) == ("L", "P", "S")
    root = write_msd(tmp_path / "lps", {"case_lps": (lps_image, lps_label, affine, None)})
    # a left/right mirror of the same case as a control: same code path, opposite answer
    mirror_img, mirror_lab = synthetic_ct(side="right")
    write_msd(tmp_path / "lps_mirror", {"case_mirror": (mirror_img[::-1, ::-1].copy(), mirror_lab[::-1, ::-1].copy(),
                                                        affine, None)})
    config = tmp_path / "c.toml"
    config.write_text(f'[[sources]]\nname = "lps"\nformat = "msd"\npath = "{root}"\n'
                      f'[[sources]]\nname = "mirror"\nformat = "msd"\npath = "{tmp_path / "lps_mirror"}"\n')
    report = run_candidates(load_config(config), tmp_path / "out", workers=1, progress=False)
    assert report["errors"] == 0
    cands = [json.loads(line) for line in (tmp_path / "out" / "candidates.jsonl").read_text().splitlines()]
    for source, side in (("lps", "left"), ("mirror", "right")):
        found = [c for c in cands if c["source"] == source]
        assert found
        for c in found:
            assert c["cues"]["patient_side"]["word"] == side
            mask = read_png(tmp_path / "out" / c["mask"]) > 0
            centre = np.flatnonzero(mask.any(axis=0)).mean()
            if side == "left":
                assert centre > mask.shape[1] / 2  # patient's left on the image's right
            else:
                assert centre < mask.shape[1] / 2
            # anisotropic pixels (1.5 mm in-plane) are kept square; image is W×H = nx×ny
            assert (c["width"], c["height"]) == (nx, ny)


# ---- CLI ---------------------------------------------------------------------------------------------


def test_cli_source_argument_writes_report(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "builder", "candidates", "--source", f"msd:{FIXTURES / 'msd_spleen'}",
         "--out", str(out), "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["cases"] == 1 and report["errors"] == 0
    assert report["targets"] >= 1 and report["slices"] >= 1
    assert report["by_source"]["msd_spleen"]["targets"] == report["targets"]
    lines = (out / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == report["targets"]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert printed["targets"] == report["targets"]


def test_medsegbench_parallel_workers_read_the_npz_without_corruption(tmp_path):
    """Regression: readers cached in the parent were inherited by forked workers, which then shared one
    file offset and read each other's bytes ('invalid stored block lengths'). Repeated in-process runs
    with two workers must all be clean."""
    from builder.candidates import run_candidates
    from builder.config import load_config

    config = load_config(None, [f"medsegbench:{FIXTURES / 'medsegbench' / 'kvasir_256.npz'}"])
    for attempt in range(4):
        report = run_candidates(config, tmp_path / f"run{attempt}", workers=2, progress=False)
        errors = (tmp_path / f"run{attempt}" / "errors.jsonl").read_text()
        assert report["errors"] == 0, errors
        assert report["targets"] == 6
