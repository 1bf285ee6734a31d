"""The per-case stages as Ray tasks: candidates over shards of the case list, VLM queries over chunks of
targets. Results come back to the driver, which writes every output itself (per-case resume files,
queries, shards) exactly as a local build does, so both executors give byte-identical datasets.

Workers need the sources at the same paths as the driver (a shared filesystem on a multi-node cluster);
the builder's own code travels with the job (``py_modules``). VLM limits and the response cache are
cluster-wide through actors (``builder.vlm.limits``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

import builder
import verification

SHARDS_PER_CPU = 4  # enough shards to balance uneven cases, few enough to keep task overhead small


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (or $RAY_ADDRESS, else start a local instance); reuse a live connection."""
    if ray.is_initialized():
        return
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
             log_to_driver=False, runtime_env={"py_modules": [builder, verification]})


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def shard_size(n: int) -> int:
    return max(1, math.ceil(n / (SHARDS_PER_CPU * cluster_cpus())))


@ray.remote(num_cpus=1)
def _map_shard(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    return [fn(item) for item in items]


def ordered_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    """``map(fn, items)`` as one Ray task per shard, in input order. At most two shards per CPU are in
    flight, so results (PNG bytes) never pile up in the object store ahead of the driver writing them."""
    size = shard_size(len(items))
    shards = iter([items[i:i + size] for i in range(0, len(items), size)])
    fn_ref = ray.put(fn)
    window = deque(_map_shard.remote(fn_ref, s) for s in itertools.islice(shards, 2 * cluster_cpus()))
    while window:
        results = ray.get(window.popleft())
        if (shard := next(shards, None)) is not None:
            window.append(_map_shard.remote(fn_ref, shard))
        yield from results


@ray.remote(num_cpus=1)
def _query_chunk(candidates_dir: Path, chunk: list, siblings: dict, settings: Any, cluster: Any) -> tuple:
    from builder.queries import QueriesReport, _with_vlm

    report = QueriesReport(generator="", prompt_version="")
    outcomes = asyncio.run(_with_vlm(candidates_dir, chunk, settings, report, siblings, **cluster.client_kwargs()))
    return outcomes, report.vlm, report.cost_usd


def query_outcomes(candidates_dir: Path, candidates: list, settings: Any, report: Any) -> dict[str, Any]:
    """The VLM query stage over chunks of targets on the cluster; merges each chunk's client counters
    into ``report``. Budget caps, concurrency and rate limits hold for the whole run (one VLMGate)."""
    from builder.queries import siblings_of
    from builder.vlm.limits import ClusterVLM

    cluster = ClusterVLM(settings.vlm, settings.max_requests, settings.max_cost)
    worker_settings = dataclasses.replace(settings, progress=False)
    sibs = siblings_of(candidates)
    size = shard_size(len(candidates))
    pending = [_query_chunk.remote(candidates_dir, chunk, {c.target_id: sibs[c.target_id] for c in chunk},
                                   worker_settings, cluster)
               for chunk in (candidates[i:i + size] for i in range(0, len(candidates), size))]
    outcomes: dict[str, Any] = {}
    bar = tqdm(total=len(candidates), unit="target", desc="queries (ray)", disable=not settings.progress or None,
               file=sys.stderr)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            chunk_outcomes, vlm, cost = ray.get(done[0])
            outcomes.update(chunk_outcomes)
            report.cost_usd += cost
            for stage, models in vlm.items():
                for model, stats in models.items():
                    _add(report.vlm.setdefault(stage, {}).setdefault(model, {}), stats)
            bar.update(len(chunk_outcomes))
    finally:
        bar.close()
    return outcomes


def _add(total: dict[str, Any], stats: dict[str, Any]) -> None:
    for name, value in stats.items():
        if name == "failures":
            total[name] = dict(sorted((Counter(total.get(name, {})) + Counter(value)).items()))
        else:
            total[name] = total.get(name, 0) + value
