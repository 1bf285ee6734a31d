"""The query stage: candidates ─► referring queries, by a VLM endpoint or the offline template writer.

Input is a candidates folder (``candidates.jsonl`` + ``images/`` + ``masks/``); output is a folder with
``queries.jsonl``, ``rejected.jsonl``, ``pending.jsonl``, ``report.json`` and ``manifest.json``. Paid work
is never lost: every answer is cached by content before it is used, outputs are written atomically at
the end, and a run stopped by a budget cap (or killed) finishes on a rerun without repeating a call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from builder.config import BuildConfig, load_config
from builder.executors import Executor
from builder.io import atomic_write_json, read_jsonl, write_jsonl
from builder.offline_writer import GENERATOR, TEMPLATE_VERSION, write_queries
from builder.prompts import PROMPT_VERSION, build_messages, check_answer, response_schema
from builder.records import Candidate, ErrorRecord, Query
from builder.vlm import (Budget, ResponseCache, VLMClient, VLMSettings, cache_key, estimate_prompt_tokens,
                         request_params)

log = logging.getLogger(__name__)

STAGE = "query"
STAGE_KEYS = {"queries_per_target", "outline_target", "offline"}
EXIT_PENDING = 3  # the run stopped at a budget cap; rerun (with a higher cap) to finish


@dataclass
class QueriesSettings:
    vlm: VLMSettings | None = None  # None: the offline template writer
    queries_per_target: int = 4
    outline_target: bool = True  # send a second copy of the slice with the target outlined
    seed: int = 0
    max_requests: int | None = None
    max_cost: float | None = None
    progress: bool = True

    @classmethod
    def from_config(cls, config: BuildConfig, *, model: str | None = None, base_url: str | None = None,
                    offline: bool = False, cache: str | None = None, max_requests: int | None = None,
                    max_cost: float | None = None, progress: bool = True) -> QueriesSettings:
        """The ``[vlm]`` section plus command-line overrides. A VLM is used iff a model is configured."""
        section = config.section("vlm")
        unknown = set(section) - STAGE_KEYS - set(VLMSettings.__dataclass_fields__)
        if unknown:
            raise ValueError(f"[vlm] has unknown keys: {', '.join(sorted(unknown))}")
        for key, value in (("model", model), ("base_url", base_url), ("cache", cache)):
            if value is not None:
                section[key] = value
        base = config.path.resolve().parent if config.path else Path.cwd()
        use_vlm = bool(section.get("model")) and not (offline or section.get("offline", False))
        settings = cls(vlm=VLMSettings.from_section(section, base) if use_vlm else None,
                       queries_per_target=int(section.get("queries_per_target", 4)),
                       outline_target=bool(section.get("outline_target", True)), seed=config.seed,
                       max_requests=max_requests, max_cost=max_cost, progress=progress)
        if settings.queries_per_target < 1:
            raise ValueError("[vlm] queries_per_target must be >= 1")
        if max_cost is not None and settings.vlm and settings.vlm.model not in settings.vlm.prices:
            raise ValueError(f"--max-cost needs a price for model '{settings.vlm.model}' in [vlm.prices]")
        return settings


@dataclass
class QueriesReport:
    generator: str
    prompt_version: str
    targets: int = 0
    done: int = 0
    rejected: int = 0
    pending: int = 0
    queries: int = 0
    queries_by_type: Counter = field(default_factory=Counter)
    rejections_by_reason: Counter = field(default_factory=Counter)
    vlm: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # stage -> model -> counters
    cost_usd: float = 0.0
    elapsed_s: float = 0.0

    @property
    def complete(self) -> bool:
        return self.pending == 0

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items()}
        out["queries_by_type"] = dict(sorted(self.queries_by_type.items()))
        out["rejections_by_reason"] = dict(sorted(self.rejections_by_reason.items()))
        out["cost_usd"] = round(self.cost_usd, 6)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["complete"] = self.complete
        return out


@dataclass
class Plan:
    """What a run would cost, computed before spending anything (``--dry-run``)."""

    targets: int
    calls: int  # first requests not yet in the cache (re-asks may add more)
    cached: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None

    def describe(self) -> str:
        text = (f"{self.targets} targets: {self.calls} calls to make ({self.cached} already cached), "
                f"about {self.prompt_tokens} prompt + {self.completion_tokens} completion tokens")
        if self.cost_usd is not None:
            text += f", about ${self.cost_usd:.4f}"
        return text + " (re-asks after invalid answers add to this)"


@dataclass
class _Outcome:
    queries: list[Query] = field(default_factory=list)
    rejected: dict[str, Any] | None = None
    pending: bool = False


def load_candidates(candidates_dir: Path) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Candidates sorted by target id, plus rejected records for unreadable lines."""
    path = candidates_dir / "candidates.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no candidates.jsonl (run the candidates stage first)")
    good, bad = [], []
    for n, row in enumerate(read_jsonl(path), 1):
        try:
            good.append(Candidate.from_dict(row))
        except TypeError as exc:
            bad.append(ErrorRecord(file=str(path), stage=STAGE, reason="bad_candidate",
                                   message=f"line {n}: {exc}").to_dict() | {"target_id": row.get("target_id")})
    return sorted(good, key=lambda c: c.target_id), bad


