"""``python -m builder verify --queries DIR --out DIR [--config FILE] [--candidates DIR]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from builder.config import load_config
from builder.vlm import VLMSettings
from verification.pipeline import run_verification
from verification.settings import VerificationSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("verify", help="verify generated queries (format, geometry, priors, ambiguity, judge)")
    p.add_argument("--queries", required=True, type=Path, help="folder with queries.jsonl (and manifest.json)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--config", type=Path, help="build config (TOML) with [verification] and [vlm] sections")
    p.add_argument("--candidates", type=Path, help="candidates folder (default: from the queries' manifest.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    settings = VerificationSettings.from_dict(config.section("verification"))
    vlm_section = config.section("vlm")
    base = config.path.resolve().parent if config.path else None
    vlm = VLMSettings.from_section(vlm_section, base) if vlm_section.get("model") else None
    report = run_verification(args.queries, args.out, settings, vlm=vlm, candidates_dir=args.candidates)
    summary = report.to_dict()
    print(json.dumps({k: summary[k] for k in ("total", "passed", "rejected", "by_reason", "judge")}, indent=2),
          file=sys.stdout)
    return 0
