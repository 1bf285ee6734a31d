"""The query stage end to end against the loopback server: faults become records, budgets stop cleanly,
dry runs spend nothing, and a killed real subprocess resumes without repeating a paid call."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.cli import main as cli_main
from builder.config import load_config
from builder.prompts import leak_in
from builder.queries import EXIT_PENDING, QueriesSettings, plan_queries, run_queries
from builder.records import QUERY_TYPES
from builder.vlm import Price, VLMSettings
from tests.loopback_openai import LoopbackOpenAI, Reply
from tests.queries_helpers import answer_queries, make_candidates

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    with LoopbackOpenAI(handler=answer_queries) as s:
        yield s


def qsettings(server, cache: Path, **over) -> QueriesSettings:
    vlm = dict(model="loop-vlm", base_url=server.base_url, timeout_s=0.5, max_attempts=3, backoff_base_s=0.01,
               backoff_max_s=0.05, repair_attempts=1, concurrency=4, cache=str(cache),
               prices={"loop-vlm": Price(input_per_mtok=1000.0, output_per_mtok=2000.0)})
    budget = {k: over.pop(k) for k in ("max_requests", "max_cost") if k in over}
    vlm.update(over)
    return QueriesSettings(vlm=VLMSettings(**vlm), queries_per_target=4, progress=False, **budget)


def outputs(out: Path) -> tuple[str, str]:
    return (out / "queries.jsonl").read_text(), (out / "rejected.jsonl").read_text()


def test_every_fault_ends_as_a_retry_or_a_rejection(server, tmp_path):
    make_candidates(tmp_path / "cand")  # nine targets in three slices
    server.script("Target: the liver.", Reply.rate_limited(0.2), Reply.server_error(502), Reply.hang(3))
    server.always("Target: the right kidney.", Reply.text('{"queries": [{"type": "category", '))
    server.always("Target: the left kidney.", Reply.json({"queries": [{"type": "guess", "text": "x"}]}))
    server.always("Target: the tumour.", Reply.refuse())
    server.always(lambda r: "Target: the polyp." in r.text and "position in the image: upper right" in r.text,
                  Reply.client_error(400))
    report = run_queries(tmp_path / "cand", tmp_path / "out", qsettings(server, tmp_path / "c.sqlite", max_attempts=4))
    rejected = {r["target_id"].split("__", 3)[-1]: r for r in map(json.loads, open(tmp_path / "out/rejected.jsonl"))}
    assert {k: r["reason"] for k, r in rejected.items()} == {
        "kidney_right__0": "malformed_json", "kidney_left__0": "schema_violation", "tumour__0": "refusal",
        "polyp__2": "http_4xx"}
    assert rejected["kidney_right__0"]["raw"].startswith('{"queries"') and rejected["kidney_right__0"]["stage"] == "query"
    assert report.done == 5 and report.rejected == 4 and report.pending == 0 and report.complete
    stats = report.vlm["query"]["loop-vlm"]
    assert stats["retries"] == 3  # 429, 502 and the timeout of the liver's request, each retried once
    assert report.queries == 20 and report.cost_usd > 0
    saved = json.loads((tmp_path / "out/report.json").read_text())
    assert saved["rejections_by_reason"] == {"http_4xx": 1, "malformed_json": 1, "refusal": 1, "schema_violation": 1}
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["candidates_dir"] == str((tmp_path / "cand").resolve()) and manifest["complete"]
    rows = [json.loads(line) for line in open(tmp_path / "out/queries.jsonl")]
    assert [(r["query"]["target_id"], r["query"]["index"]) for r in rows] == sorted(
        (r["query"]["target_id"], r["query"]["index"]) for r in rows)
    assert all(r["query"]["generator"] == "loop-vlm" and r["query"]["prompt_version"] for r in rows)


def test_coordinate_leak_is_reasked_then_rejected(server, tmp_path):
    make_candidates(tmp_path / "cand", kinds=("mr",))
    leaky = {"queries": [{"type": t, "text": f"the tumour at ({i}0, 45)"} for i, t in enumerate(QUERY_TYPES)]}
    server.always("Target: the tumour.", Reply.json(leaky))
    report = run_queries(tmp_path / "cand", tmp_path / "out", qsettings(server, tmp_path / "c.sqlite"))
    assert report.rejections_by_reason == {"coordinate_leak": 1} and server.count == 2
    assert "no numbers" in server.log[-1].text


def test_prompt_carries_image_cues_and_neighbours(server, tmp_path):
    make_candidates(tmp_path / "cand", kinds=("ct",))
    run_queries(tmp_path / "cand", tmp_path / "out", qsettings(server, tmp_path / "c.sqlite"))
    request = next(e for e in server.log
                   if "Target: the lesion." in e.text and "the smaller" in e.text.split("NOT the target")[0])
    assert "Cues computed from the expert mask" in request.text and "hypodense" in request.text
    assert "the larger" in request.text.split("NOT the target")[1]  # the other lesion's cue words
    assert "two instances of lesion" in request.text and not leak_in(request.text.split("Image:")[1])
    assert "Write exactly four" in request.text and "disambiguation" in request.text


def test_budget_cap_stops_then_a_higher_cap_finishes(server, tmp_path):
    make_candidates(tmp_path / "cand", copies=2)  # 18 targets
    first = run_queries(tmp_path / "cand", tmp_path / "out", qsettings(server, tmp_path / "c.sqlite", max_requests=5))
    assert server.count == 5 and first.done == 5 and first.pending == 13 and not first.complete
    assert len((tmp_path / "out/pending.jsonl").read_text().splitlines()) == 13
    succeeded = server.keys(status=200)
    server.reset()
    second = run_queries(tmp_path / "cand", tmp_path / "out", qsettings(server, tmp_path / "c.sqlite", max_requests=100))
    assert second.complete and second.done == 18 and server.count == 13 and not (server.keys() & succeeded)
    assert second.vlm["query"]["loop-vlm"]["cache_hits"] == 5
    run_queries(tmp_path / "cand", tmp_path / "fresh", qsettings(server, tmp_path / "fresh.sqlite"))
    assert outputs(tmp_path / "out") == outputs(tmp_path / "fresh")


def test_cost_cap_never_overspends(server, tmp_path):
    make_candidates(tmp_path / "cand", copies=2)
    s = qsettings(server, tmp_path / "c.sqlite", max_cost=6.0, max_tokens=300, concurrency=8)
    report = run_queries(tmp_path / "cand", tmp_path / "out", s)
    assert 0 < report.cost_usd <= 6.0 and report.pending > 0 and report.done + report.pending == 18


def test_dry_run_spends_nothing_and_sees_the_cache(server, tmp_path):
    make_candidates(tmp_path / "cand")
    s = qsettings(server, tmp_path / "c.sqlite")
    plan = plan_queries(tmp_path / "cand", s)
    assert (plan.targets, plan.calls, plan.cached) == (9, 9, 0) and server.count == 0
    assert plan.prompt_tokens > 9 * 2 * 85 and plan.cost_usd > 0
    run_queries(tmp_path / "cand", tmp_path / "out", s)
    plan = plan_queries(tmp_path / "cand", s)
    assert (plan.calls, plan.cached) == (0, 9) and "0 calls to make" in plan.describe()


def test_concurrency_limit_holds_across_targets(server, tmp_path):
    make_candidates(tmp_path / "cand", copies=2)
    server.latency = 0.1
    report = run_queries(tmp_path / "cand", tmp_path / "out", qsettings(server, tmp_path / "c.sqlite", concurrency=3,
                                                                         timeout_s=5))
    assert report.done == 18 and server.max_in_flight == 3


def _cli(cand: Path, out: Path, config: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENAI_API_KEY="sk-dummy-loopback")
    return subprocess.Popen([sys.executable, "-m", "builder", "queries", "--candidates", str(cand), "--out", str(out),
                             "--config", str(config), "--no-progress", *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _config(path: Path, server: LoopbackOpenAI, cache: Path) -> Path:
    path.write_text(f'[vlm]\nmodel = "loop-vlm"\nbase_url = "{server.base_url}"\nconcurrency = 4\ntimeout_s = 30\n'
                    f'cache = "{cache}"\nqueries_per_target = 3\n')
    return path


def test_killed_subprocess_resumes_without_repeating_calls(tmp_path):
    make_candidates(tmp_path / "cand", copies=3)  # 27 targets
    answered = threading.Semaphore(0)
    cutoff = 10

    def handler(request):
        if request.index < cutoff:
            reply = answer_queries(request)
            answered.release()
            return reply
        return Reply.hang(60)  # everything after the cutoff stays in flight until the kill

    with LoopbackOpenAI(handler=handler) as server:
        config = _config(tmp_path / "run.toml", server, tmp_path / "cache.sqlite")
        proc = _cli(tmp_path / "cand", tmp_path / "out", config)
        deadline = time.monotonic() + 120  # CLI start-up imports every stage: slow on a busy machine
        while server.count < cutoff + 4 and time.monotonic() < deadline:  # all workers now wait on hung calls
            time.sleep(0.05)
        time.sleep(0.5)  # let the client store the answers it already has
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        assert not (tmp_path / "out/queries.jsonl").exists()
        succeeded = server.keys(status=200)
        assert len(succeeded) == cutoff
        server.reset()
        server.handler = answer_queries
        assert cli_main(["queries", "--candidates", str(tmp_path / "cand"), "--out", str(tmp_path / "out"),
                         "--config", str(config), "--no-progress"]) == 0  # the rerun, in process to save a start-up
        assert not (server.keys() & succeeded)
        assert server.count == 27 - cutoff
        report = json.loads((tmp_path / "out/report.json").read_text())
        assert report["vlm"]["query"]["loop-vlm"]["cache_hits"] == cutoff and report["complete"]
        clean = _config(tmp_path / "clean.toml", server, tmp_path / "clean.sqlite")
        run_queries(tmp_path / "cand", tmp_path / "clean", QueriesSettings.from_config(load_config(clean), progress=False))
    assert outputs(tmp_path / "out") == outputs(tmp_path / "clean")
    assert len(outputs(tmp_path / "out")[0].splitlines()) == 27 * 3


def test_cli_budget_exit_code_and_dry_run(server, tmp_path, capsys):
    make_candidates(tmp_path / "cand")
    config = _config(tmp_path / "run.toml", server, tmp_path / "cache.sqlite")
    args = ["queries", "--candidates", str(tmp_path / "cand"), "--out", str(tmp_path / "out"), "--config", str(config),
            "--no-progress"]
    assert cli_main(args + ["--dry-run"]) == 0 and server.count == 0
    assert "9 calls to make" in capsys.readouterr().out
    assert cli_main(args + ["--max-requests", "2"]) == EXIT_PENDING and server.count == 2
    assert "pending" in capsys.readouterr().err


def test_offline_when_no_model_configured(tmp_path):
    settings = QueriesSettings.from_config(load_config(None), progress=False)
    assert settings.vlm is None
    make_candidates(tmp_path / "cand")
    report = run_queries(tmp_path / "cand", tmp_path / "out", settings)
    assert report.generator == "template" and report.done == 9
    assert not any(leak_in(json.loads(l)["query"]["text"]) for l in open(tmp_path / "out/queries.jsonl"))
