"""run_verification over a real queries folder (fixture candidates + the offline writer): outputs,
verification records, the report in JSON and Markdown, the CLI, and the settings' own checks."""

from __future__ import annotations

import json

import pytest

import argparse

from builder.io import read_jsonl
from builder.queries import QueriesSettings, run_queries
from verification.format import schema_errors
from verification.pipeline import run_verification
from verification.settings import VerificationSettings


@pytest.fixture(scope="module")
def queries_dir(fixture_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("queries")
    run_queries(fixture_run.out, out, QueriesSettings())
    with open(out / "queries.jsonl", "a", encoding="utf-8") as f:
        f.write("{broken json\n")  # a damaged line must be reported, not crash the run
    return out


def test_run_verification_writes_kept_rejected_and_report(queries_dir, tmp_path):
    report = run_verification(queries_dir, tmp_path)
    verified = list(read_jsonl(tmp_path / "verified.jsonl"))
    rejected = list(read_jsonl(tmp_path / "rejected.jsonl"))
    total = sum(1 for line in open(queries_dir / "queries.jsonl") if line.strip())
    assert len(verified) + len(rejected) == report.total == total
    assert report.pending == 0 and (tmp_path / "pending.jsonl").read_text() == ""  # no model, nothing pending
    assert report.passed == len(verified) > 0
    for row in verified:  # the final record fits its published schema
        assert schema_errors("sample.schema.json", row) == []
        assert row["verification"]["judge"]["kind"] == "evidence_check"
        assert [s["stage"] for s in row["verification"]["stages"]] == list(VerificationSettings().order)
    broken = [r for r in rejected if r["candidate"] is None]
    assert len(broken) == 1 and broken[0]["reasons"] == ["malformed_json"]
    assert broken[0]["raw_query"] == "{broken json"
    assert all(r["reasons"] and r["verification"]["rejected_by"] for r in rejected)

    data = json.loads((tmp_path / "report.json").read_text())
    assert data["total"] == total and sum(data["by_reason"].values()) == data["rejected"]
    assert data["by_reason"]["format/malformed_json"] == 1
    assert set(data["by_source"]) >= {"msd_spleen", "totalseg_ct", "sam_med2d", "kvasir_seg"}
    assert set(data["by_query_type"]) >= {"category", "spatial"}
    assert data["by_stage"]["format"]["run"] == total
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("## Verification") and "evidence check" in markdown and "no VLM" in markdown
    assert "| totalseg_ct |" in markdown


def test_cli_verify(queries_dir, tmp_path, capsys):
    """The ``verify`` subcommand as builder.cli registers it (only this module's parser is built, so the
    test does not depend on other stages' imports)."""
    from verification.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    config = tmp_path / "v.toml"
    config.write_text('[verification]\norder = ["format", "geometry"]\n')
    args = parser.parse_args(["verify", "--queries", str(queries_dir), "--out", str(tmp_path / "out"),
                              "--config", str(config)])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"] > 0 and summary["judge"]["kind"] is None  # no judge stage in this order
    assert (tmp_path / "out" / "report.md").is_file()


def test_settings_reject_unknown_keys_stages_and_modes():
    with pytest.raises(ValueError, match="unknown keys"):
        VerificationSettings.from_dict({"min_mask_aera": 3})
    with pytest.raises(ValueError, match="unknown stages"):
        VerificationSettings.from_dict({"order": ["format", "vibes"]})
    with pytest.raises(ValueError, match="start with 'format'"):
        VerificationSettings.from_dict({"order": ["geometry", "format"]})
    with pytest.raises(ValueError, match="mode"):
        VerificationSettings.from_dict({"judge": {"mode": "oracle"}})
    s = VerificationSettings.from_dict({"min_mask_area": 4, "judge": {"min_score": 1}, "evidence": {"ring_px": 3}})
    assert (s.min_mask_area, s.judge.min_score, s.evidence.ring_px) == (4, 1.0, 3)


def test_every_reason_code_in_the_code_is_documented():
    """Reason codes are the product's vocabulary: each literal a stage can return has a glossary entry."""
    import re
    from pathlib import Path

    from verification.reasons import REASONS

    patterns = [r'failures\.append\(\("([a-z_]+)"', r'return "([a-z_]+)", \{', r'return \[\("([a-z_]+)"',
                r'else \("([a-z_]+)"', r'Verdict\(STAGE, False, "([a-z_]+)"', r'reason = "([a-z_]+)"',
                r'code = "([a-z_]+)" if .* else "([a-z_]+)"', r'\[\("([a-z_]+)", \{', r'"([a-z_]+)" if passed else "([a-z_]+)"']
    found: set[str] = set()
    for path in (Path(__file__).resolve().parents[1] / "verification").glob("*.py"):
        text = path.read_text()
        for pattern in patterns:
            for match in re.findall(pattern, text):
                found |= set(match) if isinstance(match, tuple) else {match}
    found -= {"ok"}
    assert not sorted(found - set(REASONS))
    assert len(found) > 35, sorted(found)
