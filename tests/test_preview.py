"""The preview gallery on a real build of the fixtures, opened in headless Chromium from disk."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from builder.cli import main as cli_main
from builder.preview import PAGE, build_preview, render_thumbnail
from tests.conftest import needs_fixtures

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="headless Chromium not found (install Debian's `chromium`: apt-get install -y chromium; .ci/run does)")
REJECT_REASONS = ("wrong_side", "leaked_coordinate")


def make_build(root: Path, candidates_dir: Path) -> Path:
    """A build folder from real candidates: offline queries, every query kept, plus a rejected.jsonl
    (two reasons and one unreadable line) shaped like the verification stage's, images under work/candidates."""
    from builder.dataset import DatasetSettings, write_dataset
    from builder.io import read_jsonl, write_jsonl
    from builder.queries import QueriesSettings, run_queries
    from builder.records import Candidate, Query
    from builder.splits import SplitSettings

    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / "candidates").symlink_to(candidates_dir, target_is_directory=True)
    run_queries(work / "candidates", work / "queries", QueriesSettings(vlm=None, queries_per_target=1, progress=False))
    rows = list(read_jsonl(work / "queries" / "queries.jsonl"))
    kept = [(Candidate.from_dict(r["candidate"]), Query.from_dict(r["query"]), {"kept": True, "stages": [
        {"stage": "format", "passed": True, "reason": "ok", "kind": None, "model": None, "score": None}]})
        for r in rows]
    write_dataset(kept, work / "candidates", root, DatasetSettings(), SplitSettings.from_dict({}, 0))
    rejected = []
    for i, r in enumerate(rows[:6]):
        reason = REJECT_REASONS[i % 2]
        rejected.append(r | {"verification": {"passed": False, "rejected_by": "priors", "reasons": [reason],
                                              "judge": None, "stages": [
            {"stage": "format", "passed": True, "reason": "ok", "details": {}},
            {"stage": "priors", "passed": False, "reason": reason, "details": {}}]}})
    rejected.append({"file": "queries.jsonl", "stage": "format", "reason": "malformed_json",
                     "message": "line 9: not valid JSON"})
    write_jsonl(work / "verified" / "rejected.jsonl", rejected)
    return root


@pytest.fixture(scope="module")
def built(fixture_run, tmp_path_factory):
    return make_build(tmp_path_factory.mktemp("preview_build"), fixture_run.out)


@pytest.fixture(scope="module")
def gallery(built, tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery")
    assert cli_main(["preview", "--data", str(built), "--out", str(out)]) == 0
    return out


def kept_rows(built: Path, config: str, split: str) -> list[dict]:
    rows = []
    for path in sorted((built / "data" / config).glob(f"{split}-*.parquet")):
        rows += pq.read_table(path, columns=["id", "query", "modality"]).to_pylist()
    return rows


def chromium(url: str, tmp: Path, screenshot: Path | None = None) -> str:
    """The DOM after the page's scripts ran (and a screenshot), from headless Chromium with no network."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=5000", "--window-size=1400,1100"]
    args += ["--dump-dom"] + ([f"--screenshot={screenshot}"] if screenshot else [])
    done = subprocess.run(args + [url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def cards(dom: str) -> list[str]:
    return re.findall(r'<div class="card" data-id="([^"]+)"', dom)


@needs_fixtures
def test_gallery_files_are_complete_and_deterministic(built, gallery, tmp_path):
    index_js = (gallery / "gallery" / "index.js").read_text()
    index = json.loads(index_js[len("MG.index("):-len(");\n")])
    default = kept_rows(built, "default", "train") + kept_rows(built, "default", "test") \
        + kept_rows(built, "default", "validation")
    assert len(index["items"]) == len(default) + 7  # every kept sample once, plus the rejected lines
    assert set(index["facets"]["reason"]) == {*REJECT_REASONS, "malformed_json"}
    assert {"endoscopy", "CT"} <= set(index["facets"]["modality"])
    details = [item for p in sorted((gallery / "gallery").glob("chunk-*.js"))
               for item in json.loads(p.read_text()[len("MG.chunk("):-len(");\n")])["items"]]
    thumbs = [d["thumb"] for d in details if d["thumb"]]
    assert len(thumbs) == len(details) - 1  # only the unreadable rejected line has no image
    for rel in thumbs:
        with Image.open(gallery / rel) as t:
            assert max(t.size) <= 256
    assert {p.stem for p in (gallery / "contact").glob("*.png")} >= {"default", "multi_object", "ct", "endoscopy"}
    again = tmp_path / "again"
    build_preview(built, again)
    for path in sorted(p for p in gallery.rglob("*") if p.is_file()):
        assert (again / path.relative_to(gallery)).read_bytes() == path.read_bytes(), path


def test_thumbnail_draws_box_and_mask_outline():
    import io


    image = np.zeros((512, 400), dtype=np.uint8)
    mask = np.zeros_like(image)
    mask[100:300, 80:240] = 255
    png = {}
    for name, arr in (("image", image), ("mask", mask)):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        png[name] = buf.getvalue()
    thumb = np.asarray(Image.open(io.BytesIO(render_thumbnail(png["image"], png["mask"], [200, 40, 360, 480]))))
    assert thumb.shape == (256, 200, 3)  # 512 px side scaled to 256
    assert tuple(thumb[20, 140]) == (255, 214, 0)  # box's top edge at y = 40 / 2
    assert tuple(thumb[100, 40]) == (0, 230, 255)  # mask's left edge at x = 80 / 2
    assert tuple(thumb[100, 80]) == (0, 0, 0)  # mask interior stays the image


@needs_fixtures
@needs_chromium
def test_gallery_renders_in_chromium_and_filters(built, gallery, tmp_path):
    test_rows = kept_rows(built, "default", "test")
    assert test_rows, "the fixture build has a test split"
    base = (gallery / "index.html").as_uri()
    dom = chromium(f"{base}#set=default/test", tmp_path)
    shown = cards(dom)
    assert len(shown) == min(PAGE, len(test_rows))
    assert sorted(shown) == sorted(r["id"] for r in test_rows)[:PAGE]
    for row in test_rows[:PAGE]:
        assert f'<div class="q">{html.escape(row["query"], quote=False)}</div>' in dom
    srcs = re.findall(r'<img loading="lazy" src="([^"]+)"', dom)
    assert len(srcs) == len(shown) and all((gallery / s).is_file() for s in srcs)

    train = kept_rows(built, "default", "train")
    endo = [r for r in train if r["modality"] == "endoscopy"]
    only_endo = cards(chromium(f"{base}#set=default/train&modality=endoscopy", tmp_path))
    assert 0 < len(only_endo) < min(PAGE, len(train))
    assert sorted(only_endo) == sorted(r["id"] for r in endo)[:PAGE]

    shot = built / "preview-screenshot.png"
    rejected = chromium(f"{base}#set=rejected&reason=wrong_side", tmp_path, screenshot=shot)
    assert len(cards(rejected)) == 3 and "rejected: wrong_side" in rejected and "priors: wrong_side" in rejected
    with Image.open(shot) as img:
        assert img.size == (1400, 1100) and len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 100  # not a blank page
    print(f"screenshot: {shot}")
