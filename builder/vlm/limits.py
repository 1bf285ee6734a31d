"""Cluster-wide VLM limits and response cache for Ray workers (imported only on the Ray path).

Why actors: a VLMClient's semaphore, token buckets and budget bound one process; with N Ray workers the
endpoint would see N times the configured concurrency and rate, and a ``--max-requests`` cap would be
N times too loose. One ``VLMGate`` actor hands out concurrency slots, rpm/tpm tokens and budget
reservations to every worker's client, so the ``[vlm]`` numbers hold for the whole cluster.

The same actor, pinned to the driver's node, owns the run's one connection to the SQLite response cache:
every worker reads and writes through it, so a call paid on any node is cached at once in the driver's file
(a rerun repeats none) and SQLite is never opened across a network filesystem, where WAL is unsafe.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from builder.vlm.cache import ResponseCache
from builder.vlm.client import Budget, Price, TokenBucket, VLMSettings

LEASE_MARGIN_S = 30.0  # a slot held this long past the request timeout belonged to a dead worker


@ray.remote(num_cpus=0)
class VLMGate:
    """Concurrency slots (leased, so a killed worker's slots come back), rpm/tpm buckets, the run's budget
    and the response cache. SQLite calls block the actor's loop for well under a millisecond."""

    def __init__(self, concurrency: int, rpm: float | None, tpm: float | None, lease_s: float, cache: str):
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.leases: dict[str, float] = {}  # lease id -> expiry (monotonic)
        self.freed = asyncio.Condition()
        self.buckets = {"rpm": TokenBucket(rpm) if rpm else None, "tpm": TokenBucket(tpm) if tpm else None}
        self.budget = Budget()
        self.cache = ResponseCache(cache)
        self.peak = 0

    async def begin(self, max_requests: int | None, max_cost: float | None, prices: dict[str, Price]) -> None:
        """A new stage run: a fresh budget (limits and cache carry over)."""
        self.budget = Budget(max_requests, max_cost, prices)
        self.peak = 0

    async def acquire_slot(self) -> str:
        async with self.freed:
            while True:
                now = time.monotonic()
                for lease, expiry in list(self.leases.items()):
                    if expiry < now:
                        del self.leases[lease]
                if len(self.leases) < self.concurrency:
                    lease = uuid.uuid4().hex
                    self.leases[lease] = now + self.lease_s
                    self.peak = max(self.peak, len(self.leases))
                    return lease
                wait = min(self.leases.values()) - now
                try:
                    await asyncio.wait_for(self.freed.wait(), timeout=max(wait, 0.01))
                except asyncio.TimeoutError:
                    pass

    async def release_slot(self, lease: str) -> None:
        async with self.freed:
            self.leases.pop(lease, None)
            self.freed.notify()

    async def take(self, bucket: str, amount: float) -> None:
        await self.buckets[bucket].acquire(amount)

    async def refund(self, bucket: str, amount: float) -> None:
        self.buckets[bucket].refund(amount)

    async def reserve(self, model: str, est_prompt: int, est_completion: int) -> float | None:
        return self.budget.reserve(model, est_prompt, est_completion)

    async def settle(self, reserved: float, actual: float) -> None:
        self.budget.settle(reserved, actual)

    async def usage(self) -> dict[str, Any]:
        return {"requests": self.budget.requests, "cost_usd": self.budget.cost, "peak_slots": self.peak}

    async def get(self, key: str) -> tuple[str, dict[str, Any]] | None:
        return self.cache.get(key)

    async def contains(self, key: str) -> bool:
        return self.cache.contains(key)

    async def put(self, key: str, stage: str, model: str, kind: str, payload: dict[str, Any]) -> None:
        self.cache.put(key, stage=stage, model=model, kind=kind, payload=payload)


class ClusterSlots:
    """``async with``-compatible stand-in for the client's semaphore. Leases are interchangeable, so one
    object serves all of a client's coroutines: each exit returns one of the leases taken."""

    def __init__(self, actor: Any):
        self.actor = actor
        self.leases: list[str] = []

    async def __aenter__(self) -> None:
        self.leases.append(await self.actor.acquire_slot.remote())

    async def __aexit__(self, *exc: object) -> None:
        await self.actor.release_slot.remote(self.leases.pop())


class ClusterBucket:
    """Stand-in for the client's TokenBucket."""

    def __init__(self, actor: Any, name: str):
        self.actor, self.name = actor, name

    async def acquire(self, amount: float = 1.0) -> None:
        await self.actor.take.remote(self.name, amount)

    def refund(self, amount: float) -> None:
        self.actor.refund.remote(self.name, amount)  # a correction: no need to wait for it


class ClusterBudget(Budget):
    """The client's Budget, decided by the actor (``reserve`` blocks briefly: the client calls it synchronously)."""

    def __init__(self, actor: Any, prices: dict[str, Price]):
        super().__init__(prices=prices)
        self.actor = actor

    def reserve(self, model: str, est_prompt: int, est_completion: int) -> float | None:
        return ray.get(self.actor.reserve.remote(model, est_prompt, est_completion))

    def settle(self, reserved: float, actual: float) -> None:
        self.actor.settle.remote(reserved, actual)


class ClusterCache:
    """ResponseCache's interface over the gate; ``put`` waits, so a paid answer is stored before use."""

    def __init__(self, actor: Any):
        self.actor = actor

    def get(self, key: str) -> tuple[str, dict[str, Any]] | None:
        return ray.get(self.actor.get.remote(key))

    def contains(self, key: str) -> bool:
        return ray.get(self.actor.contains.remote(key))

    def put(self, key: str, **record: Any) -> None:
        ray.get(self.actor.put.remote(key, **record))

    def close(self) -> None:
        pass  # the gate owns the connection


class ClusterVLM:
    """The gate of one stage run; picklable, so tasks receive it and build their clients' arguments.

    The gate is a named actor on the driver's node, one per endpoint, model, limits and cache file, kept
    for the driver's lifetime: later runs of the same driver reuse it (a fresh budget each) instead of
    paying an actor start-up again."""

    def __init__(self, settings: VLMSettings, max_requests: int | None = None, max_cost: float | None = None):
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        limits = (settings.base_url, settings.model, settings.concurrency, settings.rpm, settings.tpm,
                  settings.timeout_s, settings.cache)
        name = "medground-vlm-" + hashlib.sha256(repr(limits).encode()).hexdigest()[:16]
        self.gate = VLMGate.options(name=name, get_if_exists=True, scheduling_strategy=here).remote(
            settings.concurrency, settings.rpm, settings.tpm, settings.timeout_s + LEASE_MARGIN_S, settings.cache)
        ray.get(self.gate.begin.remote(max_requests, max_cost, settings.prices))
        self.prices = settings.prices
        self.tpm, self.rpm = bool(settings.tpm), bool(settings.rpm)

    def client_kwargs(self) -> dict[str, Any]:
        """``VLMClient(settings, **kwargs)`` inside a task: every limit and the cache go through the gate."""
        limits = (ClusterSlots(self.gate), ClusterBucket(self.gate, "rpm") if self.rpm else None,
                  ClusterBucket(self.gate, "tpm") if self.tpm else None)
        return {"cache": ClusterCache(self.gate), "budget": ClusterBudget(self.gate, self.prices),
                "limits": limits}

    def usage(self) -> dict[str, Any]:
        return ray.get(self.gate.usage.remote())