def siblings_of(candidates: list[Candidate]) -> dict[str, list[Candidate]]:
    """target id -> the other instances of its label in its slice."""
    groups: dict[tuple[str, str], list[Candidate]] = defaultdict(list)
    for c in candidates:
        groups[(c.slice_id, c.label)].append(c)
    return {c.target_id: [o for o in groups[(c.slice_id, c.label)] if o.target_id != c.target_id]
            for c in candidates}


def _rejection(c: Candidate, reason: str, message: str, raw: str | None = None, **extra: Any) -> dict[str, Any]:
    record = ErrorRecord(file=c.image, stage=STAGE, reason=reason, message=message, source=c.source,
                         case_id=c.case_id).to_dict()
    return record | {"target_id": c.target_id, "raw": raw} | extra


def _offline(candidates: list[Candidate], settings: QueriesSettings) -> dict[str, _Outcome]:
    sibs = siblings_of(candidates)
    taken: dict[str, set[str]] = defaultdict(set)
    outcomes = {}
    for c in candidates:
        queries = write_queries(c, sibs[c.target_id], settings.queries_per_target, settings.seed, taken[c.slice_id])
        outcomes[c.target_id] = (_Outcome(queries=queries) if queries else
                                 _Outcome(rejected=_rejection(c, "no_usable_template", "no cue gave a unique query")))
    return outcomes


def _messages(candidates_dir: Path, c: Candidate, siblings: list[Candidate], settings: QueriesSettings):
    image = (candidates_dir / c.image).read_bytes()
    mask = (candidates_dir / c.mask).read_bytes() if settings.outline_target else None
    return build_messages(c, siblings, settings.queries_per_target, image, mask)


async def _one(client: VLMClient, candidates_dir: Path, c: Candidate, siblings: list[Candidate],
               settings: QueriesSettings) -> _Outcome:
    k = settings.queries_per_target
    try:
        messages = _messages(candidates_dir, c, siblings, settings)
    except (OSError, ValueError) as exc:
        return _Outcome(rejected=_rejection(c, "bad_input", f"{type(exc).__name__}: {exc}"))
    result = await client.complete(
        stage=STAGE, messages=messages, prompt_version=PROMPT_VERSION, response_schema=response_schema(k),
        schema_name="queries", validate=partial(check_answer, k=k, need_disambiguation=bool(siblings)))
    if result.failure is not None:
        if result.failure.reason == "budget_exhausted":
            return _Outcome(pending=True)
        return _Outcome(rejected=_rejection(c, result.failure.reason, result.failure.message, result.text,
                                            transient=result.failure.transient, attempts=result.attempts))
    return _Outcome(queries=[
        Query(query_id=f"{c.target_id}__q{i}", target_id=c.target_id, index=i, text=q["text"].strip(),
              query_type=q["type"], generator=client.model, prompt_version=PROMPT_VERSION, raw=result.text)
        for i, q in enumerate(result.data["queries"])])


