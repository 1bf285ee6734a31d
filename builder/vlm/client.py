"""An async client for any OpenAI-compatible chat endpoint that owns robustness, cost and caching.

Why here and not in each stage (NeMo Curator's split): query synthesis, the visual judge and the eval
harness all need the same things — a concurrency limit, request/token rate limits, retries for transient
faults only, a content-addressed cache so a killed run repeats no paid call, token and cost accounting,
and a budget that stops cleanly. Stages only build messages and interpret answers.

Retries are ours alone: the SDK is created with ``max_retries=0`` so the two never stack. Transient
faults (429, 5xx and 408, timeouts, connection errors) are classified by exception type and retried with
jittered exponential backoff honouring ``Retry-After``; they are never cached. Other 4xx answers are
deterministic and cached as failures. API keys are read from the environment, never logged or stored.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import math
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jsonschema
import openai
from openai.types.chat import ChatCompletion

from builder.vlm.cache import ResponseCache, cache_key

log = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json_schema", "json_object")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medground" / "vlm.sqlite"

# (reason, message) when an answer is unacceptable; the client re-asks with the message.
Validator = Callable[[Any], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


@dataclass
class VLMSettings:
    """The endpoint and how hard to use it (the ``[vlm]`` config section; see docs/queries.md)."""

    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    timeout_s: float = 60.0
    max_attempts: int = 5  # HTTP attempts per request, transient retries included
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    repair_attempts: int = 2  # re-asks after an invalid answer
    temperature: float = 0.7
    max_tokens: int | None = None
    response_format: str = "json_schema"
    cache: str = str(DEFAULT_CACHE)
    prices: dict[str, Price] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: dict[str, Any], base: Path | None = None) -> VLMSettings:
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in section.items() if k in known and k != "prices"}
        prices = {str(m): Price(float(p["input_per_mtok"]), float(p["output_per_mtok"]))
                  for m, p in section.get("prices", {}).items()}
        settings = cls(**kwargs, prices=prices)
        if base is not None and not Path(settings.cache).expanduser().is_absolute():
            settings.cache = str((base / settings.cache).resolve())
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.response_format not in RESPONSE_FORMATS:
            raise ValueError(f"[vlm] response_format must be one of {RESPONSE_FORMATS}, got {self.response_format!r}")
        if self.concurrency < 1 or self.max_attempts < 1 or self.repair_attempts < 0:
            raise ValueError("[vlm] concurrency and max_attempts must be >= 1, repair_attempts >= 0")
        if self.timeout_s <= 0:
            raise ValueError("[vlm] timeout_s must be > 0")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass(frozen=True)
class Failure:
    """Why a call produced no acceptable answer. ``transient`` failures are worth retrying in a later run."""

    reason: str  # malformed_json, schema_violation, refusal, http_4xx, budget_exhausted, rate_limited, ...
    message: str
    transient: bool = False
    status: int | None = None


@dataclass
class Completion:
    """The outcome of one logical call (its re-asks included)."""

    model: str
    data: Any | None  # the parsed, validated JSON (None for plain-text calls or on failure)
    text: str | None  # the last raw answer, kept for audits
    usage: Usage  # tokens actually spent by this call (zero when fully cached)
    cached: bool  # every answer came from the cache
    attempts: int  # answers requested: 1 + re-asks
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass
class StageStats:
    requests: int = 0  # HTTP requests sent, retries included
    calls: int = 0  # answers obtained over the network
    cache_hits: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    failures: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["cost_usd"] = round(self.cost_usd, 6)
        out["failures"] = dict(sorted(self.failures.items()))
        return out


class TokenBucket:
    """Smooth per-minute limiter (requests or tokens). A request larger than the burst goes into debt."""

    def __init__(self, per_minute: float, burst_s: float = 1.0):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:  # FIFO: waiters queue on the lock
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self._tokens >= need:
                    self._tokens -= amount
                    return
                await asyncio.sleep((need - self._tokens) / self.rate)

    def refund(self, amount: float) -> None:
        """Correct an estimate once the real count is known (negative to charge more)."""
        self._tokens = min(self.capacity, self._tokens + amount)


class Budget:
    """Caps on what one run may spend: HTTP requests and USD. Cached answers are free."""

    def __init__(self, max_requests: int | None = None, max_cost: float | None = None,
                 prices: dict[str, Price] | None = None):
        self.max_requests = max_requests
        self.max_cost = max_cost
        self.prices = prices or {}
        self.requests = 0
        self.cost = 0.0
        self._reserved = 0.0

    def price(self, model: str) -> Price | None:
        return self.prices.get(model)

    def reserve(self, model: str, est_prompt: int, est_completion: int) -> float | None:
        """Claim room for one request; returns the cost reserved, or None when the budget is spent."""
        if self.max_requests is not None and self.requests >= self.max_requests:
            return None
        est = 0.0
        price = self.price(model)
        if price is not None:
            est = price.cost(est_prompt, est_completion)
        if self.max_cost is not None and self.cost + self._reserved + est > self.max_cost:
            return None
        self.requests += 1
        self._reserved += est
        return est

    def settle(self, reserved: float, actual: float) -> None:
        self._reserved -= reserved
        self.cost += actual

    @property
    def exhausted(self) -> bool:
        return self.max_requests is not None and self.requests >= self.max_requests


def _png_size(data_url: str) -> tuple[int, int] | None:
    head = data_url.split(",", 1)[-1][:48]
    try:
        raw = base64.b64decode(head[: len(head) // 4 * 4])
    except ValueError:
        return None
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or len(raw) < 24:
        return None
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def image_tokens(width: int, height: int) -> int:
    """OpenAI's published high-detail image cost: 85 + 170 per 512-px tile after scaling."""
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A conservative estimate (about four characters a token, images by OpenAI's tile rule)."""
    chars, images = 0, 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for part in parts:
            if part.get("type") == "image_url":
                size = _png_size(part["image_url"]["url"])
                images += image_tokens(*size) if size else 765
            else:
                chars += len(part.get("text", ""))
        chars += 16  # role and framing
    return chars // 4 + images


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return None if parsed is None else max(0.0, parsed.timestamp() - time.time())


def request_params(settings: VLMSettings, *, response_schema: dict[str, Any] | None, schema_name: str = "response",
                   temperature: float | None = None, max_tokens: int | None = None) -> dict[str, Any]:
    """A request's parameters besides model and messages (part of the cache key, so one builder for all)."""
    params: dict[str, Any] = {"temperature": settings.temperature if temperature is None else temperature}
    max_tokens = max_tokens if max_tokens is not None else settings.max_tokens
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if response_schema is not None:
        if settings.response_format == "json_schema":
            params["response_format"] = {"type": "json_schema", "json_schema": {
                "name": schema_name, "schema": response_schema, "strict": True}}
        else:
            params["response_format"] = {"type": "json_object"}
    return params


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)
_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i am unable|i'm unable)", re.I)


