"""Visual judge stage: a VLM sees the image with the target's box drawn and the query, and answers
``judge_output.schema.json``. It uses the query stage's client (same cache, limits, retries and
budget); every failure (refusal, malformed answer, HTTP error, spent budget) is a recorded verdict."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from builder.vlm import Budget, VLMClient, VLMSettings
from verification.context import CandidateIndex
from verification.settings import JudgeSettings
from verification.verdict import Sample, Verdict

STAGE = "judge"
KIND = "vlm"
SCHEMA_PATH = Path(__file__).parent / "judge_output.schema.json"
SYSTEM = (
    "You are a radiologist auditing a visual grounding dataset. You see a medical image with one region "
    "marked by a red box, and a referring query. Judge only from the image: is the boxed target visible, "
    "does the box mark what the query describes, and could the query equally describe another region of "
    "this image? Answer with JSON only."
)


@cache
def judge_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def boxed_png(image: np.ndarray, bbox: list[float], color: tuple[int, int, int], width: int) -> bytes:
    """The image in RGB with the box drawn on its pixel edges (x_max, y_max are exclusive)."""
    rgb = Image.fromarray(image).convert("RGB")
    x0, y0, x1, y1 = bbox
    ImageDraw.Draw(rgb).rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=tuple(color), width=width)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


def build_messages(sample: Sample, png: bytes) -> list[dict[str, Any]]:
    cand, query = sample.candidate, sample.query
    text = (f"Modality: {cand.modality}. Body region: {cand.body_region}.\n"
            f"Query: \"{query.text}\"\n"
            "Return JSON with: visible (boolean), box_matches (boolean), could_refer_to_other (boolean), "
            "score (0 to 1: how sure you are that the query refers to exactly the boxed region), reason (one "
            "short sentence).")
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def verdict_of(answer: dict[str, Any], model: str, settings: JudgeSettings) -> Verdict:
    """Thresholds on a schema-valid answer; the first unmet condition names the reason."""
    score = float(answer["score"])
    details = {"visible": answer["visible"], "box_matches": answer["box_matches"],
               "could_refer_to_other": answer["could_refer_to_other"], "reason": answer["reason"][:300],
               "min_score": settings.min_score}
    if not answer["visible"]:
        reason = "judge_not_visible"
    elif not answer["box_matches"]:
        reason = "judge_box_mismatch"
    elif answer["could_refer_to_other"] and settings.reject_if_could_refer_to_other:
        reason = "judge_ambiguous"
    elif score < settings.min_score:
        reason = "judge_low_score"
    else:
        reason = "ok"
    return Verdict(STAGE, reason == "ok", reason, details, kind=KIND, model=model, score=score)


class VLMJudge:
    """Judges a batch concurrently (the client bounds concurrency and rate)."""

    name = STAGE

    def __init__(self, settings: JudgeSettings, vlm: VLMSettings, index: CandidateIndex,
                 budget: Budget | None = None):
        self.settings = settings
        self.vlm = vlm
        self.index = index
        self.budget = budget

    def run(self, samples: list[Sample]) -> list[Verdict]:
        return asyncio.run(self._run(samples))

    async def _run(self, samples: list[Sample]) -> list[Verdict]:
        async with VLMClient(self.vlm, budget=self.budget) as client:
            return list(await asyncio.gather(*(self._one(client, s) for s in samples)))

    async def _one(self, client: VLMClient, sample: Sample) -> Verdict:
        cand = sample.candidate
        try:
            png = boxed_png(self.index.image(cand.image), cand.bbox, self.settings.box_color, self.settings.box_width)
        except (OSError, ValueError) as exc:
            return Verdict(STAGE, False, "judge_image_unreadable", {"error": str(exc)}, kind=KIND, model=client.model)
        completion = await client.complete(
            stage="verify", messages=build_messages(sample, png), prompt_version=self.settings.prompt_version,
            response_schema=judge_schema(), schema_name="judgement", temperature=0.0,
            max_tokens=self.settings.max_tokens)
        if completion.failure is not None:
            f = completion.failure
            return Verdict(STAGE, False, f"judge_{f.reason}",
                           {"message": f.message[:300], "transient": f.transient, "status": f.status,
                            "answer": (completion.text or "")[:300]}, kind=KIND, model=client.model)
        return verdict_of(completion.data, client.model, self.settings)
