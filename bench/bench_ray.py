"""Ray executor: the candidates stage (the per-case CPU stage) on the same input by local 1 worker, local 2
workers and a local Ray instance with 2 CPUs, as times and ratios to local 1 worker.

Input: the demo phantom with BENCH_RAY_CASES cases (default 12), generated once. Ray's start-up and its
first (cold) run, which starts its worker processes, are printed apart from the warm run in the table.
Prints, never asserts; says why and exits 0 when ray is not installed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CASES = int(os.environ.get("BENCH_RAY_CASES", "12"))


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> int:
    try:
        import ray
    except ImportError:
        print("skipped: ray is not installed (make setup-ray, or pip install '.[ray]')")
        return 0
    import builder
    import verification
    from builder.candidates import run_candidates
    from builder.config import BuildConfig
    from builder.executors import Executor
    from builder.phantom import ensure_phantom

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = BuildConfig(sources=[], raw={"build": {"seed": 0}, "demo": {"phantom": True, "cases": CASES}})
        config.sources.append(ensure_phantom(config, tmp))

        def stage(name: str, **kwargs) -> float:
            return timed(lambda: run_candidates(config, tmp / name, progress=False, **kwargs))

        local1 = stage("local1", workers=1)
        local2 = stage("local2", workers=2)
        startup = timed(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                                         runtime_env={"py_modules": [builder, verification]}))
        try:
            cold = stage("ray_cold", executor=Executor("ray"))
            warm = stage("ray_warm", executor=Executor("ray"))
        finally:
            ray.shutdown()
        same = all((tmp / "local1" / "candidates.jsonl").read_bytes() == (tmp / run / "candidates.jsonl").read_bytes()
                   for run in ("local2", "ray_cold", "ray_warm"))

    print(f"candidates stage, demo phantom with {CASES} cases, {os.cpu_count()} cores on this machine")
    print(f"{'run':<26}{'time s':>9}{'vs local 1':>12}")
    for name, took in (("local, 1 worker", local1), ("local, 2 workers", local2), ("ray, 2 CPUs (warm)", warm),
                       ("ray, 2 CPUs (cold)", cold)):
        print(f"{name:<26}{took:>9.2f}{took / local1:>11.2f}x")
    print(f"ray.init (local instance): {startup:.2f} s, not included above")
    print(f"identical candidates.jsonl in every run: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
