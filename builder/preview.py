"""``python -m builder preview --data DIR --out DIR``: a static HTML gallery of kept and rejected samples.

Why static: a curator opens ``index.html`` from disk (file://), with no server and no network, and judges
the data by looking at boxes on images. Why this layout: it must stay fast at 50k samples, so each sample
is rendered once as a small thumbnail (box and mask outline drawn in, named by content hash so reruns
skip unchanged ones), the page loads a compact filter index, and only the detail chunks the current page
needs are loaded (as ``<script>`` files, which file:// allows where ``fetch`` is refused). The URL hash
(``#set=default/test&modality=endoscopy&page=2``) holds the view, so a view can be bookmarked or tested.

Output: ``index.html``, ``gallery/index.js``, ``gallery/chunk-XXXXX.js``, ``thumbs/ab/<hash>.png`` and
``contact/<config>.png`` (a contact sheet per config for a terminal or a card). Same input, same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from builder.io import atomic_write_bytes, read_jsonl

log = logging.getLogger(__name__)

THUMB_SIDE = 256
CHUNK = 500  # samples per detail file
PAGE = 100  # cards per page
SHEET_CELL = 128
SHEET_COLUMNS = 8
SHEET_MAX = 64
BOX_COLOUR = (255, 214, 0)
OUTLINE_COLOUR = (0, 230, 255)
SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}
CUE_WORDS = ("size", "shape", "grid", "patient_side", "vertical", "centrality", "intensity")
COLUMNS = ["id", "image", "mask", "bbox", "width", "height", "query", "query_type", "label", "modality", "source",
           "cues", "verification"]


@dataclass
class Item:
    """One card: a kept sample (possibly in several config/split sets) or a rejected one."""

    key: str
    thumb: str | None
    fields: dict[str, Any]
    sets: list[str] = field(default_factory=list)


def render_thumbnail(image_bytes: bytes, mask_bytes: bytes | None, bbox: list[float] | None) -> bytes:
    """The image scaled to at most THUMB_SIDE px, with the mask's outline and the box drawn in."""
    with Image.open(io.BytesIO(image_bytes)) as img:
        image = img.convert("RGB")
    scale = min(1.0, THUMB_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    thumb = image.resize(size, Image.Resampling.LANCZOS) if scale < 1 else image
    if mask_bytes:
        with Image.open(io.BytesIO(mask_bytes)) as m:
            mask = m.convert("L").point(lambda v: 255 if v > 0 else 0)
        mask = mask.resize(size, Image.Resampling.NEAREST)
        outline = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(3)))
        thumb.paste(OUTLINE_COLOUR, (0, 0), outline)
    if bbox:
        x0, y0, x1, y1 = (v * scale for v in bbox)
        ImageDraw.Draw(thumb).rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=BOX_COLOUR, width=2)
    out = io.BytesIO()
    thumb.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _thumb(out: Path, image_bytes: bytes | None, mask_bytes: bytes | None, bbox: list[float] | None) -> str | None:
    """Write (once) the thumbnail named by the hash of its inputs; returns its path relative to ``out``."""
    if not image_bytes:
        return None
    digest = hashlib.sha256(image_bytes + b"\0" + (mask_bytes or b"") + json.dumps(bbox).encode()).hexdigest()[:24]
    rel = f"thumbs/{digest[:2]}/{digest}.png"
    if not (out / rel).is_file():
        atomic_write_bytes(out / rel, render_thumbnail(image_bytes, mask_bytes, bbox))
    return rel


def shard_sets(data_dir: Path) -> list[tuple[str, str, list[Path]]]:
    """(config, split, shards) for every config and split of a build, default config first."""
    found: dict[tuple[str, str], list[Path]] = {}
    for path in sorted((data_dir / "data").glob("*/*.parquet")):
        split = path.name.split("-", 1)[0]
        found.setdefault((path.parent.name, split), []).append(path)
    order = sorted(found, key=lambda k: (k[0] != "default", k[0] != "multi_object", k[0], SPLIT_ORDER.get(k[1], 9), k[1]))
    return [(c, s, found[(c, s)]) for c, s in order]


