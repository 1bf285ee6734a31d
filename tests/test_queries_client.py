"""The VLM client against a loopback OpenAI server through the real openai SDK: retries, cache, limits."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from builder.vlm import Budget, ResponseCache, VLMClient, VLMSettings
from builder.vlm.client import TokenBucket
from tests.loopback_openai import LoopbackOpenAI, Reply

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
          "additionalProperties": False}
GOOD = Reply.json({"answer": "yes"})


@pytest.fixture
def server():
    with LoopbackOpenAI(handler=lambda request: GOOD) as s:
        yield s


def settings(server, tmp_path, **over) -> VLMSettings:
    base = dict(model="loop-model", base_url=server.base_url, timeout_s=0.5, max_attempts=3, backoff_base_s=0.01,
                backoff_max_s=0.05, repair_attempts=1, cache=str(tmp_path / "cache.sqlite"))
    base.update(over)
    return VLMSettings(**base)


def ask(s: VLMSettings, *prompts: str, schema=SCHEMA, budget: Budget | None = None):
    """Run one complete() per prompt concurrently; returns (completions, client totals)."""
    async def go():
        async with VLMClient(s, budget=budget) as client:
            results = await asyncio.gather(*(client.complete(
                stage="test", messages=[{"role": "user", "content": p}], prompt_version="t1",
                response_schema=schema) for p in prompts))
            return results, client.totals()
    return asyncio.run(go())


def test_success_is_cached_and_replayed_for_free(server, tmp_path):
    s = settings(server, tmp_path)
    (first,), totals = ask(s, "hello")
    assert first.ok and first.data == {"answer": "yes"} and not first.cached
    assert totals.calls == 1 and totals.prompt_tokens > 0 and totals.completion_tokens > 0
    (again,), totals = ask(s, "hello")
    assert again.ok and again.cached and again.data == first.data and again.usage.prompt_tokens == 0
    assert server.count == 1 and totals.cache_hits == 1
    ask(s, "hello", schema=None)  # other parameters, other key
    assert server.count == 2


def test_429_honours_retry_after_then_succeeds(server, tmp_path):
    server.script("slow down", Reply.rate_limited(retry_after=1))
    started = time.monotonic()
    (result,), totals = ask(settings(server, tmp_path), "slow down")
    assert result.ok and totals.retries == 1 and server.count == 2
    assert time.monotonic() - started >= 1.0  # waited as told, not the 0.01 s backoff


def test_500_is_retried_and_never_cached(server, tmp_path):
    server.script("flaky", Reply.server_error(500))
    (result,), totals = ask(settings(server, tmp_path), "flaky")
    assert result.ok and totals.retries == 1
    server.always("down", Reply.server_error(503))
    (result,), totals = ask(settings(server, tmp_path), "down")
    assert result.failure.reason == "http_5xx" and result.failure.transient and totals.retries == 2
    before = server.count
    (result,), _ = ask(settings(server, tmp_path), "down")  # a transient failure is asked again
    assert server.count == before + 3


def test_hang_past_timeout_is_retried(server, tmp_path):
    server.script("hang", Reply.hang(5))
    started = time.monotonic()
    (result,), totals = ask(settings(server, tmp_path), "hang")
    assert result.ok and totals.retries == 1 and time.monotonic() - started < 3
    server.always("forever", Reply.hang(5))
    (result,), _ = ask(settings(server, tmp_path), "forever")
    assert result.failure.reason == "timeout" and result.failure.transient


def test_malformed_json_is_reasked_with_the_error(server, tmp_path):
    server.script("fixable", Reply.text('{"answer": "yes"'))
    (result,), totals = ask(settings(server, tmp_path), "fixable")
    assert result.ok and result.attempts == 2 and totals.calls == 2
    reask = server.log[-1].text
    assert "not valid JSON" in reask and "rejected" in reask
    server.always("broken", Reply.text("answer: yes"))
    (result,), _ = ask(settings(server, tmp_path), "broken")
    assert result.failure.reason == "malformed_json" and result.text == "answer: yes" and result.attempts == 2


def test_schema_breaking_answer_becomes_schema_violation(server, tmp_path):
    server.always("wrong", Reply.json({"answer": 42, "extra": True}))
    (result,), _ = ask(settings(server, tmp_path), "wrong")
    assert result.failure.reason == "schema_violation" and json.loads(result.text)["answer"] == 42
    assert "schema violation" in server.log[-1].text


def test_fenced_json_is_accepted(server, tmp_path):
    server.script("fenced", Reply.text('```json\n{"answer": "fenced"}\n```'))
    (result,), _ = ask(settings(server, tmp_path), "fenced")
    assert result.ok and result.data == {"answer": "fenced"}


def test_refusal_is_a_failure_without_reask(server, tmp_path):
    server.always("refuse", Reply.refuse("I can't assist with that."))
    server.always("sorry", Reply.text("I'm sorry, but I cannot help with this request."))
    (a, b), _ = ask(settings(server, tmp_path), "refuse", "sorry")
    assert a.failure.reason == "refusal" and a.text == "I can't assist with that." and a.attempts == 1
    assert b.failure.reason == "refusal" and server.count == 2


def test_4xx_is_deterministic_and_cached(server, tmp_path):
    server.always("bad", Reply.client_error(400))
    (result,), totals = ask(settings(server, tmp_path), "bad")
    assert result.failure.reason == "http_4xx" and result.failure.status == 400 and totals.retries == 0
    (result,), _ = ask(settings(server, tmp_path), "bad")
    assert result.failure.reason == "http_4xx" and server.count == 1


def test_concurrency_limit_holds(server, tmp_path):
    server.latency = 0.15
    results, _ = ask(settings(server, tmp_path, concurrency=4, timeout_s=5), *[f"p{i}" for i in range(16)])
    assert all(r.ok for r in results)
    assert server.max_in_flight == 4


def test_budget_stops_at_the_request_cap(server, tmp_path):
    budget = Budget(max_requests=3)
    results, _ = ask(settings(server, tmp_path, concurrency=8), *[f"b{i}" for i in range(7)], budget=budget)
    assert server.count == 3
    assert sorted(r.failure.reason if r.failure else "ok" for r in results) == ["budget_exhausted"] * 4 + ["ok"] * 3


def test_rpm_limiter_paces_requests():
    async def go():
        bucket = TokenBucket(per_minute=600)  # 10 a second, burst of 10
        started = time.monotonic()
        for _ in range(20):
            await bucket.acquire()
        return time.monotonic() - started
    assert 0.9 <= asyncio.run(go()) < 2.0


def test_api_key_never_reaches_cache_or_logs(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MEDGROUND_TEST_KEY", "sk-secret-do-not-store-1234")
    caplog.set_level("DEBUG")
    ask(settings(server, tmp_path, api_key_env="MEDGROUND_TEST_KEY"), "secret?")
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"sk-secret" not in blob and "sk-secret" not in caplog.text


def test_cache_is_shared_across_connections(tmp_path):
    a, b = ResponseCache(tmp_path / "c.sqlite"), ResponseCache(tmp_path / "c.sqlite")
    a.put("k", stage="s", model="m", kind="ok", payload={"text": "t"})
    assert b.get("k") == ("ok", {"text": "t"}) and len(b) == 1
    with pytest.raises(ValueError):
        a.put("k2", stage="s", model="m", kind="transient", payload={})
