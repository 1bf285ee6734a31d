"""The visual stage: the VLM judge through the loopback OpenAI server (every scripted answer, malformed
and refusing ones included, ends as a recorded verdict), and the model-free evidence check."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from builder.records import Query
from builder.vlm import VLMSettings
from tests.loopback_openai import LoopbackOpenAI, Reply, count_images
from verification.context import CandidateIndex
from verification.evidence import EvidenceJudge
from verification.format import read_sample
from verification.pipeline import verify
from verification.settings import EvidenceSettings, JudgeSettings, VerificationSettings


def sample_line(cand: dict, text: str) -> str:
    q = Query(f"{cand['target_id']}__q0", cand["target_id"], 0, text, "category", "template", "test")
    return json.dumps({"candidate": cand, "query": q.to_dict()})


def first(run, source: str, label: str) -> dict:
    return next(c for c in run.candidates if c["source"] == source and c["label"] == label)


@pytest.mark.parametrize("source,label", [("msd_spleen", "spleen"), ("totalseg_ct", "liver"),
                                          ("kvasir_seg", "polyp"), ("medsegbench_kvasir", "polyp")])
def test_evidence_check_keeps_real_targets(fixture_run, source, label):
    index = CandidateIndex(fixture_run.out)
    judge = EvidenceJudge(EvidenceSettings(), index)
    for cand in [c for c in fixture_run.candidates if c["source"] == source and c["label"] == label]:
        verdict = judge(read_sample(1, sample_line(cand, f"the {label}")))
        assert verdict.passed, (cand["target_id"], verdict.details)
        assert verdict.kind == "evidence_check" and verdict.model is None


def test_evidence_check_rejects_a_region_without_contrast(fixture_run, tmp_path):
    """A mask over a uniform patch of a real slice: nothing there stands out from its ring."""
    cand = dict(first(fixture_run, "msd_spleen", "spleen"))
    image = np.array(Image.open(fixture_run.out / cand["image"]).convert("L"))
    h, w = image.shape
    image[: h // 2, : w // 2] = 90  # a flat area, as a region with no evidence looks
    mask = np.zeros_like(image, dtype=bool)
    mask[h // 8: h // 4, w // 8: w // 4] = True
    Image.fromarray(image).save(tmp_path / "flat.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "flat_mask.png")
    rows, cols = np.nonzero(mask)
    cand.update(image="flat.png", mask="flat_mask.png", area=int(mask.sum()),
                bbox=[float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)])
    verdict = EvidenceJudge(EvidenceSettings(), CandidateIndex(tmp_path))(read_sample(1, sample_line(cand, "x")))
    assert not verdict.passed and verdict.reason == "no_visual_evidence"
    assert verdict.details["contrast"] == 0.0 and verdict.kind == "evidence_check"


ANSWERS = {
    "alpha": (Reply.json({"visible": True, "box_matches": True, "could_refer_to_other": False, "score": 0.9,
                          "reason": "clear"}), True, "ok"),
    "bravo": (Reply.json({"visible": False, "box_matches": True, "could_refer_to_other": False, "score": 0.9,
                          "reason": "not seen"}), False, "judge_not_visible"),
    "charlie": (Reply.json({"visible": True, "box_matches": False, "could_refer_to_other": False, "score": 0.8,
                            "reason": "box elsewhere"}), False, "judge_box_mismatch"),
    "delta": (Reply.json({"visible": True, "box_matches": True, "could_refer_to_other": True, "score": 0.8,
                          "reason": "two of them"}), False, "judge_ambiguous"),
    "echo": (Reply.json({"visible": True, "box_matches": True, "could_refer_to_other": False, "score": 0.2,
                         "reason": "unsure"}), False, "judge_low_score"),
    "foxtrot": (Reply.text("{\"visible\": true, \"box_matc"), False, "judge_malformed_json"),
    "golf": (Reply.refuse("I can't assess medical images."), False, "judge_refusal"),
    "hotel": (Reply.json({"visible": "yes", "score": 3}), False, "judge_schema_violation"),
    "india": (Reply.client_error(400), False, "judge_http_4xx"),
    "juliet": (Reply.text("I'm sorry, I cannot help with that."), False, "judge_refusal"),
    "kilo": (Reply.server_error(500), False, "judge_http_5xx"),  # transient: pending, retried by a rerun
}


def test_vlm_judge_records_every_scripted_answer(fixture_run, tmp_path):
    cand = first(fixture_run, "msd_spleen", "spleen")
    index = CandidateIndex(fixture_run.out)
    settings = VerificationSettings(order=("format", "judge"), judge=JudgeSettings(mode="vlm", min_score=0.5))
    with LoopbackOpenAI() as server:
        for word, (reply, _, _) in ANSWERS.items():  # matched only when the boxed image is attached
            server.always(lambda r, w=word: f"spleen {w}" in r.text and count_images(r.body) == 1, reply)
        vlm = VLMSettings(model="judge-model", base_url=server.base_url, cache=str(tmp_path / "cache.sqlite"),
                          max_attempts=1, repair_attempts=0, timeout_s=5)
        samples = [read_sample(i, sample_line(cand, f"the spleen {word}")) for i, word in enumerate(ANSWERS)]
        records = verify(samples, settings, index, vlm)
        assert server.count == len(ANSWERS)
    for (word, (_, passed, reason)), record in zip(ANSWERS.items(), records):
        verdict = record["stages"][-1]
        assert (record["passed"], verdict["reason"]) == (passed, reason), word
        assert record["pending"] == (word == "kilo"), word
        assert verdict["kind"] == "vlm" and verdict["model"] == "judge-model"
        assert record["judge"]["kind"] == "vlm"
    assert records[0]["judge"]["score"] == 0.9
    # A rerun repeats no call that succeeded: answers come from the content-keyed cache.
    with LoopbackOpenAI() as server:
        vlm = VLMSettings(model="judge-model", base_url=server.base_url, cache=str(tmp_path / "cache.sqlite"),
                          max_attempts=1, repair_attempts=0, timeout_s=5)
        again = verify(samples[:1], settings, index, vlm)
        assert server.count == 0 and again[0]["passed"]


def test_auto_mode_without_endpoint_uses_the_evidence_check(fixture_run):
    cand = first(fixture_run, "totalseg_ct", "liver")
    record = verify([read_sample(1, sample_line(cand, "the liver"))], VerificationSettings(),
                    CandidateIndex(fixture_run.out))[0]
    assert record["passed"]
    assert record["judge"] == {"kind": "evidence_check", "model": None, "score": record["stages"][-1]["score"]}
