"""Counts of what verification kept and refused: per stage, per reason, per source and per query type,
as JSON and as Markdown ready for the dataset card."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from verification.reasons import meaning


@dataclass
class VerificationReport:
    total: int = 0
    passed: int = 0
    pending: int = 0  # judge calls that failed transiently: neither kept nor rejected until a rerun
    by_stage: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))  # run/passed/rejected
    by_reason: Counter = field(default_factory=Counter)  # "stage/reason" of the rejecting stage
    by_source: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    by_query_type: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    judge: dict[str, Any] = field(default_factory=dict)  # kind (vlm or evidence_check), model, thresholds
    upstream_rejected: int = 0  # queries the synthesis stage already refused (its own rejected.jsonl)
    unreadable_candidates: list[str] = field(default_factory=list)  # candidates.jsonl lines that did not parse
    order: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.total - self.passed - self.pending

    def add(self, source: str, query_type: str, record: dict[str, Any]) -> None:
        self.total += 1
        outcome = "passed" if record["passed"] else "pending" if record.get("pending") else "rejected"
        self.passed += record["passed"]
        self.pending += outcome == "pending"
        for verdict in record["stages"]:
            counts = self.by_stage[verdict["stage"]]
            counts["run"] += 1
            counts["passed" if verdict["passed"] else "failed"] += 1
        if record["rejected_by"] and outcome == "rejected":
            self.by_stage[record["rejected_by"]]["rejected"] += 1
            first = next(v for v in record["stages"] if not v["passed"])
            self.by_reason[f"{first['stage']}/{first['reason']}"] += 1
        for table, key in ((self.by_source, source), (self.by_query_type, query_type)):
            table[key]["total"] += 1
            table[key][outcome] += 1

    def to_dict(self) -> dict[str, Any]:
        def plain(table: dict[str, Counter]) -> dict[str, dict[str, int]]:
            return {k: dict(sorted(v.items())) for k, v in sorted(table.items())}
        return {"total": self.total, "passed": self.passed, "rejected": self.rejected, "pending": self.pending,
                "pass_rate": round(self.passed / self.total, 4) if self.total else None,
                "order": self.order, "by_stage": {s: dict(self.by_stage[s]) for s in self.order if s in self.by_stage},
                "by_reason": dict(self.by_reason.most_common()), "by_source": plain(self.by_source),
                "by_query_type": plain(self.by_query_type), "judge": self.judge,
                "upstream_rejected": self.upstream_rejected, "unreadable_candidates": self.unreadable_candidates}

    def markdown(self) -> str:
        judge = self.judge.get("kind")
        judge_text = (f"a VLM judge (`{self.judge.get('model')}`)" if judge == "vlm" else
                      "a model-free image evidence check (target contrast or texture against a ring around "
                      "its mask; no VLM judged these samples)" if judge == "evidence_check" else "no judge")
        rate = f"{100 * self.passed / self.total:.1f}%" if self.total else "n/a"
        lines = [
            "## Verification",
            "",
            f"Every generated query passed through the stages {', '.join(f'`{s}`' for s in self.order)} "
            f"(cheapest first; a sample is rejected by the first stage it fails). The visual stage was "
            f"{judge_text}. {self.passed} of {self.total} samples were kept ({rate}); rejected samples and "
            "their reasons are published alongside the data.",
            "",
        ]
        if self.pending:
            lines += [f"{self.pending} samples await a judge call that failed transiently (a rerun retries them).", ""]
        if self.upstream_rejected:
            lines += [f"Query synthesis had already refused {self.upstream_rejected} answers before verification.", ""]
        lines += ["| stage | checked | rejected |", "|---|---:|---:|"]
        lines += [f"| {s} | {self.by_stage[s]['run']} | {self.by_stage[s]['rejected']} |"
                  for s in self.order if s in self.by_stage]
        lines += ["", "| reason (stage/code) | rejected | meaning |", "|---|---:|---|"]
        lines += [f"| `{r}` | {n} | {meaning(r.split('/', 1)[-1])} |"
                  for r, n in self.by_reason.most_common()] or ["| none | 0 | |"]
        for title, table in (("source", self.by_source), ("query type", self.by_query_type)):
            lines += ["", f"| {title} | samples | kept | rejected |", "|---|---:|---:|---:|"]
            lines += [f"| {k} | {v['total']} | {v['passed']} | {v['rejected']} |" for k, v in sorted(table.items())]
        return "\n".join(lines) + "\n"