async def _with_vlm(candidates_dir: Path, candidates: list[Candidate], settings: QueriesSettings,
                    report: QueriesReport, sibs: dict[str, list[Candidate]] | None = None,
                    **client_kwargs: Any) -> dict[str, _Outcome]:
    """``sibs`` and ``client_kwargs`` (cache, budget, limits) come from the Ray executor, which runs this
    over one chunk of the targets with cluster-wide limits (builder.ray_executor)."""
    assert settings.vlm is not None
    sibs = siblings_of(candidates) if sibs is None else sibs
    budget = client_kwargs.pop("budget", None) or Budget(settings.max_requests, settings.max_cost, settings.vlm.prices)
    outcomes: dict[str, _Outcome] = {}
    queue: asyncio.Queue[Candidate] = asyncio.Queue()
    for c in candidates:
        queue.put_nowait(c)
    bar = tqdm(total=len(candidates), unit="target", desc="queries", disable=not settings.progress or None,
               file=sys.stderr, mininterval=0.5)
    async with VLMClient(settings.vlm, budget=budget, **client_kwargs) as client:
        async def worker() -> None:
            while not queue.empty():
                c = queue.get_nowait()
                try:
                    outcomes[c.target_id] = await _one(client, candidates_dir, c, sibs[c.target_id], settings)
                except Exception as exc:  # one bad target never stops the run
                    log.debug("target %s failed", c.target_id, exc_info=True)
                    outcomes[c.target_id] = _Outcome(rejected=_rejection(c, "internal_error", f"{type(exc).__name__}: {exc}"))
                t = client.totals()
                bar.set_postfix(calls=t.calls, cached=t.cache_hits, retries=t.retries,
                                tokens=t.prompt_tokens + t.completion_tokens, refresh=False)
                bar.update(1)

        await asyncio.gather(*(worker() for _ in range(min(settings.vlm.concurrency, max(1, len(candidates))))))
        bar.close()
        for (stage, model), stats in sorted(client.stats.items()):
            report.vlm.setdefault(stage, {})[model] = stats.to_dict()
        report.cost_usd = client.totals().cost_usd
        client.cache.close()
    return outcomes


def run_queries(candidates_dir: Path | str, out_dir: Path | str, settings: QueriesSettings,
                executor: Executor | None = None, budget: Budget | None = None) -> QueriesReport:
    """Write queries for every candidate; returns the report (``report.complete`` is False when a budget
    cap left targets pending; a rerun finishes them, paying only for what is not yet cached). ``budget``
    lets the build share one cap with the visual judge (local executor; Ray has its cluster budget)."""
    started = time.monotonic()
    candidates_dir, out_dir = Path(candidates_dir).resolve(), Path(out_dir)
    candidates, bad = load_candidates(candidates_dir)
    vlm = settings.vlm
    report = QueriesReport(generator=vlm.model if vlm else GENERATOR,
                           prompt_version=PROMPT_VERSION if vlm else TEMPLATE_VERSION, targets=len(candidates))
    if vlm and executor is not None and executor.is_ray:
        outcomes = executor.ray().query_outcomes(candidates_dir, candidates, settings, report)
    elif vlm:
        outcomes = asyncio.run(_with_vlm(candidates_dir, candidates, settings, report, budget=budget))
    else:
        outcomes = _offline(candidates, settings)
    queries = sorted((q for o in outcomes.values() for q in o.queries), key=lambda q: (q.target_id, q.index))
    rejected = bad + sorted((o.rejected for o in outcomes.values() if o.rejected), key=lambda r: r["target_id"])
    pending = sorted(tid for tid, o in outcomes.items() if o.pending)
    by_id = {c.target_id: c for c in candidates}
    write_jsonl(out_dir / "queries.jsonl", ({"candidate": by_id[q.target_id].to_dict(), "query": q.to_dict()}
                                            for q in queries))
    write_jsonl(out_dir / "rejected.jsonl", rejected)
    write_jsonl(out_dir / "pending.jsonl", ({"target_id": t} for t in pending))
    report.done = sum(1 for o in outcomes.values() if o.queries)
    report.rejected, report.pending, report.queries = len(rejected), len(pending), len(queries)
    report.queries_by_type.update(q.query_type for q in queries)
    report.rejections_by_reason.update(r["reason"] for r in rejected)
    report.elapsed_s = time.monotonic() - started
    atomic_write_json(out_dir / "report.json", report.to_dict())
    atomic_write_json(out_dir / "manifest.json", {
        "stage": STAGE, "candidates_dir": str(candidates_dir), "generator": report.generator,
        "prompt_version": report.prompt_version, "queries_per_target": settings.queries_per_target,
        "seed": settings.seed, "complete": report.complete})
    return report