def iter_rows(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """Rows of Parquet shards, a batch at a time (images included, so memory stays bounded)."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        columns = [c for c in COLUMNS if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=64, columns=columns):
            yield from batch.to_pylist()


def _cue_words(cues: dict[str, Any] | None) -> list[str]:
    """Cue words from either the dataset's flat struct or a candidate's {value, word} dicts."""
    words: list[str] = []
    for name in CUE_WORDS:
        value = (cues or {}).get(name)
        word = value.get("word") if isinstance(value, dict) else value
        if word:
            words.append(str(word))
    for name in ("order", "relations"):
        for value in (cues or {}).get(name) or []:
            word = value.get("word") if isinstance(value, dict) else value
            if word:
                words.append(str(word))
    return words


def _stages(verification: dict[str, Any] | None) -> list[list[Any]]:
    return [[s.get("stage"), bool(s.get("passed")), s.get("reason")] for s in (verification or {}).get("stages") or []]


def _image_bytes(value: Any) -> bytes | None:
    return value.get("bytes") if isinstance(value, dict) else None


def kept_items(data_dir: Path, out: Path) -> tuple[dict[str, Item], list[str], dict[str, list[str]]]:
    """Every kept sample once (keyed by id) with the config/split sets it belongs to, the set names,
    and each config's first thumbnails for its contact sheet."""
    items: dict[str, Item] = {}
    set_names: list[str] = []
    sheets: dict[str, list[str]] = {}
    for config, split, paths in shard_sets(data_dir):
        name = f"{config}/{split}"
        set_names.append(name)
        for row in iter_rows(paths):
            item = items.get(row["id"])
            if item is None:
                thumb = _thumb(out, _image_bytes(row.get("image")), _image_bytes(row.get("mask")), row.get("bbox"))
                item = items[row["id"]] = Item(row["id"], thumb, {
                    "id": row["id"], "query": row.get("query"), "type": row.get("query_type"),
                    "source": row.get("source"), "modality": row.get("modality"), "label": row.get("label"),
                    "bbox": row.get("bbox"), "cues": _cue_words(row.get("cues")),
                    "stages": _stages(row.get("verification")), "reason": None})
            item.sets.append(name)
            if item.thumb and len(sheets.setdefault(config, [])) < SHEET_MAX and item.thumb not in sheets[config]:
                sheets[config].append(item.thumb)
    return items, set_names, sheets


def rejection_reason(row: dict[str, Any]) -> str:
    """The reason code a rejected sample is filed under: the first failing stage's, else the row's own."""
    verification = row.get("verification") or {}
    if verification.get("reasons"):
        return str(verification["reasons"][0])
    for stage in verification.get("stages") or []:
        if not stage.get("passed", True):
            return str(stage.get("reason") or "unknown")
    return str(row.get("reason") or "unknown")


def rejected_items(data_dir: Path, out: Path) -> list[Item]:
    """Cards for ``work/verified/rejected.jsonl`` (images from ``work/candidates``); absent file: none."""
    path = data_dir / "work" / "verified" / "rejected.jsonl"
    if not path.is_file():
        return []
    candidates_dir = data_dir / "work" / "candidates"
    items = []
    for n, row in enumerate(read_jsonl(path)):
        cand = row.get("candidate") if isinstance(row.get("candidate"), dict) else {}
        query = row.get("query") if isinstance(row.get("query"), dict) else {}
        image = candidates_dir / cand["image"] if cand.get("image") else None
        mask = candidates_dir / cand["mask"] if cand.get("mask") else None
        thumb = None
        if image is not None and image.is_file():
            thumb = _thumb(out, image.read_bytes(), mask.read_bytes() if mask and mask.is_file() else None,
                           cand.get("bbox"))
        key = str(query.get("query_id") or cand.get("target_id") or f"line{n + 1}")
        items.append(Item(f"rejected:{key}", thumb, {
            "id": key, "query": query.get("text") or row.get("message"), "type": query.get("query_type"),
            "source": cand.get("source") or row.get("source"), "modality": cand.get("modality"),
            "label": cand.get("label"), "bbox": cand.get("bbox"), "cues": _cue_words(cand.get("cues")),
            "stages": _stages(row.get("verification")), "reason": rejection_reason(row)}, ["rejected"]))
    return sorted(items, key=lambda i: (i.fields["reason"], i.key))


def contact_sheet(out: Path, thumbs: list[str]) -> bytes:
    """A grid of thumbnails (boxes and outlines already drawn) on a dark background."""
    rows = max(1, -(-len(thumbs) // SHEET_COLUMNS))
    sheet = Image.new("RGB", (SHEET_COLUMNS * SHEET_CELL, rows * SHEET_CELL), (24, 24, 24))
    for i, rel in enumerate(thumbs):
        with Image.open(out / rel) as t:
            t = t.convert("RGB")
            t.thumbnail((SHEET_CELL - 4, SHEET_CELL - 4), Image.Resampling.LANCZOS)
            x = (i % SHEET_COLUMNS) * SHEET_CELL + (SHEET_CELL - t.width) // 2
            y = (i // SHEET_COLUMNS) * SHEET_CELL + (SHEET_CELL - t.height) // 2
            sheet.paste(t, (x, y))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _js(name: str, data: Any) -> bytes:
    body = json.dumps(data, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return f"{name}({body});\n".encode("ascii")


def build_preview(data_dir: Path | str, out_dir: Path | str) -> dict[str, Any]:
    """Write the gallery and contact sheets; returns counts (items, sets, rejected, chunks)."""
    data_dir, out = Path(data_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kept, set_names, sheets = kept_items(data_dir, out)
    rejected = rejected_items(data_dir, out)
    items = [kept[k] for k in sorted(kept)] + rejected
    if rejected:
        set_names.append("rejected")
    facets = {name: sorted({str(i.fields[name]) for i in items if i.fields[name] is not None})
              for name in ("source", "modality", "type", "reason")}
    index = {"sets": set_names, "facets": facets, "page": PAGE, "chunk": CHUNK, "items": [
        [[set_names.index(s) for s in i.sets]] + [facets[f].index(str(i.fields[f])) if i.fields[f] is not None else -1
                                                  for f in ("source", "modality", "type", "reason")]
        for i in items]}
    gallery = out / "gallery"
    for old in gallery.glob("chunk-*.js"):
        old.unlink()
    atomic_write_bytes(gallery / "index.js", _js("MG.index", index))
    chunks = [items[i:i + CHUNK] for i in range(0, len(items), CHUNK)]
    for n, chunk in enumerate(chunks):
        atomic_write_bytes(gallery / f"chunk-{n:05d}.js",
                           _js("MG.chunk", {"n": n, "items": [dict(i.fields, thumb=i.thumb) for i in chunk]}))
    atomic_write_bytes(out / "index.html", HTML.encode("utf-8"))
    for config, thumbs in sorted(sheets.items()):
        atomic_write_bytes(out / "contact" / f"{config}.png", contact_sheet(out, thumbs))
    return {"items": len(items), "kept": len(kept), "rejected": len(rejected), "sets": set_names,
            "chunks": len(chunks), "contact_sheets": sorted(sheets)}


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MedGround preview</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#111;color:#ddd}
header{position:sticky;top:0;background:#1b1b1b;padding:8px 12px;border-bottom:1px solid #333;z-index:1}
header label{margin-right:10px}select,button{background:#222;color:#ddd;border:1px solid #444;padding:2px 4px}
#status{margin-left:10px;color:#aaa}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:10px;padding:12px}
.card{background:#1c1c1c;border:1px solid #333;border-radius:6px;padding:6px;overflow:hidden}
.card img{width:256px;height:256px;object-fit:contain;background:#000;display:block;margin:auto}
.noimg{width:256px;height:64px;display:flex;align-items:center;justify-content:center;color:#777;margin:auto}
.q{font-weight:600;margin:6px 0 2px;color:#fff}.meta,.cues,.id{color:#999;font-size:12px}
.id{word-break:break-all}.reason{color:#f77;font-weight:600}
.stages{list-style:none;padding:0;margin:4px 0 0;font-size:12px}
.stages .pass{color:#6c6}.stages .fail{color:#f66}
</style></head><body>
<header>
<label>Set <select id="f-set"></select></label>
<label>Source <select id="f-source"></select></label>
<label>Modality <select id="f-modality"></select></label>
<label>Query type <select id="f-type"></select></label>
<label>Reason <select id="f-reason"></select></label>
<button id="prev">&larr;</button> <span id="pageinfo"></span> <button id="next">&rarr;</button>
<span id="status"></span>
</header>
<main id="grid"></main>
<script>
var MG = {chunks: {}, pending: {}};
MG.index = function (data) { MG.data = data; };
MG.chunk = function (data) { MG.chunks[data.n] = data.items; };
</script>
<script src="gallery/index.js"></script>
<script>
(function () {
  var D = MG.data, FACETS = ["source", "modality", "type", "reason"];
  function readHash() {
    var out = {}, h = decodeURIComponent(location.hash.replace(/^#/, ""));
    h.split("&").forEach(function (kv) { var i = kv.indexOf("="); if (i > 0) out[kv.slice(0, i)] = kv.slice(i + 1); });
    return out;
  }
  function fill(id, values, all) {
    var sel = document.getElementById(id);
    if (all) sel.appendChild(new Option("all", ""));
    values.forEach(function (v) { sel.appendChild(new Option(v, v)); });
    sel.addEventListener("change", function () { state.page = 1; sync(); });
    return sel;
  }
  var state = {page: 1};
  var sels = {set: fill("f-set", D.sets, false)};
  FACETS.forEach(function (f) { sels[f] = fill("f-" + f, D.facets[f], true); });
  function fromHash() {
    var h = readHash();
    sels.set.value = D.sets.indexOf(h.set) >= 0 ? h.set : D.sets[0];
    FACETS.forEach(function (f) { sels[f].value = D.facets[f].indexOf(h[f]) >= 0 ? h[f] : ""; });
    state.page = Math.max(1, parseInt(h.page || "1", 10) || 1);
  }
  function sync() {
    var parts = ["set=" + sels.set.value];
    FACETS.forEach(function (f) { if (sels[f].value) parts.push(f + "=" + sels[f].value); });
    if (state.page > 1) parts.push("page=" + state.page);
    var h = "#" + parts.join("&");
    if (location.hash !== h) { history.replaceState(null, "", h); }
    render();
  }
  function selected() {
    var set = D.sets.indexOf(sels.set.value), want = FACETS.map(function (f) {
      return sels[f].value ? D.facets[f].indexOf(sels[f].value) : null; });
    var out = [];
    for (var i = 0; i < D.items.length; i++) {
      var it = D.items[i];
      if (it[0].indexOf(set) < 0) continue;
      var ok = true;
      for (var k = 0; k < FACETS.length; k++) if (want[k] !== null && it[k + 1] !== want[k]) { ok = false; break; }
      if (ok) out.push(i);
    }
    return out;
  }
  function load(n, done) {
    if (MG.chunks[n]) return done();
    if (!MG.pending[n]) {
      MG.pending[n] = [];
      var s = document.createElement("script");
      s.src = "gallery/chunk-" + ("0000" + n).slice(-5) + ".js";
      s.onload = function () { MG.pending[n].forEach(function (f) { f(); }); };
      document.body.appendChild(s);
    }
    MG.pending[n].push(done);
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e;
  }
  function card(it) {
    var c = el("div", "card");
    c.setAttribute("data-id", it.id);
    if (it.thumb) {
      var img = el("img"); img.loading = "lazy"; img.src = it.thumb; img.alt = it.query || ""; c.appendChild(img);
    } else c.appendChild(el("div", "noimg", "no image"));
    if (it.reason) c.appendChild(el("div", "reason", "rejected: " + it.reason));
    c.appendChild(el("div", "q", it.query || "(no query)"));
    c.appendChild(el("div", "meta", [it.type, it.label, it.source, it.modality].filter(Boolean).join(" \u00b7 ")));
    if (it.cues && it.cues.length) c.appendChild(el("div", "cues", "cues: " + it.cues.join(", ")));
    var ul = el("ul", "stages");
    (it.stages || []).forEach(function (s) {
      ul.appendChild(el("li", s[1] ? "pass" : "fail", (s[1] ? "\u2713 " : "\u2717 ") + s[0] + ": " + s[2]));
    });
    c.appendChild(ul);
    c.appendChild(el("div", "id", it.id));
    return c;
  }
  var ticket = 0;
  function render() {
    var mine = ++ticket, idx = selected(), pages = Math.max(1, Math.ceil(idx.length / D.page));
    state.page = Math.min(state.page, pages);
    var slice = idx.slice((state.page - 1) * D.page, state.page * D.page);
    document.getElementById("pageinfo").textContent = "page " + state.page + " / " + pages;
    document.getElementById("status").textContent = idx.length + " samples";
    var need = {}, left = 0;
    slice.forEach(function (i) { need[Math.floor(i / D.chunk)] = 1; });
    var keys = Object.keys(need);
    left = keys.length;
    function draw() {
      if (mine !== ticket) return;
      var grid = document.getElementById("grid"), frag = document.createDocumentFragment();
      slice.forEach(function (i) { frag.appendChild(card(MG.chunks[Math.floor(i / D.chunk)][i % D.chunk])); });
      grid.textContent = ""; grid.appendChild(frag);
      document.body.setAttribute("data-ready", String(slice.length));
    }
    if (!left) return draw();
    keys.forEach(function (n) { load(+n, function () { if (--left === 0) draw(); }); });
  }
  document.getElementById("prev").onclick = function () { if (state.page > 1) { state.page--; sync(); } };
  document.getElementById("next").onclick = function () { state.page++; sync(); };
  window.addEventListener("hashchange", function () { fromHash(); render(); });
  fromHash(); sync();
})();
</script>
</body></html>
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("preview", help="static HTML gallery (kept and rejected samples) + contact sheets",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="build folder (data/<config>/*.parquet, work/)")
    p.add_argument("--out", required=True, type=Path, help="output folder; open its index.html in a browser")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if not (args.data / "data").is_dir() and not (args.data / "work" / "verified" / "rejected.jsonl").is_file():
        print(f"{args.data}: no data/ shards and no work/verified/rejected.jsonl: is this a build folder?")
        return 1
    summary = build_preview(args.data, args.out)
    print(f"{summary['kept']} kept and {summary['rejected']} rejected samples in {len(summary['sets'])} sets; "
          f"open {(args.out / 'index.html').resolve().as_uri()}")
    return 0
