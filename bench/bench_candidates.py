"""Candidates stage: time against the floor, and peak memory at 1× and 10× the input.

* Time: the whole candidates stage (workers=1) over the real fixtures, against the floor: loading the same
  volumes and images, slicing them and PNG-encoding the same slices, and nothing else. Ratio aim ≤ 1.5×.
* Memory: peak RSS of a fresh process running the stage (workers=1) over the fixture cases once, and over
  the same cases repeated 10× (symlinked under different names). Ratio aim ≤ 1.2× (streaming, not
  accumulating).

Prints, never asserts. Uses ../shared/fixtures; says so and exits 0 when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT.parent / "shared" / "fixtures"
FIXTURES_TOML = ROOT / "tests" / "fixtures.toml"
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def _config():
    from builder.config import load_config

    return load_config(FIXTURES_TOML)


def _clock() -> tuple[float, float]:
    """(wall, CPU of this process): with workers=1 all work is in-process, and CPU time stays meaningful
    on a machine shared with other jobs."""
    return time.perf_counter(), time.process_time()


def time_stage(config, repeats: int) -> tuple[float, float]:
    from builder.candidates import run_candidates

    wall, cpu = float("inf"), float("inf")
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            w0, c0 = _clock()
            run_candidates(config, out, workers=1, progress=False)
            w1, c1 = _clock()
            wall, cpu = min(wall, w1 - w0), min(cpu, c1 - c0)
    return wall, cpu


def time_floor(config, repeats: int) -> tuple[float, float, int]:
    """Load every case, slice it with the same settings, PNG-encode every slice image; nothing else."""
    from builder.candidates import CandidateSettings
    from builder.io import png_bytes
    from builder.records import ErrorRecord
    from builder.slicing import slices_of
    from builder.sources import adapter_for

    settings = CandidateSettings.from_config(config)
    wall, cpu, encoded = float("inf"), float("inf"), 0
    for _ in range(repeats):
        w0, c0 = _clock()
        encoded = 0
        for spec in config.sources:
            adapter = adapter_for(spec)
            for ref in adapter.refs():
                if isinstance(ref, ErrorRecord):
                    continue
                case = adapter.load(ref)
                for s in slices_of(case, settings.slicing):
                    png_bytes(s.image)
                    encoded += 1
        w1, c1 = _clock()
        wall, cpu = min(wall, w1 - w0), min(cpu, c1 - c0)
    return wall, cpu, encoded


def profile_stage(config) -> str:
    """Top functions by cumulative time in one run of the stage (to find the hot spot)."""
    import cProfile
    import io
    import pstats

    from builder.candidates import run_candidates

    with tempfile.TemporaryDirectory() as out:
        prof = cProfile.Profile()
        prof.enable()
        run_candidates(config, out, workers=1, progress=False)
        prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
    return buf.getvalue()


# ---- memory ----------------------------------------------------------------------------------------


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def repeated_input(base: Path, times: int) -> Path:
    """A config over the fixture cases repeated ``times`` times (symlinks under new names)."""
    msd, nn, kv = base / "msd", base / "nnunet", base / "kvasir"
    training = []
    src_msd = FIXTURES / "msd_spleen"
    meta = json.loads((src_msd / "dataset.json").read_text())
    for i in range(times):
        _link(src_msd / "imagesTr" / "spleen_2.nii.gz", msd / "imagesTr" / f"spleen_{i:03d}.nii.gz")
        _link(src_msd / "labelsTr" / "spleen_2.nii.gz", msd / "labelsTr" / f"spleen_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/spleen_{i:03d}.nii.gz", "label": f"./labelsTr/spleen_{i:03d}.nii.gz"})
    meta["training"], meta["numTraining"] = training, times
    (msd / "dataset.json").write_text(json.dumps(meta))

    src_nn = FIXTURES / "nnunet_totalseg_ct"
    nn.mkdir(parents=True)
    (nn / "dataset.json").write_text((src_nn / "dataset.json").read_text())
    for i in range(times):
        _link(src_nn / "imagesTr" / "case_001_0000.nii.gz", nn / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        _link(src_nn / "labelsTr" / "case_001.nii.gz", nn / "labelsTr" / f"case_{i:03d}.nii.gz")

    src_kv = FIXTURES / "kvasir_seg"
    for i in range(times):
        for image in sorted((src_kv / "images").glob("*.jpg")):
            _link(image, kv / "images" / f"{image.stem}_{i:03d}.jpg")
            _link(src_kv / "masks" / image.name, kv / "masks" / f"{image.stem}_{i:03d}.jpg")

    config = base / "bench.toml"
    config.write_text(
        "[candidates]\nslices_per_structure = 2\n\n"
        f'[[sources]]\nname = "msd"\nformat = "msd"\npath = "{msd}"\n\n'
        f'[[sources]]\nname = "nnunet"\nformat = "nnunet"\npath = "{nn}"\nbody_region = "abdomen"\n\n'
        f'[[sources]]\nname = "kvasir"\nformat = "folder2d"\npath = "{kv}"\nmodality = "endoscopy"\n'
        'labels = { 1 = "polyp" }\n')
    return config


CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
from builder.candidates import run_candidates
from builder.config import load_config
report = run_candidates(load_config(sys.argv[1]), sys.argv[2], workers=1, progress=False)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"peak_kib": hwm, "cases": report["cases"], "targets": report["targets"], "errors": report["errors"]}))
"""


def peak_memory(times: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = repeated_input(Path(tmp) / "in", times)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(config), str(Path(tmp) / "out"), str(ROOT)],
                              capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    if not FIXTURES.is_dir():
        print(f"bench_candidates: skipped, real fixtures not found at {FIXTURES}")
        return 0
    config = _config()
    # warm-up: imports, page cache
    time_floor(config, 1)
    stage_wall, stage_cpu = time_stage(config, REPEATS)
    floor_wall, floor_cpu, slices = time_floor(config, REPEATS)
    one, ten = peak_memory(1), peak_memory(10)

    print(f"input: the 5 fixture sources, {slices} slices encoded; best of {REPEATS} runs, workers=1")
    print(f"{'':28}{'candidates':>12}{'floor':>12}{'ratio':>10}{'aim':>8}")
    print(f"{'time, CPU (s)':28}{stage_cpu:12.3f}{floor_cpu:12.3f}{stage_cpu / floor_cpu:9.2f}×{'≤ 1.5×':>8}")
    print(f"{'time, wall (s)':28}{stage_wall:12.3f}{floor_wall:12.3f}{stage_wall / floor_wall:9.2f}×{'≤ 1.5×':>8}")
    print(f"{'':28}{'1× input':>12}{'10× input':>12}{'ratio':>10}{'aim':>8}")
    print(f"{'peak RSS (MiB)':28}{one['peak_kib'] / 1024:12.1f}{ten['peak_kib'] / 1024:12.1f}"
          f"{ten['peak_kib'] / one['peak_kib']:9.2f}×{'≤ 1.2×':>8}")
    print(f"{'cases / targets':28}{one['cases']:>6}/{one['targets']:<5}{ten['cases']:>6}/{ten['targets']:<5}"
          f"  errors {one['errors']}/{ten['errors']}")
    if os.environ.get("BENCH_PROFILE"):
        print(profile_stage(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
