"""The grounding eval harness against the loopback OpenAI-compatible server, on a real fixture build."""

from __future__ import annotations

import base64
import hashlib
import json

import pyarrow.parquet as pq
import pytest

from builder.cli import main as cli_main
from builder.evaluate import EvalSettings, ParseError, iou, parse_box, run_eval, smart_resize
from builder.vlm import VLMSettings
from tests.conftest import needs_fixtures
from tests.loopback_openai import LoopbackOpenAI, Reply
from tests.test_preview import make_build


@pytest.fixture(scope="module")
def built(fixture_run, tmp_path_factory):
    return make_build(tmp_path_factory.mktemp("eval_build"), fixture_run.out)


@pytest.fixture(scope="module")
def truth(built):
    """(image sha256, query) -> row of the default/test split: what an oracle would know."""
    rows = {}
    for path in sorted((built / "data" / "default").glob("test-*.parquet")):
        for r in pq.read_table(path, columns=["id", "image", "query", "bbox", "width", "height"]).to_pylist():
            rows[(hashlib.sha256(r["image"]["bytes"]).hexdigest(), r["query"])] = r
    assert len(rows) >= 5, "the fixture build's test split is too small to evaluate"
    return rows


def lookup(truth, request):
    """The row a request asks about: its image's hash and the query quoted in the prompt."""
    url = next(p["image_url"]["url"] for m in request.body["messages"] for p in m["content"]
               if p.get("type") == "image_url")
    digest = hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()
    found = [r for (h, q), r in truth.items() if h == digest and (f'"{q}"' in request.text or f"<ref>{q}</ref>" in request.text)]
    assert len(found) == 1, request.text
    return found[0]


def oracle_answer(fmt, row, shift=0.0):
    x1, y1, x2, y2 = row["bbox"]
    x1, x2 = x1 + shift, x2 + shift
    w, h = row["width"], row["height"]
    if fmt == "json":
        return json.dumps({"bbox": [x1, y1, x2, y2]})
    if fmt == "plain":
        return f"{x1} {y1} {x2} {y2}"
    if fmt == "qwen25":
        rh, rw = smart_resize(h, w)
        box = [x1 * rw / w, y1 * rh / h, x2 * rw / w, y2 * rh / h]
        return "```json\n" + json.dumps([{"bbox_2d": box, "label": "target"}]) + "\n```"
    n = [round(x1 / w * 1000), round(y1 / h * 1000), round(x2 / w * 1000), round(y2 / h * 1000)]
    if fmt == "qwen_1000":
        return f"<ref>target</ref><box>({n[0]},{n[1]}),({n[2]},{n[3]})</box>"
    return f"target[[{n[0]}, {n[1]}, {n[2]}, {n[3]}]]"


def settings(server, tmp_path, concurrency=4):
    return VLMSettings(model="oracle-vl", base_url=server.base_url, concurrency=concurrency, max_attempts=2,
                       backoff_base_s=0.01, timeout_s=10, cache=str(tmp_path / "cache.sqlite"), temperature=0.0)


@needs_fixtures
@pytest.mark.parametrize("fmt", ["json", "qwen25", "qwen_1000", "internvl", "plain"])
def test_oracle_scores_100_percent_in_every_format(built, truth, tmp_path, fmt):
    with LoopbackOpenAI(handler=lambda r: Reply.text(oracle_answer(fmt, lookup(truth, r)))) as server:
        result = run_eval(str(built), "default", "test", settings(server, tmp_path), EvalSettings(fmt), tmp_path / "out")
    o = result["overall"]
    assert o["n"] == len(truth) and o["unparsed"] == 0
    assert o["acc@0.5"] == 1.0 and o["acc@0.3"] == 1.0
    # Pixel formats are exact; 0-1000 integers round each edge by at most half a unit.
    assert o["miou"] == 1.0 if fmt in ("json", "plain") else o["miou"] > 0.9
    assert all(m["acc@0.5"] == 1.0 for g in ("by_modality", "by_source", "by_query_type") for m in result[g].values())
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == len(truth) and all(p["pred_bbox"] for p in preds)


@needs_fixtures
def test_shifted_answers_give_the_hand_computed_iou(built, truth, tmp_path):
    """Each box shifted right by half its width (kept inside the image): overlap w/2·h, union 3/2·w·h, IoU 1/3."""
    def answer(request):
        row = lookup(truth, request)
        x1, _, x2, _ = row["bbox"]
        shift = (x2 - x1) / 2 if x2 + (x2 - x1) / 2 <= row["width"] else -(x2 - x1) / 2
        assert x1 + shift >= 0, "a box too wide to shift inside its image"
        return Reply.text(oracle_answer("json", row, shift))

    with LoopbackOpenAI(handler=answer) as server:
        result = run_eval(str(built), "default", "test", settings(server, tmp_path), EvalSettings("json"), tmp_path / "o")
    o = result["overall"]
    assert o["acc@0.5"] == 0.0 and o["acc@0.3"] == 1.0
    assert o["miou"] == pytest.approx(1 / 3, abs=1e-6)


