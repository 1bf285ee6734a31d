"""Composing the stages and running them over a queries folder: verified, rejected and a report.

The order comes from the config (cheapest first). Stages run stage by stage over the whole batch so
that the judge can call its model concurrently; with ``stop_at_first_failure`` a sample that failed
is not shown to later, costlier stages. A stage that raises on one sample records ``stage_error``
for that sample and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.io import atomic_write_bytes, atomic_write_json, to_json
from builder.vlm import Budget, VLMSettings
from verification.ambiguity import AmbiguityStage
from verification.context import CandidateIndex
from verification.evidence import EvidenceJudge
from verification.format import FormatStage, read_sample, schema_errors
from verification.geometry import GeometryStage
from verification.judge import VLMJudge
from verification.priors import PriorsStage
from verification.report import VerificationReport
from verification.settings import VerificationSettings
from verification.verdict import Sample, Verdict

log = logging.getLogger(__name__)
RuleStage = Callable[[Sample], Verdict]


def judge_for(settings: VerificationSettings, vlm: VLMSettings | None, index: CandidateIndex,
              budget: Budget | None = None) -> EvidenceJudge | VLMJudge:
    """``auto`` uses the VLM when an endpoint model is configured, else the model-free evidence check."""
    mode = settings.judge.mode
    if settings.judge.model and vlm is not None:
        vlm = dataclasses.replace(vlm, model=settings.judge.model)
    has_model = vlm is not None and bool(vlm.model)
    if mode == "vlm" and not has_model:
        raise ValueError("[verification.judge] mode = 'vlm' needs a model ([vlm] model or [verification.judge] model)")
    if mode == "vlm" or (mode == "auto" and has_model):
        return VLMJudge(settings.judge, vlm, index, budget)
    return EvidenceJudge(settings.evidence, index)


def build_stages(settings: VerificationSettings, index: CandidateIndex, vlm: VLMSettings | None = None,
                 budget: Budget | None = None) -> list[Any]:
    makers = {
        "format": lambda: FormatStage(settings),
        "geometry": lambda: GeometryStage(settings, index),
        "priors": lambda: PriorsStage(settings, index),
        "ambiguity": lambda: AmbiguityStage(settings, index),
        "judge": lambda: judge_for(settings, vlm, index, budget),
    }
    return [makers[name]() for name in settings.order]


def _run_stage(stage: Any, samples: list[Sample]) -> list[Verdict]:
    if hasattr(stage, "run"):
        return stage.run(samples)
    verdicts = []
    for sample in samples:
        try:
            verdicts.append(stage(sample))
        except Exception as exc:  # one bad sample must not stop the run; it is recorded, not dropped
            log.exception("stage %s failed on line %d", stage.name, sample.line_no)
            verdicts.append(Verdict(stage.name, False, "stage_error", {"error": f"{type(exc).__name__}: {exc}"}))
    return verdicts


def verify(samples: list[Sample], settings: VerificationSettings, index: CandidateIndex,
           vlm: VLMSettings | None = None, budget: Budget | None = None) -> list[dict[str, Any]]:
    """One verification record per sample, in input order. ``pending`` marks a sample whose judge call
    failed transiently (rate limit, 5xx, timeout, spent budget): not judged yet, to be retried by a rerun."""
    stages = build_stages(settings, index, vlm, budget)
    results: list[list[Verdict]] = [[] for _ in samples]
    for stage in stages:
        alive = [i for i, s in enumerate(samples)
                 if (s.error is None or stage.name == "format")
                 and not (settings.stop_at_first_failure and any(not v.passed for v in results[i]))]
        for i, verdict in zip(alive, _run_stage(stage, [samples[i] for i in alive])):
            results[i].append(verdict)
    records = []
    for verdicts in results:
        failed = [v for v in verdicts if not v.passed]
        judge = next((v for v in verdicts if v.kind), None)
        ran = {v.stage for v in verdicts}
        records.append({
            "passed": not failed and len(verdicts) == len(stages),
            "pending": bool(failed) and bool(failed[0].details.get("transient")),
            "rejected_by": failed[0].stage if failed else None,
            "reasons": [v.reason for v in failed],
            "stages": [v.to_dict() for v in verdicts],
            "skipped": [s.name for s in stages if s.name not in ran],
            "judge": None if judge is None else {"kind": judge.kind, "model": judge.model, "score": judge.score},
        })
    return records


def read_samples(path: Path) -> list[Sample]:
    with open(path, encoding="utf-8") as f:
        return [read_sample(n, line.rstrip("\n")) for n, line in enumerate(f, 1) if line.strip()]


def candidates_folder(queries_dir: Path, explicit: Path | None) -> Path | None:
    """The candidates folder: given explicitly, or named by the query stage's manifest.json."""
    if explicit is not None:
        return explicit
    manifest = queries_dir / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        path = data.get("candidates_dir") or data.get("candidates")
        if path:
            p = Path(path)
            return p if p.is_absolute() else (queries_dir / p).resolve()
    return None


