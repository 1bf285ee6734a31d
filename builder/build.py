"""``python -m builder build``: candidates → queries → verification → dataset, into one Hub-ready folder.

Layout of ``--out``: ``README.md``, ``data/<config>/<split>-*.parquet``, ``assets/``, ``medground35k.py``,
``build.json`` (provenance) are the Hub repo; ``work/`` holds each stage's outputs and is what makes a
rerun resume: finished cases, cached VLM calls and verdicts are reused.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from builder.candidates import run_candidates
from builder.card import render_card
from builder.config import BuildConfig, load_config
from builder.executors import Executor, add_arguments as add_executor_arguments
from builder.dataset import DatasetSettings, sample_row, write_dataset
from builder.io import atomic_write_json, read_jsonl, to_json
from builder.phantom import ensure_phantom
from builder.queries import EXIT_PENDING, QueriesSettings, run_queries
from builder.records import Candidate, Query
from builder.vlm import Budget
from builder.splits import SplitSettings
from verification.pipeline import run_verification
from verification.settings import VerificationSettings

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REPO = "medground/medground-35k"
LIBRARIES = ("datasets", "huggingface_hub", "pyarrow", "numpy", "nibabel", "pillow", "scipy", "scikit-image",
             "openai", "jsonschema")
SECRET_WORDS = ("key", "token", "secret", "password")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def without_secrets(data: Any) -> Any:
    """The config as published: any key that names a secret is dropped (keys belong in the environment)."""
    if isinstance(data, dict):
        return {k: without_secrets(v) for k, v in data.items() if not any(w in k.lower() for w in SECRET_WORDS)
                or k.lower().endswith("_env")}
    if isinstance(data, list):
        return [without_secrets(v) for v in data]
    return data


def verification_struct(record: dict[str, Any]) -> dict[str, Any]:
    """The dataset's verification column from a verification record: kept, and each stage's outcome."""
    return {"kept": bool(record["passed"]),
            "stages": [{"stage": v["stage"], "passed": bool(v["passed"]), "reason": v.get("reason"),
                        "kind": v.get("kind") or "rule", "model": v.get("model"), "score": v.get("score")}
                       for v in record["stages"]]}


def kept_records(verified_dir: Path) -> list[tuple[Candidate, Query, dict[str, Any]]]:
    return [(Candidate.from_dict(r["candidate"]), Query.from_dict(r["query"]), verification_struct(r["verification"]))
            for r in read_jsonl(verified_dir / "verified.jsonl")]


def run_build(config: BuildConfig, out: Path, *, workers: int | None = None, progress: bool = True,
              repo: str = DEFAULT_REPO, queries_settings: QueriesSettings | None = None,
              executor: Executor | None = None) -> int:
    """Verification runs on the driver with either executor: its rule stages cost a small fraction of
    candidate extraction, and a single VLM judge client keeps its limits exact."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    phantom = ensure_phantom(config, work)
    demo = phantom is not None
    if demo:
        config.sources.append(phantom)
    candidates = run_candidates(config, work / "candidates", workers=workers, progress=progress, executor=executor)
    settings = queries_settings or QueriesSettings.from_config(config, progress=progress)
    # One budget for query synthesis and the visual judge: --max-requests / --max-cost cap the build.
    budget = Budget(settings.max_requests, settings.max_cost, settings.vlm.prices) if settings.vlm else None
    queries = run_queries(work / "candidates", work / "queries", settings, executor, budget=budget)
    if not queries.complete:
        log.warning("queries stopped at the budget with %d targets pending; rerun to finish", queries.pending)
        return EXIT_PENDING
    verification = run_verification(work / "queries", work / "verified",
                                    VerificationSettings.from_dict(config.section("verification")), vlm=settings.vlm,
                                    candidates_dir=work / "candidates", budget=budget)
    if verification.pending:
        log.warning("the judge stopped at the budget with %d samples pending; rerun to finish", verification.pending)
        return EXIT_PENDING
    records = kept_records(work / "verified")
    split_settings = SplitSettings.from_dict(config.section("splits"), config.seed)
    dataset = write_dataset(records, work / "candidates", out, DatasetSettings.from_dict(config.section("dataset")),
                            split_settings)
    generation = {
        "generator": queries.generator, "prompt_version": queries.prompt_version,
        "judge": f"{verification.judge['kind']} ({verification.judge['model'] or 'no model'})",
        "config": config.path.name if config.path else "command line",
        "config_digest": config.digest(), **{f"version: {k}": v for k, v in library_versions().items()},
    }
    rows = [sample_row(c, q, v) for c, q, v in records]
    pretty = config.section("dataset").get("pretty_name", "MedGround demo (synthetic phantom)" if demo else "MedGround-35K")
    render_card(out, dataset, rows, repo=repo, pretty_name=pretty, demo=demo,
                verification_markdown=(work / "verified" / "report.md").read_text(encoding="utf-8"),
                generation=generation, split_ratios=split_settings.ratios)
    shutil.copyfile(ROOT / "medground35k.py", out / "medground35k.py")
    atomic_write_json(out / "build.json", {
        "config": without_secrets(config.raw), "config_digest": config.digest(), "demo": demo,
        "versions": library_versions(), "candidates": candidates,
        "queries": {k: v for k, v in queries.to_dict().items() if k != "elapsed_s"},  # same build, same bytes
        "verification": verification.to_dict(), "dataset": dataset.__dict__,
    })
    summary = {"cases": candidates["cases"], "case_errors": candidates["errors"], "targets": candidates["targets"],
               "queries": queries.queries, "kept": len(records), "configs": dataset.configs}
    print(to_json(summary))
    if not records:
        return 1
    return 2 if candidates["errors"] or queries.rejected else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build", help="the whole pipeline into a Hub-ready dataset folder")
    p.add_argument("--config", type=Path, required=True, help="TOML build config (configs/demo.toml, …)")
    p.add_argument("--out", type=Path, required=True, help="output folder (Hub repo layout + work/)")
    p.add_argument("--workers", type=int, help="worker processes for per-case stages (default: all cores)")
    p.add_argument("--repo", default=DEFAULT_REPO, help="Hub repo id named in the card")
    p.add_argument("--max-requests", type=int, help="stop cleanly after this many VLM requests (queries and judge together); rerun to finish")
    add_executor_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    return run_build(config, args.out, workers=args.workers, repo=args.repo,
                     queries_settings=QueriesSettings.from_config(config, max_requests=args.max_requests),
                     executor=Executor.from_options(config, args.executor, args.ray_address))