@needs_fixtures
def test_garbage_and_failures_are_listed_misses(built, truth, tmp_path):
    garbage = ["I think it is somewhere on the left.", '{"bbox": "nope"}', "", "1 2 3"]
    rows = sorted(truth.values(), key=lambda r: r["id"])
    bad = {r["query"]: garbage[i % len(garbage)] for i, r in enumerate(rows[:4])}

    def answer(request):
        row = lookup(truth, request)
        if row["query"] in bad:
            return Reply.text(bad[row["query"]])
        if row is rows[4]:
            return Reply.client_error(400)
        return Reply.text(oracle_answer("json", row))

    with LoopbackOpenAI(handler=answer) as server:
        assert cli_main(["eval", "--data", str(built), "--config", "default", "--split", "test", "--base-url",
                         server.base_url, "--model", "oracle-vl", "--format", "json", "--out", str(tmp_path / "o"),
                         "--cache", str(tmp_path / "c.sqlite"), "--concurrency", "3"]) == 0
    result = json.loads((tmp_path / "o" / "metrics.json").read_text())
    n = len(truth)
    assert result["overall"]["n"] == n and result["overall"]["unparsed"] == 5
    assert result["overall"]["acc@0.5"] == pytest.approx((n - 5) / n, abs=1e-6)
    assert sorted(m["id"] for m in result["misses_unparsed"]) == sorted(r["id"] for r in rows[:5])
    assert any("http_4xx" in m["error"] for m in result["misses_unparsed"])
    table = (tmp_path / "o" / "metrics.md").read_text()
    assert "| overall | all |" in table and rows[0]["id"] in table


@needs_fixtures
def test_limit_and_cache(built, truth, tmp_path):
    with LoopbackOpenAI(handler=lambda r: Reply.text(oracle_answer("json", lookup(truth, r)))) as server:
        s = settings(server, tmp_path)
        run_eval(str(built), "default", "test", s, EvalSettings("json"), tmp_path / "a", limit=3)
        assert server.count == 3
        again = run_eval(str(built), "default", "test", s, EvalSettings("json"), tmp_path / "b", limit=3)
        assert server.count == 3 and again["vlm"]["cache_hits"] == 3 and again["overall"]["acc@0.5"] == 1.0


def test_iou_by_hand():
    assert iou([10, 20, 50, 60], [20, 20, 60, 60]) == pytest.approx(1200 / 2000)
    assert iou([0, 0, 10, 10], [10, 10, 20, 20]) == 0.0
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([5, 5, 5, 9], [5, 5, 5, 9]) == 0.0  # degenerate boxes never divide by zero


@pytest.mark.parametrize("fmt,text,expected", [
    ("json", '{"bbox": [10, 20, 30, 40]}', [10, 20, 30, 40]),
    ("json", 'Sure! ```json\n{"bbox": [10.5, 20, 30, 40]}\n```', [10.5, 20, 30, 40]),
    ("json", 'The box is {"bbox": [30, 40, 10, 20]} as asked.', [10, 20, 30, 40]),  # corners re-ordered
    ("json", '{"bbox": [-5, 20, 900, 40]}', [0, 20, 200, 40]),  # clipped to the 200 px image
    ("qwen25", '[{"bbox_2d": [0, 0, 196, 112], "label": "polyp"}]', [0, 0, 200, 100]),  # 196x112 grid
    ("qwen25", 'bbox_2d: [98, 56, 196, 112] (approximately)', [100, 50, 200, 100]),
    ("qwen_1000", "<ref>the polyp</ref><box>(100,200),(500,1000)</box>", [20, 20, 100, 100]),
    ("qwen_1000", "<|box_start|>(100,200),(500,1000)<|box_end|>", [20, 20, 100, 100]),
    ("internvl", "polyp[[100, 200, 500, 1000]]", [20, 20, 100, 100]),
    ("plain", "The box: 12, 14, 40, 41.5", [12, 14, 40, 41.5]),
])
def test_parse_box_formats(fmt, text, expected):
    assert smart_resize(100, 200) == (112, 196)  # sides rounded to multiples of 28
    assert parse_box(text, fmt, 200, 100) == pytest.approx(expected)


@pytest.mark.parametrize("fmt,text", [
    ("json", "no box here"), ("json", '{"box": [1, 2, 3, 4]}'), ("json", '{"bbox": [1, 2, 3]}'),
    ("qwen25", '{"bbox": [1, 2, 3, 4]}'), ("qwen_1000", "[[1, 2, 3, 4]]"), ("internvl", "<box>(1,2),(3,4)</box>"),
    ("plain", "1 2 3"), ("plain", ""), ("json", None),
])
def test_parse_box_rejects_garbage(fmt, text):
    with pytest.raises(ParseError):
        parse_box(text, fmt, 200, 100)
