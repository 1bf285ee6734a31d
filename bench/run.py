"""Run every ``bench/bench_*.py`` in turn (``make bench``). Each prints its own side-by-side numbers; a
failing benchmark is reported and the others still run. Exit status 1 if any failed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv: list[str]) -> int:
    wanted = set(argv)
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or p.stem in wanted or p.name in wanted)
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], cwd=ROOT)
        took = time.perf_counter() - start
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"--- {script.name}: {status} in {took:.1f} s", flush=True)
        if proc.returncode:
            failed.append(script.name)
    if not scripts:
        print("no bench/bench_*.py found")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
