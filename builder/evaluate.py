"""``python -m builder eval``: score a VLM's referring grounding on a MedGround split.

Each sample's image (as a data URL) and query go to any OpenAI-compatible endpoint through the shared
VLM client (concurrency, retries, response cache, budget), so an interrupted eval resumes for free. The
answer is parsed by the model family's box convention (``--format``), converted to pixel boxes of the
stored image, and scored by IoU against the ground-truth box: Acc@IoU≥0.5, Acc@IoU≥0.3 and mean IoU,
overall and per modality, source and query type. Unparseable or failed answers are misses (IoU 0) and
are listed, so a model is never flattered by dropping what it got wrong.

Box conventions parsed (``--format``):
- ``json``: ``{"bbox": [x1, y1, x2, y2]}`` in pixels of the image as sent;
- ``qwen25``: Qwen2.5-VL's ``[{"bbox_2d": [x1, y1, x2, y2], ...}]``, absolute pixels of the image *as the
  model saw it* after its ``smart_resize`` (sides rounded to multiples of 28), scaled back here;
- ``qwen_1000``: Qwen-VL's ``<box>(x1,y1),(x2,y2)</box>`` (or ``<|box_start|>…<|box_end|>``), 0–1000;
- ``internvl``: InternVL's ``[[x1, y1, x2, y2]]``, 0–1000;
- ``plain``: the first four numbers of the answer, pixels.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from builder.io import atomic_write_json, write_jsonl
from builder.vlm import Budget, VLMClient, VLMSettings, parse_json_answer
from builder.vlm.client import DEFAULT_CACHE

log = logging.getLogger(__name__)

STAGE = "eval"
FORMATS = ("json", "qwen25", "qwen_1000", "internvl", "plain")
THRESHOLDS = (0.5, 0.3)
GROUPS = ("modality", "source", "query_type")
EVAL_VERSION = "eval-v1"
_NUM = r"[-+]?\d+(?:\.\d+)?"

PROMPTS = {
    "json": ("Locate the region described by this query in the image: \"{query}\".\n"
             "The image is {width} pixels wide and {height} pixels high. Answer with only a JSON object "
             "{{\"bbox\": [x1, y1, x2, y2]}} giving the box's top-left and bottom-right corners in pixels."),
    "qwen25": "Locate \"{query}\" in the image and output its bbox coordinates in JSON format.",
    "qwen_1000": "Generate the bounding box of <ref>{query}</ref>",
    "internvl": "Please provide the bounding box coordinate of the region this sentence describes: <ref>{query}</ref>",
    "plain": ("Locate \"{query}\" in the image ({width}x{height} pixels). Answer with four numbers only: "
              "x1 y1 x2 y2, the box's corners in pixels."),
}


class ParseError(ValueError):
    """The answer holds no box in the declared format."""


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 28 * 28 * 16384) -> tuple[int, int]:
    """The (height, width) Qwen2.5-VL's processor resizes an image to; its boxes are in that frame."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _four(values: Iterable[Any]) -> list[float]:
    if not isinstance(values, (list, tuple)):
        raise ParseError(f"expected a list of four numbers, got {values!r}")
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ParseError(f"not numbers: {values!r}") from exc
    if len(out) != 4 or not all(math.isfinite(v) for v in out):
        raise ParseError(f"expected four finite numbers, got {out}")
    return out


def _json_anywhere(text: str) -> Any:
    """The answer as JSON: whole, fenced, or the first {...} / [...] inside prose."""
    try:
        return parse_json_answer(text)
    except json.JSONDecodeError:
        pass
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            try:
                return json.loads(text[start:end + 1])
            except json.JSONDecodeError:
                continue
    raise ParseError("no JSON in the answer")


