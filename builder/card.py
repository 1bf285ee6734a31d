"""Render ``dataset_card.md`` into the Hub repo's ``README.md``: YAML header (licence, tasks, configs with
data_files, dataset_info) plus prose with the build's own numbers, and two small charts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from datasets import DatasetInfo, Image as ImageFeature, List, SplitDict, SplitInfo, Value
from PIL import Image, ImageDraw

from builder.dataset import DatasetReport
from builder.licenses import license_status
from builder.schema import FEATURES, FIELD_DOCS
from builder.splits import SPLITS

TEMPLATE = Path(__file__).resolve().parents[1] / "dataset_card.md"
TASKS = ["object-detection", "image-segmentation", "image-text-to-text"]
TAGS = ["medical", "grounding", "referring-expression-comprehension", "visual-grounding", "segmentation",
        "vision-language"]


def size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M"


HUB_LICENSES = ("cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0",
                "apache-2.0", "mit", "bsd-3-clause", "gpl-2.0", "odc-by", "pddl")


def hub_license_id(text: str) -> str | None:
    """The Hub's licence id for a plainly named licence ('CC-BY-SA 4.0' -> 'cc-by-sa-4.0'), else None."""
    slug = "-".join(text.lower().replace("_", " ").replace("-", " ").split())
    return slug if slug in HUB_LICENSES else None


def yaml_header(report: DatasetReport, pretty_name: str, licenses: set[str]) -> dict[str, Any]:
    configs, infos = [], []
    for name, splits in report.configs.items():
        entry: dict[str, Any] = {"config_name": name,
                                 "data_files": [{"split": s, "path": f"data/{name}/{s}-*"} for s in SPLITS if s in splits]}
        if name == "default":
            entry["default"] = True
        configs.append(entry)
        split_dict = SplitDict()
        for s in SPLITS:
            if s in splits:
                split_dict.add(SplitInfo(name=s, num_bytes=report.bytes[name][s], num_examples=splits[s]))
        info = DatasetInfo(features=FEATURES, splits=split_dict)
        infos.append({"config_name": name, **info._to_yaml_dict()})
    total = sum(report.configs.get("default", {}).values())
    single = hub_license_id(next(iter(licenses))) if len(licenses) == 1 else None
    licence_fields = {"license": single} if single else {
        "license": "other", "license_name": "mixed-per-source",
        "license_details": "Each sample carries its source's licence in the `license` column; see the card."}
    return {
        "pretty_name": pretty_name,
        **licence_fields,
        "task_categories": TASKS,
        "tags": TAGS,
        "size_categories": [size_category(total)],
        "configs": configs,
        "dataset_info": infos,
    }


def type_name(feature: Any) -> str:
    """A reader's name for a feature type: string, int32, image (PNG), list<float32>[4], struct."""
    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, ImageFeature):
        return "image (PNG)"
    if isinstance(feature, List):
        length = f"[{feature.length}]" if feature.length and feature.length > 0 else ""
        return f"list<{type_name(feature.feature)}>{length}"
    return "struct"


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bar_chart(path: Path, title: str, counts: dict[str, int]) -> None:
    """A plain horizontal bar chart (Pillow only), deterministic bytes."""
    items = list(counts.items())
    width, bar_h, left = 640, 22, 200
    height = 40 + bar_h * max(1, len(items))
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), title, fill="black")
    top = max(counts.values(), default=1) or 1
    for i, (name, value) in enumerate(items):
        y = 34 + i * bar_h
        draw.text((10, y + 4), str(name)[:28], fill="black")
        draw.rectangle([left, y + 2, left + int((width - left - 70) * value / top), y + bar_h - 4], fill="#3b6ea8")
        draw.text((left + int((width - left - 70) * value / top) + 6, y + 4), str(value), fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")


def box_size_bins(rows: list[dict[str, Any]]) -> dict[str, int]:
    bins = Counter()
    for r in rows:
        x0, y0, x1, y1 = r["bbox"]
        share = (x1 - x0) * (y1 - y0) / float(r["width"] * r["height"])
        label = "<1%" if share < 0.01 else "1–5%" if share < 0.05 else "5–20%" if share < 0.2 else "≥20%"
        bins[label] += 1
    return {k: bins.get(k, 0) for k in ("<1%", "1–5%", "5–20%", "≥20%")}


def body_of(markdown: str) -> str:
    """A Markdown report without its own top heading (the card supplies the section heading)."""
    lines = markdown.strip().splitlines()
    if lines and lines[0].startswith("#"):
        lines = lines[1:]
    return "\n".join(lines).strip()


def render_card(out_dir: Path, report: DatasetReport, rows: list[dict[str, Any]], *, repo: str, pretty_name: str,
                demo: bool, verification_markdown: str, generation: dict[str, Any],
                split_ratios: tuple[float, float, float]) -> str:
    """Write README.md and assets/*.png into ``out_dir``; returns the README text."""
    by_source: dict[str, Counter] = {}
    licences: dict[str, str] = {}
    for r in rows:
        by_source.setdefault(r["source"], Counter())[r["modality"]] += 1
        licences[r["source"]] = r["license"]
    source_rows = [[s, ", ".join(sorted(m)), sum(m.values()), licences[s], license_status(licences[s])]
                   for s, m in sorted(by_source.items())]
    config_rows = [[f"`{name}`"] + [splits.get(s, 0) for s in SPLITS] for name, splits in report.configs.items()]
    field_rows = [[f"`{name}`", type_name(FEATURES[name]), FIELD_DOCS.get(name, "")] for name in FEATURES]
    gen_rows = [[k, f"`{v}`"] for k, v in generation.items()]
    modality_counts = dict(sorted(Counter(r["modality"] for r in rows).items()))
    assets = out_dir / "assets"
    bar_chart(assets / "samples_per_modality.png", "Samples per modality (default config)", modality_counts)
    bar_chart(assets / "box_sizes.png", "Box area as a share of the image", box_size_bins(rows))
    context = {
        "pretty_name": pretty_name,
        "repo": repo,
        "demo_notice": ("> **Demo data.** This build comes from MedGround's synthetic digital phantom, not from "
                        "patients; it exists to show the format and the pipeline.\n\n") if demo else "",
        "configs_table": table(["config"] + list(SPLITS), config_rows)
        + "\n\n![samples per modality](assets/samples_per_modality.png)\n![box sizes](assets/box_sizes.png)",
        "split_ratios": "train/validation/test = " + "/".join(f"{r:g}" for r in split_ratios),
        "fields_table": table(["field", "type", "meaning"], field_rows),
        "sources_table": table(["source", "modality", "samples", "licence", "status"], source_rows),
        "verification_report": body_of(verification_markdown) or "No verification report.",
        "generation": table(["setting", "value"], gen_rows),
        "extra_limitations": "- This is synthetic demo data: anatomy is simplified and no finding is real.\n" if demo else "",
    }
    text = TEMPLATE.read_text(encoding="utf-8")
    for key, value in context.items():
        text = text.replace("{{" + key + "}}", str(value))
    header = yaml_header(report, pretty_name, set(licences.values()))
    readme = "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n\n" + text
    (out_dir / "README.md").write_text(readme, encoding="utf-8")
    return readme
