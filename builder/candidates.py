"""The candidates stage: sources → cases → slices → targets with cues, written for the later stages.

Output folder:
  images/<slice_id>.png, masks/<target_id>.png   lossless PNG (masks 0/255)
  candidates.jsonl                               one ``Candidate`` per line, in source and case order
  errors.jsonl                                   one ``ErrorRecord`` per line
  report.json                                    counts of cases, slices, targets, errors and skips by reason
  cases/<source>/<case>.json                     per-case results: a rerun reuses them (resume)

Cases are processed in parallel worker processes; each worker loads one case at a time, so memory
follows the largest case, not the data set.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from builder.config import BuildConfig, load_config, reject_unknown
from builder.cues import CueSettings, compute_cues, cues_to_dict, slice_context
from builder.executors import Executor, add_arguments as add_executor_arguments
from builder.io import atomic_write_bytes, atomic_write_json, png_bytes, read_jsonl, to_json, write_jsonl
from builder.phantom import ensure_phantom
from builder.records import Candidate, CaseError, CaseRef, ErrorRecord, Slice, Target, safe_name
from builder.slicing import SliceSettings, slices_of
from builder.sources import adapter_for
from builder.targets import TargetSettings, slice_targets

log = logging.getLogger(__name__)
RESULT_VERSION = 1  # bump when the per-case result format or the extraction changes meaning


@dataclass(frozen=True)
class CandidateSettings:
    slicing: SliceSettings = SliceSettings()
    targets: TargetSettings = TargetSettings()
    cues: CueSettings = CueSettings()

    @classmethod
    def from_config(cls, config: BuildConfig) -> CandidateSettings:
        section = config.section("candidates")
        reject_unknown("candidates", section, SliceSettings.__dataclass_fields__,
                       TargetSettings.__dataclass_fields__, {"cues"})
        reject_unknown("candidates.cues", section.get("cues", {}), CueSettings.__dataclass_fields__)
        return cls(SliceSettings.from_dict(section), TargetSettings.from_dict(section),
                   CueSettings.from_dict(section.get("cues", {})))

    def digest(self) -> str:
        return hashlib.sha256(repr((RESULT_VERSION, asdict(self))).encode()).hexdigest()[:16]


@dataclass
class CaseResult:
    """Everything one case produced, small enough to send between processes."""

    source: str
    case_id: str
    candidates: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, bytes] = field(default_factory=dict)  # relative path -> PNG
    errors: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    slices: int = 0


def candidate_record(target: Target, image_path: str, mask_path: str, labels_in_slice: list[str]) -> Candidate:
    s, case = target.slice, target.slice.case
    return Candidate(
        target_id=target.target_id, slice_id=s.slice_id, source=case.source, case_id=case.case_id,
        patient_id=case.patient_id, split=case.split, plane=s.plane, slice_index=s.index, label=target.label,
        label_id=target.label_id, instance=target.instance, group_size=target.group_size, bbox=list(target.bbox),
        area=target.area, width=s.width, height=s.height, modality=case.modality, body_region=case.body_region,
        license=case.license, orientation=case.orientation, directions=list(s.directions) if s.directions else None,
        image=image_path, mask=mask_path, cues=cues_to_dict(target.cues), files=list(case.files),
        labels_in_slice=labels_in_slice)


def slice_candidates(slice_: Slice, settings: CandidateSettings, result: CaseResult, skipped: Counter) -> None:
    groups = slice_targets(slice_, settings.targets, skipped)
    if not groups:
        return
    image_path = f"images/{slice_.slice_id}.png"
    result.images[image_path] = png_bytes(slice_.image)
    context = slice_context(slice_)
    present = [slice_.case.label_names[i] for i in sorted(context.boxes) if i in slice_.case.label_names]
    for group in groups.values():
        compute_cues(group, settings.cues, context)
        for target in group:
            mask_path = f"masks/{target.target_id}.png"
            result.images[mask_path] = png_bytes(target.mask)
            result.candidates.append(candidate_record(target, image_path, mask_path, present).to_dict())


def process_case(ref: CaseRef, settings: CandidateSettings) -> CaseResult:
    """Load one case and extract its candidates; a bad case becomes an error, never an exception."""
    result = CaseResult(ref.source.name, ref.case_id)
    skipped: Counter = Counter()
    try:
        case = adapter_for(ref.source).load(ref)
        for slice_ in slices_of(case, settings.slicing):
            result.slices += 1
            slice_candidates(slice_, settings, result, skipped)
    except CaseError as exc:
        result.errors.append(ErrorRecord(exc.file, "source", exc.reason, exc.message, ref.source.name,
                                         ref.case_id).to_dict())
        result.candidates, result.images = [], {}
    except Exception as exc:  # an unforeseen failure in one case must not stop the run
        log.exception("case %s/%s failed", ref.source.name, ref.case_id)
        result.errors.append(ErrorRecord(ref.files[0] if ref.files else ref.case_id, "candidates", "internal_error",
                                         f"{type(exc).__name__}: {exc}", ref.source.name, ref.case_id).to_dict())
        result.candidates, result.images = [], {}
    result.skipped = dict(skipped)
    return result


def _case_key(ref: CaseRef, settings_digest: str) -> str:
    """Identifies a case's inputs and settings: a rerun reuses a result only when this matches."""
    stats = []
    for f in ref.files:
        try:
            st = os.stat(f)
            stats.append((f, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((f, None, None))
    blob = repr((settings_digest, ref.source, ref.case_id, ref.index, stats))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class _Job:
    """Picklable callable for the worker pool."""

    def __init__(self, settings: CandidateSettings):
        self.settings = settings

    def __call__(self, ref: CaseRef) -> CaseResult:
        return process_case(ref, self.settings)


def iter_refs(config: BuildConfig, errors: list[dict]) -> Iterator[CaseRef]:
    for spec in config.sources:
        try:
            adapter = adapter_for(spec)
        except ValueError as exc:
            errors.append(ErrorRecord(spec.path, "source", "unknown_format", str(exc), spec.name).to_dict())
            continue
        for item in adapter.refs():
            if isinstance(item, ErrorRecord):
                errors.append(item.to_dict())
            else:
                yield item


def _parallel_map(job: _Job, refs: Iterable[CaseRef], workers: int) -> Iterator[CaseResult]:
    if workers <= 1:
        yield from map(job, refs)
        return
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(job, refs, chunksize=1)


def default_workers(config: BuildConfig) -> int:
    return int(config.section("build").get("workers", 0)) or (os.cpu_count() or 1)


def run_candidates(config: BuildConfig, out_dir: Path | str, *, workers: int | None = None,
                   progress: bool = True, executor: Executor | None = None) -> dict[str, Any]:
    """Extract candidates for every source of the config into ``out_dir``; returns the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = CandidateSettings.from_config(config)
    digest = settings.digest()
    source_errors: list[dict] = []
    refs = list(iter_refs(config, source_errors))
    pending, done = [], {}
    for ref in refs:
        path = out / "cases" / safe_name(ref.source.name) / f"{safe_name(ref.case_id)}.json"
        key = _case_key(ref, digest)
        if path.is_file():
            cached = next(read_jsonl(path), None)
            if cached and cached.get("key") == key:
                done[(ref.source.name, ref.case_id)] = cached
                continue
        pending.append((ref, path, key))
    workers = workers or default_workers(config)
    bar = tqdm(total=len(refs), initial=len(done), desc="candidates", unit="case", disable=not progress or None)
    job = _Job(settings)
    targets_total = sum(len(c["candidates"]) for c in done.values())
    refs_to_run = [p[0] for p in pending]
    results = (executor.ray().ordered_map(job, refs_to_run) if executor and executor.is_ray
               else _parallel_map(job, refs_to_run, min(workers, max(1, len(pending)))))
    for (ref, path, key), result in zip(pending, results):
        for rel, data in result.images.items():
            atomic_write_bytes(out / rel, data)
        record = {"key": key, "source": result.source, "case_id": result.case_id, "slices": result.slices,
                  "candidates": result.candidates, "errors": result.errors, "skipped": result.skipped}
        if not any(e["reason"] == "internal_error" for e in result.errors):  # may be passing: retry next run
            write_jsonl(path, [record])  # written after its PNGs: a present result means a complete case
        done[(ref.source.name, ref.case_id)] = record
        targets_total += len(result.candidates)
        bar.update(1)
        bar.set_postfix(targets=targets_total, errors=len(source_errors) + sum(len(r["errors"]) for r in done.values()))
    bar.close()
    ordered = [done[(ref.source.name, ref.case_id)] for ref in refs]
    report = write_outputs(out, config, ordered, source_errors, len(refs))
    return report


def write_outputs(out: Path, config: BuildConfig, results: list[dict], source_errors: list[dict],
                  n_refs: int) -> dict[str, Any]:
    errors = source_errors + [e for r in results for e in r["errors"]]
    write_jsonl(out / "candidates.jsonl", (c for r in results for c in r["candidates"]))
    write_jsonl(out / "errors.jsonl", errors)
    by_source: dict[str, Counter] = {}
    skipped: Counter = Counter()
    labels: Counter = Counter()
    for r in results:
        counts = by_source.setdefault(r["source"], Counter())
        counts["cases"] += 1
        counts["cases_failed"] += bool(r["errors"])
        counts["slices"] += r["slices"]
        counts["targets"] += len(r["candidates"])
        skipped.update(r["skipped"])
        labels.update(f"{c['source']}/{c['label']}" for c in r["candidates"])
    for e in source_errors:
        by_source.setdefault(e["source"] or "?", Counter())["source_errors"] += 1
    report = {
        "cases": n_refs,
        "cases_failed": sum(bool(r["errors"]) for r in results),
        "slices": sum(r["slices"] for r in results),
        "targets": sum(len(r["candidates"]) for r in results),
        "errors": len(errors),
        "errors_by_reason": dict(Counter(e["reason"] for e in errors)),
        "skipped_by_reason": dict(skipped),
        "by_source": {k: dict(v) for k, v in by_source.items()},
        "targets_by_label": dict(sorted(labels.items())),
        "config_digest": config.digest(),
    }
    atomic_write_json(out / "report.json", report)
    return report


def read_candidates(folder: Path | str) -> Iterator[Candidate]:
    for row in read_jsonl(Path(folder) / "candidates.jsonl"):
        yield Candidate.from_dict(row)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("candidates", help="extract grounding targets with cues from segmentation sources")
    p.add_argument("--config", type=Path, help="TOML build config with [[sources]]")
    p.add_argument("--source", action="append", default=[], metavar="FORMAT:PATH",
                   help="add a source (msd, nnunet, folder2d, samed2d, medsegbench); repeatable")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--workers", type=int, help="worker processes (default: [build].workers or all cores)")
    add_executor_arguments(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if not args.config and not args.source:
        raise SystemExit("candidates: give --config FILE or --source FORMAT:PATH")
    config = load_config(args.config, args.source)
    if (phantom := ensure_phantom(config, args.out)) is not None:
        config.sources.append(phantom)
    report = run_candidates(config, args.out, workers=args.workers,
                            executor=Executor.from_options(config, args.executor, args.ray_address))
    print(to_json({k: report[k] for k in ("cases", "cases_failed", "slices", "targets", "errors",
                                          "errors_by_reason", "skipped_by_reason")}))
    return exit_status(report)


def exit_status(report: dict[str, Any]) -> int:
    """0: clean; 1: nothing produced; 2: produced, but some cases or sources failed (see errors.jsonl)."""
    if not report["targets"]:
        return 1
    return 2 if report["errors"] else 0