def _find_key(data: Any, key: str) -> Any:
    """The first value under ``key`` in nested dicts/lists (a list of detections: the first one)."""
    if isinstance(data, dict):
        if key in data:
            return data[key]
        data = list(data.values())
    if isinstance(data, list):
        for value in data:
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def parse_box(text: str | None, fmt: str, width: int, height: int) -> list[float]:
    """The answer's box as ``[x1, y1, x2, y2]`` in pixels of the stored image (corners ordered, clipped)."""
    if not text or not text.strip():
        raise ParseError("empty answer")
    if fmt == "json":
        data = _json_anywhere(text)
        box = _find_key(data, "bbox") if not (isinstance(data, list) and len(data) == 4) else data
        if box is None:
            raise ParseError("no 'bbox' key in the JSON answer")
        box = _four(box)
    elif fmt == "qwen25":
        try:
            box = _find_key(_json_anywhere(text), "bbox_2d")
        except ParseError:
            box = None
        if box is None:
            match = re.search(r'"?bbox_2d"?\s*:\s*\[([^\]]*)\]', text)
            if not match:
                raise ParseError("no bbox_2d in the answer")
            box = re.findall(_NUM, match.group(1))
        rh, rw = smart_resize(height, width)
        x1, y1, x2, y2 = _four(box)
        box = [x1 * width / rw, y1 * height / rh, x2 * width / rw, y2 * height / rh]
    elif fmt in ("qwen_1000", "internvl"):
        if fmt == "qwen_1000":
            match = re.search(rf"(?:<box>|<\|box_start\|>)\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*"
                              rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)", text)
        else:
            match = re.search(rf"\[\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]", text)
        if not match:
            raise ParseError(f"no {'<box>(x1,y1),(x2,y2)</box>' if fmt == 'qwen_1000' else '[[x1,y1,x2,y2]]'} box")
        x1, y1, x2, y2 = _four(match.groups())
        box = [x1 / 1000 * width, y1 / 1000 * height, x2 / 1000 * width, y2 / 1000 * height]
    elif fmt == "plain":
        numbers = re.findall(_NUM, text)
        if len(numbers) < 4:
            raise ParseError(f"found {len(numbers)} numbers, need four")
        box = _four(numbers[:4])
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    x1, y1, x2, y2 = box
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    return [x1, y1, x2, y2]


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two pixel-edge boxes ``[x1, y1, x2, y2]`` (no +1: edges, not pixel indices)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def data_url(image: bytes) -> str:
    mime = "image/png" if image[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg" if image[:2] == b"\xff\xd8" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def build_messages(query: str, image: bytes, width: int, height: int, fmt: str) -> list[dict[str, Any]]:
    prompt = PROMPTS[fmt].format(query=query, width=width, height=height)
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(image)}},
                                         {"type": "text", "text": prompt}]}]


def load_split(data: str, config: str, split: str, limit: int | None = None):
    """The split as a ``datasets.Dataset`` with images left as bytes: a build folder (with or without its
    card) or a Hub repo id."""
    import datasets

    path = Path(data)
    if path.is_dir() and not (path / "README.md").is_file():
        files = sorted(str(p) for p in (path / "data" / config).glob(f"{split}-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{path}/data/{config}/{split}-*.parquet: no shards")
        ds = datasets.load_dataset("parquet", data_files={split: files}, split=split)
    else:
        ds = datasets.load_dataset(data, config, split=split)
    ds = ds.cast_column("image", datasets.Image(decode=False))
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return ds


@dataclass
class EvalSettings:
    fmt: str = "json"
    max_requests: int | None = None
    max_cost: float | None = None
    max_tokens: int = 128


async def _predict(rows: Any, vlm: VLMSettings, settings: EvalSettings) -> tuple[list[dict], dict]:
    """One prediction per row (a ``Dataset`` or list), in row order, ``concurrency`` requests at a time."""
    budget = Budget(settings.max_requests, settings.max_cost, vlm.prices)
    predictions: list[dict[str, Any] | None] = [None] * len(rows)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(rows)):
        queue.put_nowait(i)
    async with VLMClient(vlm, budget=budget) as client:
        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                predictions[i] = await _one(client, rows[i], settings)

        await asyncio.gather(*(worker() for _ in range(min(vlm.concurrency, max(1, len(rows))))))
        stats = client.totals().to_dict()
        client.cache.close()
    return [p for p in predictions if p is not None], stats


async def _one(client: VLMClient, row: dict[str, Any], settings: EvalSettings) -> dict[str, Any]:
    width, height, truth = int(row["width"]), int(row["height"]), [float(v) for v in row["bbox"]]
    out = {"id": row["id"], "query": row["query"], "query_type": row["query_type"], "source": row["source"],
           "modality": row["modality"], "width": width, "height": height, "bbox": truth,
           "pred_bbox": None, "iou": 0.0, "answer": None, "error": None}
    result = await client.complete(stage=STAGE, messages=build_messages(row["query"], row["image"]["bytes"], width,
                                                                        height, settings.fmt),
                                   prompt_version=f"{EVAL_VERSION}:{settings.fmt}", temperature=0.0,
                                   max_tokens=settings.max_tokens)
    out["answer"] = result.text
    if result.failure is not None:
        out["error"] = f"{result.failure.reason}: {result.failure.message}"
        return out
    try:
        pred = parse_box(result.text, settings.fmt, width, height)
    except ParseError as exc:
        out["error"] = f"unparseable: {exc}"
        return out
    out["pred_bbox"] = [round(v, 3) for v in pred]
    out["iou"] = round(iou(pred, truth), 6)
    return out