def parse_json_answer(text: str) -> Any:
    """Parse an answer as JSON, tolerating a Markdown code fence around it."""
    match = _FENCE.match(text)
    return json.loads(match.group(1) if match else text)


class VLMClient:
    """One per event loop. ``async with VLMClient(settings) as client: await client.complete(...)``."""

    def __init__(self, settings: VLMSettings, *, cache: ResponseCache | None = None, budget: Budget | None = None,
                 limits: tuple[Any, Any, Any] | None = None):
        """``limits``: (concurrency slots, rpm bucket, tpm bucket) shared with other processes (see
        ``builder.vlm.limits``); by default this client's own, which bound only this process."""
        if not settings.model:
            raise ValueError("[vlm] model is not set (or pass --model)")
        self.settings = settings
        self.model = settings.model
        api_key = os.environ.get(settings.api_key_env)
        if not api_key:
            log.info("no API key in $%s; sending a placeholder (fine for local servers)", settings.api_key_env)
        self._sdk = openai.AsyncOpenAI(
            api_key=api_key or "no-key", base_url=settings.base_url or os.environ.get("OPENAI_BASE_URL") or None,
            timeout=settings.timeout_s, max_retries=0)
        self.cache = cache if cache is not None else ResponseCache(settings.cache)
        self.budget = budget or Budget(prices=settings.prices)
        self._sem, self._rpm, self._tpm = limits or (
            asyncio.Semaphore(settings.concurrency), TokenBucket(settings.rpm) if settings.rpm else None,
            TokenBucket(settings.tpm) if settings.tpm else None)
        self.stats: dict[tuple[str, str], StageStats] = {}

    async def __aenter__(self) -> VLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._sdk.close()

    def stage_stats(self, stage: str) -> StageStats:
        return self.stats.setdefault((stage, self.model), StageStats())

    def totals(self) -> StageStats:
        total = StageStats()
        for s in self.stats.values():
            for name in ("requests", "calls", "cache_hits", "retries", "prompt_tokens", "completion_tokens", "cost_usd"):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.failures.update(s.failures)
        return total

    def request_params(self, **kwargs: Any) -> dict[str, Any]:
        return request_params(self.settings, **kwargs)

    def key_for(self, messages: list[dict[str, Any]], params: dict[str, Any], prompt_version: str) -> str:
        return cache_key(self.model, messages, params, prompt_version)

    async def complete(self, *, stage: str, messages: list[dict[str, Any]], prompt_version: str,
                       response_schema: dict[str, Any] | None = None, schema_name: str = "response",
                       validate: Validator | None = None, temperature: float | None = None,
                       max_tokens: int | None = None) -> Completion:
        """Ask once, re-asking with the error (at most ``repair_attempts`` times) while the answer is not
        JSON, breaks ``response_schema`` or fails ``validate``. Never raises for API or answer faults."""
        params = self.request_params(response_schema=response_schema, schema_name=schema_name,
                                     temperature=temperature, max_tokens=max_tokens)
        stats = self.stage_stats(stage)
        history = list(messages)
        usage, all_cached, text = Usage(), True, None
        for attempt in range(1, self.settings.repair_attempts + 2):
            answer = await self._request(stage, history, params, prompt_version)
            if isinstance(answer, Failure):
                stats.failures[answer.reason] += 1
                return Completion(self.model, None, text, usage, False, attempt, answer)
            text, refusal, finish, used, cached = answer
            usage.add(used)
            all_cached &= cached
            if refusal or finish == "content_filter" or (text and _REFUSAL.match(text)):
                stats.failures["refusal"] += 1
                return Completion(self.model, None, refusal or text, usage, all_cached, attempt,
                                  Failure("refusal", (refusal or text or finish or "")[:500]))
            if response_schema is None:
                return Completion(self.model, None, text, usage, all_cached, attempt)
            problem = self._check(text, response_schema, validate)
            if problem is None:
                return Completion(self.model, parse_json_answer(text or ""), text, usage, all_cached, attempt)
            if attempt > self.settings.repair_attempts:
                stats.failures[problem[0]] += 1
                return Completion(self.model, None, text, usage, all_cached, attempt, Failure(*problem))
            history = history + [
                {"role": "assistant", "content": text or ""},
                {"role": "user", "content": f"That answer was rejected: {problem[1]} "
                                            "Reply again with only a JSON object that follows the schema."},
            ]
        raise AssertionError("unreachable")

    @staticmethod
    def _check(text: str | None, schema: dict[str, Any], validate: Validator | None) -> tuple[str, str] | None:
        try:
            data = parse_json_answer(text or "")
        except json.JSONDecodeError as exc:
            return "malformed_json", f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "the top level"
            return "schema_violation", f"schema violation at {where}: {error.message}."
        return validate(data) if validate else None

    async def _request(self, stage: str, messages: list[dict[str, Any]], params: dict[str, Any],
                       prompt_version: str) -> tuple[str | None, str | None, str | None, Usage, bool] | Failure:
        """One answer: from the cache, or over the network with transient retries."""
        stats = self.stage_stats(stage)
        key = self.key_for(messages, params, prompt_version)
        hit = self.cache.get(key)
        if hit is not None:
            stats.cache_hits += 1
            kind, payload = hit
            if kind == "error":
                return Failure(payload["reason"], payload["message"], False, payload.get("status"))
            return payload["text"], payload.get("refusal"), payload.get("finish_reason"), Usage(), True
        est_prompt = estimate_prompt_tokens(messages)
        est_completion = int(params.get("max_tokens") or 400)
        last: Failure | None = None
        for attempt in range(self.settings.max_attempts):
            if attempt:
                stats.retries += 1
            reserved = self.budget.reserve(self.model, est_prompt, est_completion)
            if reserved is None:
                return Failure("budget_exhausted", "the run's request or cost budget is spent", transient=True)
            if self._rpm:
                await self._rpm.acquire(1)
            if self._tpm:
                await self._tpm.acquire(est_prompt + est_completion)
            delay: float | None = None
            stats.requests += 1
            try:
                async with self._sem:
                    # The SDK's own POST: same transport, errors and timeout as chat.completions.create,
                    # without its per-request TypedDict transform of our plain-dict body (~2 ms CPU each).
                    response = await self._sdk.post("/chat/completions", cast_to=ChatCompletion,
                                                     body={"model": self.model, "messages": messages, **params})
            except openai.RateLimitError as exc:
                last, delay = Failure("rate_limited", _short(exc), True, 429), _retry_after(exc)
            except openai.APITimeoutError:
                last = Failure("timeout", f"no answer within {self.settings.timeout_s} s", True)
            except openai.APIConnectionError as exc:
                last = Failure("connection_error", _short(exc), True)
            except openai.APIStatusError as exc:
                if exc.status_code >= 500 or exc.status_code == 408:
                    last, delay = Failure("http_5xx" if exc.status_code >= 500 else "timeout", _short(exc), True,
                                          exc.status_code), _retry_after(exc)
                else:
                    self.budget.settle(reserved, 0.0)
                    failure = Failure("http_4xx", _short(exc), False, exc.status_code)
                    self.cache.put(key, stage=stage, model=self.model, kind="error", payload=failure.__dict__)
                    return failure
            except openai.OpenAIError as exc:  # e.g. a 200 whose body is not a chat completion
                self.budget.settle(reserved, 0.0)
                return Failure("bad_response", _short(exc), True)
            else:
                return self._accept(stage, key, response, reserved, est_prompt + est_completion)
            self.budget.settle(reserved, 0.0)
            if self._tpm:
                self._tpm.refund(est_prompt + est_completion)
            if attempt + 1 < self.settings.max_attempts:
                await asyncio.sleep(self._backoff(attempt, delay))
        assert last is not None
        return last

    def _accept(self, stage: str, key: str, response: Any, reserved: float,
                estimate: int) -> tuple[str | None, str | None, str | None, Usage, bool] | Failure:
        stats = self.stage_stats(stage)
        if not getattr(response, "choices", None):
            self.budget.settle(reserved, 0.0)
            return Failure("bad_response", "the answer has no choices", True)
        choice = response.choices[0]
        usage = Usage(getattr(response.usage, "prompt_tokens", 0) or 0,
                      getattr(response.usage, "completion_tokens", 0) or 0)
        price = self.budget.price(self.model)
        cost = price.cost(usage.prompt_tokens, usage.completion_tokens) if price else 0.0
        self.budget.settle(reserved, cost)
        if self._tpm:
            self._tpm.refund(estimate - usage.prompt_tokens - usage.completion_tokens)
        stats.calls += 1
        stats.prompt_tokens += usage.prompt_tokens
        stats.completion_tokens += usage.completion_tokens
        stats.cost_usd += cost
        text = choice.message.content
        refusal = getattr(choice.message, "refusal", None)
        payload = {"text": text, "refusal": refusal, "finish_reason": choice.finish_reason,
                   "usage": usage.__dict__, "model": getattr(response, "model", self.model)}
        self.cache.put(key, stage=stage, model=self.model, kind="ok", payload=payload)
        return text, refusal, choice.finish_reason, usage, False

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after >= 0:
            return retry_after + random.uniform(0, 0.1 * max(retry_after, self.settings.backoff_base_s))
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** attempt)
        return random.uniform(ceiling / 2, ceiling)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"
