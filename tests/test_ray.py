"""The build on a local Ray instance (2 CPUs, started once for the module): byte-identical shards to a local
build, a budget cap and a concurrency limit that hold across the cluster, a capped build that reruns
without repeating a paid call, and a local build that never imports ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install '.[ray]' or make setup-ray)")

import builder  # noqa: E402
import verification  # noqa: E402
from builder.build import run_build  # noqa: E402
from builder.config import load_config  # noqa: E402
from builder.executors import Executor  # noqa: E402
from builder.queries import EXIT_PENDING, QueriesSettings  # noqa: E402
from tests.conftest import FIXTURES, FIXTURES_TOML, ROOT, needs_fixtures  # noqa: E402
from tests.loopback_openai import LoopbackOpenAI  # noqa: E402
from tests.queries_helpers import answer_queries  # noqa: E402

CONCURRENCY = 2
# A local build in a fresh interpreter; prints whether it imported ray.
LOCAL_BUILD = """
import sys
from builder.cli import main
code = main(["build", "--config", sys.argv[1], "--out", sys.argv[2], "--executor", "local"])
print("RAY_IMPORTED" if "ray" in sys.modules else "NO_RAY", code)
"""


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"py_modules": [builder, verification]})
    yield
    ray.shutdown()


def shards(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "data").rglob("*.parquet"))}


def local_build(config: Path, out: Path) -> int:
    """Build with the local executor in a subprocess; asserts ray stayed out of it."""
    proc = subprocess.run([sys.executable, "-c", LOCAL_BUILD, str(config), str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    verdict, _, code = proc.stdout.strip().splitlines()[-1].partition(" ")
    assert verdict == "NO_RAY", proc.stdout[-2000:] + proc.stderr[-2000:]
    return int(code)


def ray_build(config: Path, out: Path, **queries: object) -> int:
    cfg = load_config(config)
    settings = QueriesSettings.from_config(cfg, progress=False, **queries)
    return run_build(cfg, out, progress=False, queries_settings=settings, executor=Executor("ray"))


@needs_fixtures
def test_fixture_build_on_ray_gives_the_local_shards_byte_for_byte(cluster, tmp_path):
    assert local_build(FIXTURES_TOML, tmp_path / "local") in (0, 2)
    assert ray_build(FIXTURES_TOML, tmp_path / "ray") in (0, 2)
    local, on_ray = shards(tmp_path / "local"), shards(tmp_path / "ray")
    assert len(local) >= 4 and on_ray == local
    report = json.loads((tmp_path / "ray" / "work" / "candidates" / "report.json").read_text())
    assert report["cases"] == 17 and report["targets"] > 0


def vlm_config(tmp_path: Path, server: LoopbackOpenAI, cache: Path) -> Path:
    """The fixtures' 2D sources, queries by the loopback VLM; the judge is the model-free evidence check."""
    sources = "\n".join(
        f'[[sources]]\nname = "{name}"\nformat = "{fmt}"\npath = "{FIXTURES / path}"\n{extra}\n'
        for name, fmt, path, extra in [
            ("sam_med2d", "samed2d", "sam_med2d/data_demo", 'modality = "CT"\nlicense = "CC-BY-4.0"'),
            ("kvasir_seg", "folder2d", "kvasir_seg", 'modality = "endoscopy"\nbody_region = "colon"\n'
                                                    'license = "Kvasir-SEG terms"\nlabels = { 1 = "polyp" }')])
    path = tmp_path / f"vlm-{cache.stem}.toml"
    path.write_text(f"""[build]
seed = 0
workers = 2
[vlm]
model = "loop-vlm"
base_url = "{server.base_url}"
cache = "{cache}"
concurrency = {CONCURRENCY}
timeout_s = 5
backoff_base_s = 0.01
backoff_max_s = 0.05
[verification.judge]
mode = "evidence"
{sources}""")
    return path


@needs_fixtures
def test_capped_ray_build_reruns_without_repeating_a_paid_call(cluster, tmp_path):
    with LoopbackOpenAI(handler=answer_queries, latency=0.03) as server:
        config = vlm_config(tmp_path, server, tmp_path / "ray.sqlite")
        assert ray_build(config, tmp_path / "ray", max_requests=5) == EXIT_PENDING
        assert server.count == 5  # one budget for the cluster: per-worker budgets would allow 5 per task
        assert not (tmp_path / "ray" / "data").exists()
        paid = server.keys(status=200)
        assert len(paid) == 5
        server.reset()

        assert ray_build(config, tmp_path / "ray") in (0, 2)
        assert server.count > 0 and not (server.keys() & paid), "a successful call was paid twice"
        assert server.max_in_flight <= CONCURRENCY  # the limit holds across both workers
        queries = json.loads((tmp_path / "ray" / "build.json").read_text())["queries"]
        assert queries["complete"] and queries["vlm"]["query"]["loop-vlm"]["cache_hits"] >= 5

        local = vlm_config(tmp_path, server, tmp_path / "local.sqlite")
        assert local_build(local, tmp_path / "local") in (0, 2)
    assert shards(tmp_path / "ray") == shards(tmp_path / "local")
    assert len(shards(tmp_path / "ray")) >= 2