def plan_queries(candidates_dir: Path | str, settings: QueriesSettings) -> Plan:
    """Count the calls a run would make and estimate their tokens and cost, spending nothing."""
    candidates_dir = Path(candidates_dir).resolve()
    candidates, _ = load_candidates(candidates_dir)
    if settings.vlm is None:
        return Plan(len(candidates), 0, 0, 0, 0, None)
    vlm, k = settings.vlm, settings.queries_per_target
    sibs = siblings_of(candidates)
    cache = ResponseCache(vlm.cache)
    params = request_params(vlm, response_schema=response_schema(k), schema_name="queries")
    calls = cached = prompt = 0
    for c in candidates:
        try:
            messages = _messages(candidates_dir, c, sibs[c.target_id], settings)
        except (OSError, ValueError):
            continue
        if cache.contains(cache_key(vlm.model or "", messages, params, PROMPT_VERSION)):
            cached += 1
        else:
            calls += 1
            prompt += estimate_prompt_tokens(messages)
    cache.close()
    completion = calls * (vlm.max_tokens or 40 * k)
    price = vlm.prices.get(vlm.model or "")
    return Plan(len(candidates), calls, cached, prompt, completion,
                price.cost(prompt, completion) if price else None)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("queries", help="write referring queries for a candidates folder",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", required=True, type=Path, help="folder written by the candidates stage")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--config", type=Path, help="build config (TOML) with a [vlm] section")
    p.add_argument("--model", help="VLM model name (enables the VLM; overrides [vlm] model)")
    p.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--offline", action="store_true", help="use the template writer even if a model is set")
    p.add_argument("--cache", help="response cache (SQLite) path; overrides [vlm] cache")
    p.add_argument("--dry-run", action="store_true", help="print calls, tokens and cost estimate; spend nothing")
    p.add_argument("--max-requests", type=int, help="stop cleanly after this many HTTP requests")
    p.add_argument("--max-cost", type=float, help="stop cleanly before spending more than this many USD")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    settings = QueriesSettings.from_config(
        load_config(args.config), model=args.model, base_url=args.base_url, offline=args.offline,
        cache=args.cache, max_requests=args.max_requests, max_cost=args.max_cost, progress=not args.no_progress)
    if args.dry_run:
        print(plan_queries(args.candidates, settings).describe())
        return 0
    report = run_queries(args.candidates, args.out, settings)
    print(f"{report.done}/{report.targets} targets done, {report.queries} queries, {report.rejected} rejected, "
          f"{report.pending} pending; report in {args.out / 'report.json'}")
    if not report.complete:
        print(f"stopped at the budget: rerun (with a higher cap) to finish the {report.pending} pending targets",
              file=sys.stderr)
        return EXIT_PENDING
    return 0
