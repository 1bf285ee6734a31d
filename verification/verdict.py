"""What a stage says about one sample, and the sample as every stage sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from builder.records import Candidate, Query
from verification.text import ParsedQuery, parse


@dataclass
class Verdict:
    """One stage's outcome: ``reason`` is a stable code ("ok" when passed); ``details`` explains it.

    ``kind`` separates a model's judgement ("vlm") from the model-free image check ("evidence_check")
    so that outputs never present one as the other; ``model`` and ``score`` are filled by those two.
    """

    stage: str
    passed: bool
    reason: str = "ok"
    details: dict[str, Any] = field(default_factory=dict)
    kind: str | None = None
    model: str | None = None
    score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"stage": self.stage, "passed": self.passed, "reason": self.reason,
                               "details": self.details}
        if self.kind is not None:
            out.update(kind=self.kind, model=self.model, score=self.score)
        return out


def fail(stage: str, failures: list[tuple[str, dict[str, Any]]]) -> Verdict:
    """A failing verdict for the first failure; the others stay visible in ``details``."""
    reason, details = failures[0]
    details = dict(details)
    if len(failures) > 1:
        details["other_failures"] = [{"reason": r, **d} for r, d in failures[1:]]
    return Verdict(stage, False, reason, details)


def outcome(stage: str, failures: list[tuple[str, dict[str, Any]]], **passed_details: Any) -> Verdict:
    return fail(stage, failures) if failures else Verdict(stage, True, "ok", dict(passed_details))


@dataclass
class Sample:
    """A candidate and one query written for it, as read from ``queries.jsonl``.

    ``raw_line`` keeps the input line so a rejected sample can be written back verbatim; ``error``
    holds a problem found while reading the line (then ``candidate``/``query`` may be None).
    """

    line_no: int
    raw_line: str
    data: dict[str, Any] | None
    candidate: Candidate | None = None
    query: Query | None = None
    error: tuple[str, str] | None = None  # (reason code, message) from reading the line

    @cached_property
    def parsed(self) -> ParsedQuery:
        assert self.query is not None
        return parse(self.query.text)

    @property
    def source(self) -> str:
        if self.candidate is not None:
            return self.candidate.source
        cand = (self.data or {}).get("candidate") if isinstance(self.data, dict) else None
        return str(cand.get("source", "unknown")) if isinstance(cand, dict) else "unknown"

    @property
    def query_type(self) -> str:
        if self.query is not None:
            return self.query.query_type
        query = (self.data or {}).get("query") if isinstance(self.data, dict) else None
        return str(query.get("query_type", "unknown")) if isinstance(query, dict) else "unknown"
