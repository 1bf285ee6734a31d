"""Boxes, cues, determinism and resume of the candidates stage."""

from __future__ import annotations

import filecmp
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FIXTURES_TOML, needs_fixtures, read_png

# ---- boxes -----------------------------------------------------------------------------------------


def _extent(mask: np.ndarray) -> list[float]:
    """Pixel-edge extent written out by hand: first and one-past-last occupied column / row."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_mask_bbox_uses_pixel_edges():
    from builder.targets import mask_bbox

    mask = np.zeros((40, 50), dtype=bool)
    mask[5:8, 10:20] = True  # rows 5..7, columns 10..19
    assert mask_bbox(mask) == (10.0, 5.0, 20.0, 8.0)
    one = np.zeros((4, 4), dtype=bool)
    one[3, 0] = True
    assert mask_bbox(one) == (0.0, 3.0, 1.0, 4.0)  # a single pixel is 1×1, not 0×0
    full = np.ones((6, 9), dtype=bool)
    assert mask_bbox(full) == (0.0, 0.0, 9.0, 6.0)
    with pytest.raises(ValueError):
        mask_bbox(np.zeros((3, 3), dtype=bool))


@needs_fixtures
def test_every_box_equals_its_masks_extent_on_every_fixture(fixture_run):
    assert fixture_run.candidates
    sources = Counter()
    for c in fixture_run.candidates:
        mask = read_png(fixture_run.out / c["mask"])
        image = read_png(fixture_run.out / c["image"])
        assert mask.ndim == 2 and mask.dtype == np.uint8, c["mask"]
        assert set(np.unique(mask)) <= {0, 255}, c["mask"]
        assert mask.shape == image.shape[:2] == (c["height"], c["width"]), c["target_id"]
        assert c["bbox"] == _extent(mask > 0), (c["target_id"], c["bbox"], _extent(mask > 0))
        assert c["area"] == int((mask > 0).sum())
        x0, y0, x1, y1 = c["bbox"]
        assert 0 <= x0 < x1 <= c["width"] and 0 <= y0 < y1 <= c["height"]
        sources[c["source"]] += 1
    assert len(sources) == 5, sources


@needs_fixtures
def test_target_ids_are_unique_and_files_exist(fixture_run):
    ids = [c["target_id"] for c in fixture_run.candidates]
    assert len(ids) == len(set(ids))
    masks = {c["mask"] for c in fixture_run.candidates}
    assert len(masks) == len(ids)
    on_disk = {f"masks/{p.name}" for p in (fixture_run.out / "masks").iterdir()}
    assert on_disk == masks


# ---- cues on synthetic masks -------------------------------------------------------------------------


def _targets(label_map: np.ndarray, image: np.ndarray | None = None, modality: str = "endoscopy",
             names: dict[int, str] | None = None):
    """Run the real slice → targets → cues path on a synthetic 2D case; returns {label: [Target]}."""
    from builder.cues import CueSettings, compute_cues, slice_context
    from builder.records import Case
    from builder.slicing import image_slice
    from builder.sources.base import default_orientation
    from builder.targets import TargetSettings, slice_targets

    if image is None:
        rng = np.random.default_rng(0)
        image = rng.integers(40, 60, size=label_map.shape, dtype=np.uint8)
    names = names or {1: "lesion"}
    case = Case(source="synthetic", case_id="c0", modality=modality, body_region="unknown", license="CC0",
                image=image, label_map=label_map.astype(np.int32), label_names=names, files=("synthetic",),
                orientation=default_orientation(modality, None))
    groups = slice_targets(image_slice(case), TargetSettings(), Counter())
    out = {}
    for label_id, group in groups.items():
        compute_cues(group, CueSettings(), slice_context(group[0].slice))
        out[names[label_id]] = group
    return out


def _disk(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_shape_words():
    lm = np.zeros((200, 200), dtype=np.int32)
    lm[_disk(lm.shape, (50, 50), 20)] = 1
    lm[120:126, 20:180] = 2  # 6×160 bar
    yy, xx = np.mgrid[:200, :200]
    lm[((yy - 160) / 12.0) ** 2 + ((xx - 150) / 22.0) ** 2 <= 1] = 3  # 1.8:1 ellipse
    t = _targets(lm, names={1: "disk", 2: "bar", 3: "ellipse"})
    assert t["disk"][0].cues.shape.word == "round"
    assert t["disk"][0].cues.elongation.value < 1.1
    assert t["bar"][0].cues.shape.word == "elongated"
    assert t["bar"][0].cues.elongation.value > 10
    assert t["ellipse"][0].cues.shape.word == "oval"
    ring = _disk((200, 200), (100, 100), 40) & ~_disk((200, 200), (100, 100), 30)
    ring[95:105, 100:] = False  # a C shape: far from convex
    c_shape = _targets(ring.astype(np.int32))
    assert c_shape["lesion"][0].cues.shape.word == "irregular"
    assert c_shape["lesion"][0].cues.solidity.value < 0.75


def test_size_words():
    lm = np.zeros((200, 200), dtype=np.int32)  # 40 000 px: tiny < 80 ≤ small < 800 ≤ medium < 3200 ≤ large
    boxes = {1: (slice(2, 8), slice(2, 8)), 2: (slice(20, 40), slice(2, 22)), 3: (slice(60, 100), slice(2, 42)),
             4: (slice(110, 190), slice(100, 180))}
    for label_id, box in boxes.items():
        lm[box] = label_id
    t = _targets(lm, names={1: "a", 2: "b", 3: "c", 4: "d"})
    assert [t[n][0].cues.size.word for n in "abcd"] == ["tiny", "small", "medium", "large"]
    assert t["b"][0].cues.size.value == pytest.approx(400 / 40000)


def test_grid_words():
    lm = np.zeros((90, 90), dtype=np.int32)
    lm[5:20, 5:20] = 1  # upper left
    lm[40:50, 40:50] = 2  # centre
    lm[70:85, 70:85] = 3  # lower right
    lm[5:20, 70:85] = 4  # upper right
    t = _targets(lm, names={1: "a", 2: "b", 3: "c", 4: "d"})
    assert t["a"][0].cues.grid.word == "upper left of the image"
    assert t["b"][0].cues.grid.word == "center of the image"
    assert t["c"][0].cues.grid.word == "lower right of the image"
    assert t["d"][0].cues.grid.word == "upper right of the image"
    assert t["b"][0].cues.centrality.word == "central" and t["a"][0].cues.centrality.word == "peripheral"


@pytest.mark.parametrize("modality,words", [("CT", ("hyperdense", "hypodense", "isodense")),
                                            ("MRI", ("hyperintense", "hypointense", "isointense")),
                                            ("endoscopy", ("brighter", "darker", "similar"))])
def test_intensity_words(modality, words):
    rng = np.random.default_rng(1)
    image = rng.normal(60, 4, size=(120, 120)).clip(0, 255).astype(np.uint8)
    lm = np.zeros((120, 120), dtype=np.int32)
    bright, dark, same = _disk(lm.shape, (30, 30), 12), _disk(lm.shape, (30, 90), 12), _disk(lm.shape, (90, 60), 12)
    image[bright] = 200
    image[dark] = 5
    lm[bright], lm[dark], lm[same] = 1, 2, 3
    t = _targets(lm, image=image, modality=modality, names={1: "bright", 2: "dark", 3: "same"})
    assert t["bright"][0].cues.intensity.word == words[0]
    assert t["dark"][0].cues.intensity.word == words[1]
    assert t["same"][0].cues.intensity.word == words[2]


def test_order_words_for_two_instances_of_different_size():
    lm = np.zeros((200, 200), dtype=np.int32)
    lm[_disk(lm.shape, (50, 50), 25)] = 1  # large, upper left
    lm[_disk(lm.shape, (150, 150), 10)] = 1  # small, lower right
    group = _targets(lm)["lesion"]
    assert [t.instance for t in group] == [0, 1] and {t.group_size for t in group} == {2}
    big, small = group
    assert big.area > small.area
    big_words, small_words = {c.word for c in big.cues.order}, {c.word for c in small.cues.order}
    assert "the larger" in big_words and "the smaller" in small_words
    assert "the upper" in big_words and "the lower" in small_words
    assert "the one on the left of the image" in big_words and "the one on the right of the image" in small_words
    assert big.cues.size_rank.word == "largest" and small.cues.size_rank.word == "smallest"
    # no patient-side wording where the orientation is not known
    assert not any("patient" in w for w in big_words | small_words)


def test_order_words_need_a_clear_difference():
    lm = np.zeros((100, 200), dtype=np.int32)
    lm[_disk(lm.shape, (50, 50), 15)] = 1
    lm[_disk(lm.shape, (50, 150), 15)] = 1  # same size, same row
    a, b = _targets(lm)["lesion"]
    words = {c.word for c in a.cues.order} | {c.word for c in b.cues.order}
    assert not words & {"the larger", "the smaller", "the upper", "the lower"}


def test_relations_for_a_radiological_2d_source_use_patient_sides():
    """A 2D source declared radiological may use patient sides; relation words follow the mirror."""
    from builder.cues import CueSettings, compute_cues, slice_context
    from builder.records import Case
    from builder.slicing import image_slice
    from builder.targets import TargetSettings, slice_targets

    lm = np.zeros((100, 100), dtype=np.int32)
    lm[40:60, 10:30] = 1  # image left = patient right
    lm[40:60, 70:90] = 2  # image right = patient left
    case = Case(source="s", case_id="c", modality="X-ray", body_region="chest", license="x",
                image=np.full((100, 100), 50, np.uint8), label_map=lm, label_names={1: "a", 2: "b"}, files=(),
                orientation="radiological")
    groups = slice_targets(image_slice(case), TargetSettings(), Counter())
    for g in groups.values():
        compute_cues(g, CueSettings(), slice_context(g[0].slice))
    a, b = groups[1][0], groups[2][0]
    assert a.cues.patient_side.word == "right" and b.cues.patient_side.word == "left"
    assert "patient_right_of" in {r.relation for r in a.cues.relations}
    assert "patient_left_of" in {r.relation for r in b.cues.relations}


# ---- determinism and resume --------------------------------------------------------------------------


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in folder.rglob("*.png")}


@needs_fixtures
def test_runs_are_deterministic_and_resume_reuses_case_results(fixture_run, tmp_path):
    from builder.candidates import run_candidates
    from builder.config import load_config
    from builder.records import safe_name

    config = load_config(FIXTURES_TOML)
    first = fixture_run.out
    second = tmp_path / "second"
    run_candidates(config, second, workers=2, progress=False)
    for name in ("candidates.jsonl", "errors.jsonl", "report.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    pngs_a, pngs_b = _files(first), _files(second)
    assert pngs_a.keys() == pngs_b.keys() and pngs_a
    mismatched = [k for k in pngs_a if not filecmp.cmp(pngs_a[k], pngs_b[k], shallow=False)]
    assert not mismatched, mismatched[:5]

    # Resume: rerun into the same folder; every case result is reused, no PNG rewritten.
    before = {k: p.stat().st_mtime_ns for k, p in _files(second).items()}
    case_files = sorted((second / "cases").rglob("*.json"))
    case_mtimes = {p: p.stat().st_mtime_ns for p in case_files}
    report = run_candidates(config, second, workers=2, progress=False)
    assert {k: p.stat().st_mtime_ns for k, p in _files(second).items()} == before
    assert {p: p.stat().st_mtime_ns for p in case_files} == case_mtimes
    assert (first / "candidates.jsonl").read_bytes() == (second / "candidates.jsonl").read_bytes()
    assert report["targets"] == fixture_run.report["targets"]

    # Remove one case's result: exactly that case is processed again, the rest are reused.
    redo = second / "cases" / safe_name("kvasir_seg") / "cju0roawvklrq0799vmjorwfv.json"
    redo.unlink()
    run_candidates(config, second, workers=2, progress=False)
    after = {k: p.stat().st_mtime_ns for k, p in _files(second).items()}
    changed = sorted(k for k in before if after[k] != before[k])
    assert changed and all("cju0roawvklrq0799vmjorwfv" in k for k in changed), changed
    assert redo.is_file()
    assert {p: p.stat().st_mtime_ns for p in case_files if p != redo} == \
        {p: m for p, m in case_mtimes.items() if p != redo}
    assert (first / "candidates.jsonl").read_bytes() == (second / "candidates.jsonl").read_bytes()


@needs_fixtures
def test_changed_settings_invalidate_cached_case_results(fixture_run, tmp_path):
    """A resumed run with different extraction settings must not reuse stale case results."""
    from builder.candidates import run_candidates
    from builder.config import load_config

    out = tmp_path / "copy"
    shutil.copytree(fixture_run.out, out)
    text = FIXTURES_TOML.read_text().replace("slices_per_structure = 2", "slices_per_structure = 1")
    assert text != FIXTURES_TOML.read_text()
    changed = tmp_path / "fixtures.toml"
    changed.write_text(text.replace('"../../shared/', f'"{FIXTURES_TOML.parent.parent.parent}/shared/'))
    report = run_candidates(load_config(changed), out, workers=2, progress=False)
    assert report["slices"] < fixture_run.report["slices"]
    volumes = [c for c in (out / "candidates.jsonl").read_text().splitlines() if '"totalseg_ct"' in c]
    assert volumes
    assert os.path.exists(out / "report.json")
