"""Adversarial corpus on the real fixtures: each false query is refused by the intended stage with the
intended reason code, and a true query for the same target is kept."""

from __future__ import annotations

import json

import pytest

from builder.records import Candidate, Query
from verification.context import CandidateIndex
from verification.format import read_sample
from verification.pipeline import verify
from verification.settings import VerificationSettings
from verification.text import parse


@pytest.fixture(scope="module")
def corpus(fixture_run):
    index = CandidateIndex(fixture_run.out)
    return fixture_run, index


def pick(run, source: str, label: str, near: str | None = None, **where) -> dict:
    """The first candidate of a label with these cue words / fields (and a computed relation to ``near``)."""
    for c in run.candidates:
        if near and not any(r["other"] == near for r in c["cues"]["relations"]):
            continue
        if c["source"] == source and c["label"] == label and all(
                (c["cues"].get(k) or {}).get("word") == v if k in c["cues"] else c.get(k) == v
                for k, v in where.items()):
            return c
    pytest.fail(f"no {label} candidate of {source} with {where} in the fixture run")


def line(cand: dict, text: str, **query) -> str:
    q = Query(query_id=f"{cand['target_id']}__q0", target_id=cand["target_id"], index=0, text=text,
              query_type=query.pop("query_type", "spatial"), generator=query.pop("generator", "template"),
              prompt_version="test", raw=query.pop("raw", None))
    return json.dumps({"candidate": cand, "query": q.to_dict()})


def judge(index, raw_line: str, settings: VerificationSettings | None = None) -> dict:
    return verify([read_sample(1, raw_line)], settings or VerificationSettings(), index)[0]


def rejected_by(record: dict) -> tuple[str | None, str | None]:
    first = next((v for v in record["stages"] if not v["passed"]), None)
    return (first["stage"], first["reason"]) if first else (None, None)


# (source, label, candidate filter, false query, expected (stage, reason), true query)
CASES = [
    pytest.param("totalseg_ct", "kidney_right", {}, "the left kidney", ("priors", "laterality_mismatch"),
                 "the right kidney", id="wrong-side"),
    pytest.param("kvasir_seg", "polyp", {"grid": "upper center of the image"},
                 "the polyp in the lower part of the image", ("geometry", "wrong_position"),
                 "the polyp in the upper part of the image", id="wrong-position"),
    pytest.param("msd_spleen", "spleen", {"size": "large"}, "the small spleen", ("geometry", "wrong_size"),
                 "the large oval spleen on the patient's left", id="wrong-size"),
    pytest.param("sam_med2d", "hip_left", {"instance": 0}, "the left hip bone", ("ambiguity", "ambiguous_instance"),
                 "the lower of the two left hip bone pieces", id="fits-both-hip-left"),
    pytest.param("totalseg_ct", "kidney_right", {}, "the right kidney at (31, 52)",
                 ("geometry", "leaked_coordinates"), "the right kidney", id="leaked-coordinate"),
    pytest.param("totalseg_ct", "kidney_right", {}, "the kidney_right", ("geometry", "leaked_identifier"),
                 "the right kidney", id="leaked-identifier"),
    pytest.param("totalseg_ct", "kidney_right", {}, "the structure with label 5", ("geometry", "leaked_label_id"),
                 "the right kidney", id="leaked-label-id"),
    pytest.param("totalseg_ct", "liver", {}, "the lesion in the liver", ("priors", "unlabelled_finding"),
                 "the liver", id="finding-not-in-image"),
    pytest.param("kvasir_seg", "polyp", {"grid": "upper center of the image"},
                 "the kidney in the upper part of the image", ("priors", "implausible_structure"),
                 "the round polyp in the upper part of the image", id="implausible-for-modality"),
    pytest.param("totalseg_ct", "kidney_right", {"near": "liver"}, "the right kidney inside the liver",
                 ("priors", "relation_false"), "the right kidney", id="false-containment"),
    pytest.param("totalseg_ct", "kidney_right", {}, "the hyperintense right kidney",
                 ("priors", "modality_term_mismatch"), "the hyperdense right kidney", id="mri-word-on-ct"),
    pytest.param("sam_med2d", "liver", {}, "the liver on the patient's left", ("geometry", "side_unsupported"),
                 "the liver", id="side-without-orientation"),
]


@pytest.mark.parametrize("source,label,where,false_query,expected,true_query", CASES)
def test_false_query_refused_by_intended_stage_and_true_query_kept(corpus, source, label, where, false_query,
                                                                  expected, true_query):
    run, index = corpus
    cand = pick(run, source, label, **where)
    bad = judge(index, line(cand, false_query))
    assert not bad["passed"]
    assert rejected_by(bad) == expected, bad["stages"]
    good = judge(index, line(cand, true_query))
    assert good["passed"], good["stages"]
    assert [v["stage"] for v in good["stages"]] == list(VerificationSettings().order)


def test_malformed_line_is_a_recorded_format_rejection(corpus):
    _, index = corpus
    record = judge(index, '{"candidate": {"target_id": "x"}, "query": ')
    assert rejected_by(record) == ("format", "malformed_json")
    assert record["skipped"] == ["geometry", "priors", "ambiguity", "judge"]


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["candidate"].update(bbox=[1, 2, 3]), "candidate.bbox"),
    (lambda d: d["query"].update(query_type="question"), "query.query_type"),
    (lambda d: d["query"].pop("text"), "text"),
])
def test_schema_breaking_line_is_rejected_with_the_field_named(corpus, mutate, where):
    run, index = corpus
    data = json.loads(line(pick(run, "totalseg_ct", "kidney_right"), "the right kidney"))
    mutate(data)
    record = judge(index, json.dumps(data))
    assert rejected_by(record) == ("format", "schema_violation")
    assert where in record["stages"][0]["details"]["message"]


