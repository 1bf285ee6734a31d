"""Consumer-side cost of our shards, side by side in one run.

1. Iterating the built dataset with ``datasets.load_dataset`` (decoding image and mask) against the floor:
   reading the same Parquet with pyarrow and decoding the same PNGs with Pillow.
2. Bytes per sample of our shards against the same samples stored as separate PNG files plus JSON.

Builds the demo config once into a temporary folder (or uses ``--data DIR`` of an existing build).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def iterate_datasets(data: Path, cache: Path) -> int:
    from datasets import load_dataset

    ds = load_dataset(str(data), split="train", cache_dir=str(cache))
    count = 0
    for row in ds:
        row["image"].load()
        row["mask"].load()
        count += 1
    return count


def iterate_floor(files: list[Path]) -> int:
    count = 0
    for file in files:
        table = pq.read_table(file)
        for image, mask in zip(table.column("image").to_pylist(), table.column("mask").to_pylist()):
            Image.open(io.BytesIO(image["bytes"])).load()
            Image.open(io.BytesIO(mask["bytes"])).load()
            count += 1
    return count


def separate_files_bytes(files: list[Path]) -> int:
    """What the same samples cost as image.png + mask.png + sample.json each (4 KiB filesystem blocks)."""
    block = 4096
    total = 0
    for file in files:
        for row in pq.read_table(file).to_pylist():
            for key in ("image", "mask"):
                total += -(-len(row.pop(key)["bytes"]) // block) * block
            total += -(-len(json.dumps(row, default=str).encode()) // block) * block
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="an existing build (default: build configs/demo.toml)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "demo"
            subprocess.run([sys.executable, "-m", "builder", "build", "--config", "configs/demo.toml",
                            "--out", str(data)], cwd=ROOT, check=True, capture_output=True)
        files = sorted((data / "data" / "default").glob("train-*.parquet"))
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        iterate_datasets(data, Path(tmp) / "cache")  # prepare the Arrow cache once, as any consumer would
        ours = best_of(3, lambda: iterate_datasets(data, Path(tmp) / "cache"))
        floor = best_of(3, lambda: iterate_floor(files))
        shard_bytes = sum(f.stat().st_size for f in files)
        loose_bytes = separate_files_bytes(files)
    print(f"samples (default/train): {rows}")
    print(f"{'':34}{'ours':>12}{'floor':>12}{'ratio':>8}")
    print(f"{'iterate + decode, s':34}{ours:12.3f}{floor:12.3f}{ours / floor:8.2f}x   "
          "(load_dataset vs pyarrow + Pillow)")
    print(f"{'bytes per sample':34}{shard_bytes / rows:12.0f}{loose_bytes / rows:12.0f}"
          f"{shard_bytes / loose_bytes:8.2f}x   (Parquet shards vs PNG + PNG + JSON files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
