"""Verification throughput against candidate extraction, so that rules never become the bottleneck.

Runs the candidates stage (workers=1) over the real fixtures and the offline query writer, then times
the rule stages (format, geometry, priors, ambiguity) and the model-free evidence check over the
resulting queries. Prints samples/s (wall and CPU: the machine may be shared), never asserts.
Uses ../shared/fixtures; says so and exits 0 when it is absent.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT.parent / "shared" / "fixtures"
FIXTURES_TOML = ROOT / "tests" / "fixtures.toml"
RULES = ("format", "geometry", "priors", "ambiguity")


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def main() -> int:
    if not FIXTURES.is_dir():
        print(f"skipped: real fixtures not found at {FIXTURES}")
        return 0
    from builder.candidates import run_candidates
    from builder.config import load_config
    from builder.queries import QueriesSettings, run_queries
    from verification.context import CandidateIndex
    from verification.pipeline import candidates_folder, read_samples, verify
    from verification.settings import VerificationSettings

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = clock()
        report = run_candidates(load_config(FIXTURES_TOML), work / "candidates", workers=1, progress=False)
        cand_wall, cand_cpu = since(start)
        targets = report["targets"]
        run_queries(work / "candidates", work / "queries", QueriesSettings())
        samples = read_samples(work / "queries" / "queries.jsonl")
        rows = [("candidate extraction (targets)", targets, cand_wall, cand_cpu)]
        for label, order in (("rule stages (samples)", ("format", *RULES[1:])),
                             ("rules + evidence check (samples)", (*RULES, "judge"))):
            settings = VerificationSettings(order=order, stop_at_first_failure=False)
            fresh = read_samples(work / "queries" / "queries.jsonl")  # parse caches start empty
            index = CandidateIndex(candidates_folder(work / "queries", None))
            start = clock()
            verify(fresh, settings, index)
            wall, cpu = since(start)
            rows.append((label, len(samples), wall, cpu))
    width = max(len(r[0]) for r in rows)
    print(f"{'stage':<{width}}  {'items':>6}  {'wall s':>7}  {'items/s (wall)':>14}  {'items/s (CPU)':>13}")
    for label, n, wall, cpu in rows:
        print(f"{label:<{width}}  {n:>6}  {wall:>7.2f}  {n / wall:>14.1f}  {n / max(cpu, 1e-9):>13.1f}")
    per_target = len(samples) / max(targets, 1)
    rules_rate = rows[1][1] / max(rows[1][3], 1e-9)
    cand_rate = targets / max(cand_cpu, 1e-9)
    print(f"\nqueries per target: {per_target:.1f}; rule stages keep up with extraction when "
          f"rules samples/s ≥ {per_target:.1f} × targets/s: {rules_rate:.0f} vs {per_target * cand_rate:.0f} "
          f"(CPU ratio {rules_rate / max(per_target * cand_rate, 1e-9):.1f}×)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