def summarize(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """Acc@IoU thresholds, mean IoU and miss counts for a list of predictions."""
    n = len(predictions)
    out: dict[str, Any] = {"n": n}
    for t in THRESHOLDS:
        out[f"acc@{t}"] = round(sum(p["iou"] >= t for p in predictions) / n, 6) if n else 0.0
    out["miou"] = round(sum(p["iou"] for p in predictions) / n, 6) if n else 0.0
    out["unparsed"] = sum(p["error"] is not None for p in predictions)
    return out


def metrics(predictions: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, dict[str, list]] = {g: defaultdict(list) for g in GROUPS}
    for p in predictions:
        for g in GROUPS:
            groups[g][str(p[g])].append(p)
    return {"overall": summarize(predictions),
            **{f"by_{g}": {k: summarize(v) for k, v in sorted(groups[g].items())} for g in GROUPS},
            "misses_unparsed": [{"id": p["id"], "error": p["error"], "answer": p["answer"]}
                                for p in predictions if p["error"] is not None]}


def markdown(result: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", "| group | value | n | Acc@0.5 | Acc@0.3 | mIoU | unparsed |",
             "|---|---|---:|---:|---:|---:|---:|"]

    def row(group: str, value: str, m: dict[str, Any]) -> None:
        lines.append(f"| {group} | {value} | {m['n']} | {m['acc@0.5']:.3f} | {m['acc@0.3']:.3f} | "
                     f"{m['miou']:.3f} | {m['unparsed']} |")

    row("overall", "all", result["overall"])
    for g in GROUPS:
        for value, m in result[f"by_{g}"].items():
            row(g, value.replace("|", "\\|"), m)
    if result["misses_unparsed"]:
        lines += ["", "## Unparsed or failed answers (scored as misses)", ""]
        lines += [f"- `{m['id']}`: {m['error']}" for m in result["misses_unparsed"]]
    return "\n".join(lines) + "\n"


def run_eval(data: str, config: str, split: str, vlm: VLMSettings, settings: EvalSettings, out: Path | str,
             limit: int | None = None) -> dict[str, Any]:
    """Predict, score and write ``predictions.jsonl``, ``metrics.json`` and ``metrics.md``; returns metrics."""
    if settings.fmt not in FORMATS:
        raise ValueError(f"unknown format {settings.fmt!r}; choose one of {FORMATS}")
    out = Path(out)
    ds = load_split(data, config, split, limit)  # rows are read one at a time: images stay on disk
    predictions, stats = asyncio.run(_predict(ds, vlm, settings))
    result = {"data": str(data), "config": config, "split": split, "model": vlm.model, "format": settings.fmt,
              **metrics(predictions), "vlm": stats}
    write_jsonl(out / "predictions.jsonl", predictions)
    atomic_write_json(out / "metrics.json", result)
    (out / "metrics.md").write_text(markdown(result, f"Grounding: {vlm.model} on {config}/{split} ({settings.fmt})"),
                                    encoding="utf-8")
    return result


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="score a VLM's grounding (Acc@IoU, mIoU) on a split",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="build folder or Hub repo id")
    p.add_argument("--config", default="default")
    p.add_argument("--split", default="test")
    p.add_argument("--base-url", required=True, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--model", required=True)
    p.add_argument("--format", default="json", choices=FORMATS, help="the model family's box convention")
    p.add_argument("--limit", type=int, help="only the first N samples")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="response cache (SQLite)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--max-requests", type=int, help="stop sending after this many HTTP requests")
    p.add_argument("--max-cost", type=float, help="stop before spending more than this many USD")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    vlm = VLMSettings(model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                      concurrency=args.concurrency, timeout_s=args.timeout, cache=args.cache, temperature=0.0)
    vlm.validate()
    result = run_eval(args.data, args.config, args.split, vlm,
                      EvalSettings(args.format, args.max_requests, args.max_cost, args.max_tokens), args.out, args.limit)
    o = result["overall"]
    print(f"{o['n']} samples: Acc@0.5 {o['acc@0.5']:.3f}, Acc@0.3 {o['acc@0.3']:.3f}, mIoU {o['miou']:.3f}, "
          f"{o['unparsed']} unparsed; see {args.out / 'metrics.md'}", file=sys.stdout)
    return 0
