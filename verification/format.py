"""Format stage: the input line is JSON of the documented shape (``sample.schema.json``), the VLM's raw
answer parses and fits ``query_output.schema.json``, and the query text is a plain, bounded sentence."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from builder.records import Candidate, Query
from verification.settings import VerificationSettings
from verification.verdict import Sample, Verdict, outcome

STAGE = "format"
SCHEMA_DIR = Path(__file__).parent
# Markup, braces, control characters and URLs have no place in a clinical sentence.
# (Brackets, digits and underscores are left to the geometry stage, which names the leak they make.)
BAD_CHARS = re.compile(r"[\x00-\x1f\x7f*#`{}<>|\\~^$@]|https?://")


@cache
def validator(name: str) -> Draft202012Validator:
    if name == "input":  # a queries.jsonl line: a sample record before verification
        schema = json.loads((SCHEMA_DIR / "sample.schema.json").read_text(encoding="utf-8"))
        schema["required"] = ["candidate", "query"]
        del schema["properties"]["verification"]
    else:
        schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(inline_refs(schema, schema.get("$defs", {})))


def inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """Replace local ``#/$defs/x`` references by their target once: resolving them on every row made
    validation the slowest part of verification."""
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/") and len(node) == 1:
            return inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [inline_refs(v, defs) for v in node]
    return node


def schema_errors(name: str, data: Any) -> list[str]:
    """Readable messages ('candidate.bbox: [1, 2] is too short'), deepest first, at most five."""
    v = validator(name)
    if v.is_valid(data):
        return []
    errors = sorted(v.iter_errors(data), key=lambda e: -len(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"[:300] for e in errors[:5]]


def read_sample(line_no: int, line: str) -> Sample:
    """Parse one ``queries.jsonl`` line; a malformed or schema-breaking line becomes a sample with an error."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        return Sample(line_no, line, None, error=("malformed_json", f"line {line_no}: {exc}"))
    errors = schema_errors("input", data)
    if errors:
        return Sample(line_no, line, data, error=("schema_violation", "; ".join(errors)))
    return Sample(line_no, line, data, Candidate.from_dict(data["candidate"]), Query.from_dict(data["query"]))


class FormatStage:
    name = STAGE

    def __init__(self, settings: VerificationSettings):
        self.settings = settings

    def __call__(self, sample: Sample) -> Verdict:
        if sample.error:
            reason, message = sample.error
            return outcome(STAGE, [(reason, {"message": message})])
        s, q, cand = self.settings, sample.query, sample.candidate
        failures: list[tuple[str, dict[str, Any]]] = []
        text = q.text.strip()
        if q.target_id != cand.target_id:
            failures.append(("target_mismatch", {"query_target": q.target_id, "candidate": cand.target_id}))
        if len(text) < s.min_query_chars or not re.search(r"[A-Za-z]{2}", text):
            failures.append(("query_too_short", {"chars": len(text), "min": s.min_query_chars}))
        if len(text) > s.max_query_chars or len(text.split()) > s.max_query_words:
            failures.append(("query_too_long", {"chars": len(text), "words": len(text.split()),
                                                "max_chars": s.max_query_chars, "max_words": s.max_query_words}))
        if (bad := BAD_CHARS.search(q.text)) is not None:
            failures.append(("bad_characters", {"found": bad.group(0)}))
        if q.raw is not None and q.generator != "template":
            failures += self._raw_failures(q)
        return outcome(STAGE, failures)

    def _raw_failures(self, q: Query) -> list[tuple[str, dict[str, Any]]]:
        """The model's own answer must be valid JSON of the answer schema, and hold this query's text."""
        try:
            answer = json.loads(q.raw)
        except json.JSONDecodeError as exc:
            return [("malformed_json", {"message": f"raw answer: {exc}", "raw": q.raw[:500]})]
        errors = schema_errors("query_output.schema.json", answer)
        if errors:
            return [("schema_violation", {"message": "; ".join(errors), "raw": q.raw[:500]})]
        if q.text not in [item["text"] for item in answer["queries"]]:
            return [("query_not_in_answer", {"raw": q.raw[:500]})]
        return []