def test_vlm_raw_answer_malformed_or_off_schema_is_rejected(corpus):
    run, index = corpus
    cand = pick(run, "totalseg_ct", "kidney_right")
    text = "the right kidney"
    good_raw = json.dumps({"queries": [{"type": "spatial", "text": text}]})
    assert judge(index, line(cand, text, generator="some-vlm", raw=good_raw))["passed"]
    broken = judge(index, line(cand, text, generator="some-vlm", raw='{"queries": [{"type": "spatial", "te'))
    assert rejected_by(broken) == ("format", "malformed_json")
    off = judge(index, line(cand, text, generator="some-vlm",
                            raw=json.dumps({"queries": [{"kind": "spatial", "text": text}]})))
    assert rejected_by(off) == ("format", "schema_violation")
    other = judge(index, line(cand, text, generator="some-vlm",
                              raw=json.dumps({"queries": [{"type": "spatial", "text": "the liver"}]})))
    assert rejected_by(other) == ("format", "query_not_in_answer")


def test_query_bounds_and_characters(corpus):
    run, index = corpus
    cand = pick(run, "totalseg_ct", "kidney_right")
    assert rejected_by(judge(index, line(cand, "kidney"))) == ("format", "query_too_short")
    assert rejected_by(judge(index, line(cand, "the right kidney " * 30))) == ("format", "query_too_long")
    assert rejected_by(judge(index, line(cand, "the **right** kidney"))) == ("format", "bad_characters")


def test_box_must_equal_mask_extent_and_lie_inside_the_image(corpus):
    run, index = corpus
    cand = dict(pick(run, "totalseg_ct", "kidney_right"))
    x0, y0, x1, y1 = cand["bbox"]
    shifted = {**cand, "bbox": [x0 + 2, y0, x1 + 2, y1]}
    assert rejected_by(judge(index, line(shifted, "the right kidney"))) == ("geometry", "bbox_mask_mismatch")
    outside = {**cand, "bbox": [x0, y0, cand["width"] + 5, y1]}
    assert rejected_by(judge(index, line(outside, "the right kidney"))) == ("geometry", "bbox_outside_image")
    flat = {**cand, "bbox": [x0, y0, x0, y1]}
    assert rejected_by(judge(index, line(flat, "the right kidney"))) == ("geometry", "bbox_degenerate")
    settings = VerificationSettings(min_mask_area=cand["area"] + 1)
    assert rejected_by(judge(index, line(cand, "the right kidney"), settings)) == ("geometry", "mask_too_small")


def test_label_side_contradicting_the_computed_side_is_refused(corpus):
    run, index = corpus
    cand = json.loads(json.dumps(pick(run, "totalseg_ct", "kidney_left")))
    cand["cues"]["patient_side"] = {"value": 0.0, "word": "right"}  # a mis-oriented volume would do this
    assert rejected_by(judge(index, line(cand, "the kidney"))) == ("priors", "label_side_conflict")


def test_count_and_rank_words_follow_the_instance_group(corpus):
    run, index = corpus
    hip = pick(run, "sam_med2d", "hip_left", instance=0)
    record = judge(index, line(hip, "the lower of the three left hip bone pieces"))
    assert rejected_by(record) == ("geometry", "wrong_count")
    spleen = pick(run, "msd_spleen", "spleen")
    assert rejected_by(judge(index, line(spleen, "the larger spleen"))) == ("geometry", "wrong_size_rank")


def test_contrast_clause_describes_the_other_instance_not_the_target(corpus):
    run, index = corpus
    hip = pick(run, "sam_med2d", "hip_left", instance=1)  # upper left of the image; its twin is central
    record = judge(index, line(hip, "the left hip bone in the upper left of the image, not the one in the center"))
    assert record["passed"], record["stages"]
    parsed = parse("the T11 vertebra, not the T12 vertebra")
    assert len(parsed.mentions) == 2 and parsed.related == {parsed.mentions[1].start}


def test_every_true_template_query_of_a_slice_with_twins_is_checked_against_each_twin(corpus):
    run, index = corpus
    twins = [c for c in run.candidates if c["source"] == "kvasir_seg" and c["group_size"] == 2]
    assert len(twins) == 2
    for cand in twins:
        words = [o["word"] for o in cand["cues"]["order"]]
        record = judge(index, line(cand, f"{words[0]} polyp"))
        assert record["passed"], (words, record["stages"])
        assert rejected_by(judge(index, line(cand, "the polyp"))) == ("ambiguity", "no_discriminator")


def test_candidate_record_round_trips(corpus):
    run, _ = corpus
    assert Candidate.from_dict(run.candidates[0]).to_dict() == run.candidates[0]


def test_a_finding_label_is_not_its_organ_and_compound_objects_take_their_head_noun():
    from verification.priors import label_matches
    from verification.text import Mention

    liver = Mention("liver", 0, 1)
    assert not label_matches("liver_lesion", liver)  # "find the liver" must not fit a liver lesion
    assert label_matches("liver_lesion", liver, as_part=True)  # but the slice's labels do name a liver
    assert label_matches("liver_lesion", Mention("lesion", 0, 1)) and label_matches("polyp", Mention("lesion", 0, 1))
    assert not label_matches("kidney_left", Mention("kidney", 0, 1, side="right"))
    parsed = parse("the right kidney posterior to the liver lesion")
    (relation,) = parsed.relations
    assert (relation.kind, relation.other.structure) == ("posterior_to", "lesion")
    assert parsed.related == {m.start for m in parsed.mentions[1:]}