def run_verification(queries_dir: Path | str, out_dir: Path | str, settings: VerificationSettings | None = None,
                     *, vlm: VLMSettings | None = None, candidates_dir: Path | str | None = None,
                     budget: Budget | None = None) -> VerificationReport:
    """Verify ``queries_dir/queries.jsonl``; write ``verified.jsonl``, ``rejected.jsonl``, ``pending.jsonl``
    (judge calls that failed transiently; a rerun retries them, succeeded calls come from the cache),
    ``report.json`` and ``report.md`` to ``out_dir``. Pass the query stage's ``budget`` to share its caps."""
    queries_dir, out_dir = Path(queries_dir), Path(out_dir)
    settings = settings or VerificationSettings()
    queries_file = queries_dir / "queries.jsonl"
    if not queries_file.is_file():
        raise FileNotFoundError(f"{queries_file}: no queries to verify (run the queries stage first)")
    samples = read_samples(queries_file)
    index = CandidateIndex(candidates_folder(queries_dir, Path(candidates_dir) if candidates_dir else None))
    for s in samples:
        if s.candidate is not None:
            index.add(s.candidate)
    records = verify(samples, settings, index, vlm, budget)
    report = VerificationReport(order=list(settings.order), unreadable_candidates=index.load_errors)
    upstream = queries_dir / "rejected.jsonl"
    if upstream.is_file():
        report.upstream_rejected = sum(1 for line in upstream.open(encoding="utf-8") if line.strip())
    kept, refused, pending = [], [], []
    for sample, record in zip(samples, records):
        row = {"candidate": sample.data.get("candidate") if isinstance(sample.data, dict) else None,
               "query": sample.data.get("query") if isinstance(sample.data, dict) else None,
               "verification": record}
        if record["passed"] and (errors := schema_errors("sample.schema.json", row)):
            record.update(passed=False, rejected_by="format", reasons=["output_schema_violation"])
            record["stages"].append(Verdict("format", False, "output_schema_violation",
                                            {"message": "; ".join(errors)}).to_dict())
        report.add(sample.source, sample.query_type, record)
        if record["passed"]:
            kept.append(row)
        elif record["pending"]:
            pending.append(row)
        else:
            raw = sample.query.raw if sample.query is not None else None
            refused.append({**row, "line_no": sample.line_no, "reasons": record["reasons"],
                            "raw_query": raw if raw is not None else sample.raw_line})
    judge = next((r["judge"] for r in records if r["judge"]), None)
    report.judge = {"kind": judge["kind"] if judge else None, "model": judge["model"] if judge else None,
                    "min_score": settings.judge.min_score, "evidence": dataclasses.asdict(settings.evidence)}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "verified.jsonl", "".join(to_json(r) + "\n" for r in kept).encode("utf-8"))
    atomic_write_bytes(out_dir / "rejected.jsonl", "".join(to_json(r) + "\n" for r in refused).encode("utf-8"))
    atomic_write_bytes(out_dir / "pending.jsonl", "".join(to_json(r) + "\n" for r in pending).encode("utf-8"))
    atomic_write_json(out_dir / "report.json", report.to_dict())
    atomic_write_bytes(out_dir / "report.md", report.markdown().encode("utf-8"))
    return report
