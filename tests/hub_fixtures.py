"""A small Hub-ready build folder, shaped like the lead's build output (the push contract):

    README.md                                   card with YAML ``configs:`` (data_files per split)
    data/<config>/<split>-0000i-of-0000n.parquet
    assets/*.png
    medground35k.py                             builder script (a stand-in here)
    build.json                                  provenance

Replace ``make_built_dataset`` by the real build once it exists; the push tests only rely on the layout.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

SPLITS = ("train", "validation", "test")
CONFIGS = ("default", "CT", "multi_object")


def tiny_png(seed: int, size: int = 16, mask: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    if mask:
        arr = np.zeros((size, size), dtype=np.uint8)
        y, x = rng.integers(0, size // 2, size=2)
        arr[y:y + size // 3, x:x + size // 3] = 255
    else:
        arr = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _features():
    from datasets import Features, Image, List, Value
    return Features({
        "id": Value("string"),
        "image": Image(),
        "mask": Image(),
        "query": Value("string"),
        "bbox": List(Value("float32"), length=4),
        "source": Value("string"),
        "modality": Value("string"),
        "split_key": Value("string"),
    })


def _rows(config: str, split: str, n: int, salt: str) -> dict[str, list]:
    rows: dict[str, list] = {k: [] for k in _features()}
    for i in range(n):
        seed = int.from_bytes(hashlib.sha256(f"{config}/{split}/{i}/{salt}".encode()).digest()[:4], "big")
        x0, y0 = float(i % 7), float(i % 5)
        rows["id"].append(f"{config}-{split}-{i:04d}{salt}")
        rows["image"].append({"bytes": tiny_png(seed), "path": None})
        rows["mask"].append({"bytes": tiny_png(seed + 1, mask=True), "path": None})
        rows["query"].append(f"the small round lesion number {i} in the {config} {split} set{salt}")
        rows["bbox"].append([x0, y0, x0 + 4.5, y0 + 3.25])
        rows["source"].append("fixture")
        rows["modality"].append("CT" if config == "CT" else "MR")
        rows["split_key"].append(split)
    return rows


def card(configs: tuple[str, ...], stats: str = "") -> str:
    lines = ["---", "license: cc-by-4.0", "task_categories:", "- object-detection", "configs:"]
    for c in configs:
        lines.append(f"- config_name: {c}")
        if c == "default":
            lines.append("  default: true")
        lines.append("  data_files:")
        for s in SPLITS:
            lines += [f"  - split: {s}", f"    path: data/{c}/{s}-*.parquet"]
    lines += ["---", "", "# MedGround-35K (test fixture)", "",
              "`bbox = [x_min, y_min, x_max, y_max]` in absolute pixels of the stored image.", "", stats, ""]
    return "\n".join(lines)


def make_built_dataset(root: Path | str, *, rows_per_split: int = 6, shards: int = 2,
                       configs: tuple[str, ...] = CONFIGS, salt: str = "", assets: int = 2) -> Path:
    """Write a build folder under ``root`` and return it. ``salt`` changes the content (a new build)."""
    from datasets import Dataset

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    features = _features()
    for c in configs:
        for s in SPLITS:
            ds = Dataset.from_dict(_rows(c, s, rows_per_split, salt), features=features)
            for k in range(shards):
                out = root / "data" / c / f"{s}-{k:05d}-of-{shards:05d}.parquet"
                out.parent.mkdir(parents=True, exist_ok=True)
                ds.shard(num_shards=shards, index=k, contiguous=True).to_parquet(str(out))
    stats = f"Build{salt or ' (base)'}: {rows_per_split} rows per split in {shards} shard(s)."
    (root / "README.md").write_text(card(configs, stats), encoding="utf-8")
    for a in range(assets):
        (root / "assets").mkdir(exist_ok=True)
        (root / "assets" / f"example_{a}.png").write_bytes(tiny_png(1000 + a, size=32))
    (root / "medground35k.py").write_text(
        '"""Stand-in for the MedGround-35K GeneratorBasedBuilder (test fixture)."""\n'
        "import datasets\n\n\nclass MedGround35k(datasets.GeneratorBasedBuilder):\n"
        "    VERSION = datasets.Version('0.0.1')\n", encoding="utf-8")
    (root / "build.json").write_text(json.dumps(
        {"config": "fixture", "salt": salt, "shards": shards, "configs": list(configs),
         "versions": {"datasets": "5.2.0"}}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return root
