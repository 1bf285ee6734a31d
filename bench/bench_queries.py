"""Query-stage throughput against a loopback OpenAI server with 50 ms latency (prints, never asserts).

Compares, as ratios: our client at concurrency 64 vs the ideal (64 / 0.05 s = 1280 requests/s) and vs a
sequential loop; and the whole query stage (images, prompts, validation, cache) at concurrency 64.
The server runs in its own process so it does not share our GIL.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder.queries import QueriesSettings, run_queries  # noqa: E402
from builder.vlm import VLMClient, VLMSettings  # noqa: E402
from tests.queries_helpers import make_candidates  # noqa: E402

LATENCY = 0.05
CONCURRENCY = 64


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "tests/loopback_openai.py", "--latency", str(LATENCY),
                             "--handler", "tests.queries_helpers:answer_queries"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT)})
    port = proc.stdout.readline().split()[1]
    return proc, f"http://127.0.0.1:{port}/v1"


def client_rate(base_url: str, cache: Path, concurrency: int, n: int) -> tuple[float, float]:
    """Requests per second for n distinct plain-text calls (each a cache miss, each stored), and our CPU
    milliseconds per request (the ceiling one process can reach is 1000 / that)."""
    settings = VLMSettings(model="bench", base_url=base_url, concurrency=concurrency, timeout_s=30,
                           cache=str(cache))

    async def go() -> tuple[float, float]:
        async with VLMClient(settings) as client:
            async def one(i: int) -> None:
                text = f"Target: the liver.\nWrite exactly four queries, request {i}"
                result = await client.complete(stage="bench", messages=[{"role": "user", "content": text}],
                                               prompt_version="bench")
                assert result.ok, result.failure
            await one(-1)  # warm the connection pool
            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(i) for i in range(n)))
            return n / (time.perf_counter() - started), (time.process_time() - cpu) * 1000 / n
    return asyncio.run(go())


def main() -> None:
    proc, base_url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            ideal = CONCURRENCY / LATENCY
            sequential, _ = client_rate(base_url, tmp / "seq.sqlite", 1, 40)
            concurrent, cpu_ms = client_rate(base_url, tmp / "conc.sqlite", CONCURRENCY, 1280)
            make_candidates(tmp / "cand", copies=71)  # 639 targets
            settings = QueriesSettings(vlm=VLMSettings(model="bench", base_url=base_url, concurrency=CONCURRENCY,
                                                       timeout_s=30, cache=str(tmp / "stage.sqlite")),
                                       progress=False)
            started = time.perf_counter()
            report = run_queries(tmp / "cand", tmp / "out", settings)
            stage = report.vlm["query"]["bench"]["calls"] / (time.perf_counter() - started)
            started = time.perf_counter()
            run_queries(tmp / "cand", tmp / "out2", settings)
            cached = report.targets / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait()
    print(f"loopback latency {LATENCY * 1000:.0f} ms, concurrency {CONCURRENCY}")
    print(f"{'':34}{'req/s':>10}{'vs ideal':>10}{'vs sequential':>15}")
    for name, rate in (("ideal (64 / 0.05 s)", ideal), ("sequential client", sequential),
                       (f"client, concurrency {CONCURRENCY}", concurrent),
                       (f"query stage, concurrency {CONCURRENCY}", stage)):
        print(f"{name:34}{rate:10.0f}{rate / ideal:10.2f}{rate / sequential:15.1f}")
    print(f"client CPU per request: {cpu_ms:.1f} ms, so one process tops out near {1000 / cpu_ms:.0f} req/s "
          f"on an idle core (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"query stage rerun, all cached: {cached:.0f} targets/s "
          f"({report.targets} targets, {report.queries} queries, {report.rejected} rejected)")


if __name__ == "__main__":
    main()
