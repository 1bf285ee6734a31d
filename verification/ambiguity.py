"""Ambiguity stage: when the slice holds other regions the query could name (other instances of the
label, or other labels the named structure covers), its words must fit the target and no other one.

Each rival is tested with the same word checks as the target (geometry claims, sides, relations), from
the rival's own cues: a query is ambiguous when some rival passes every one of them.
"""

from __future__ import annotations

from typing import Any

from builder.anatomy import display_name, side_in_name
from builder.records import Candidate
from verification.context import CandidateIndex
from verification.geometry import claim_failure
from verification.priors import label_matches, names_target, relation_failure
from verification.settings import VerificationSettings
from verification.text import Mention, ParsedQuery
from verification.vocabulary import tokenize
from verification.verdict import Sample, Verdict, outcome

STAGE = "ambiguity"


def name_tokens(label: str) -> set[str]:
    return set(tokenize(display_name(label))) - {"left", "right"}


def fits(parsed: ParsedQuery, target: Candidate, rival: Candidate, index: CandidateIndex,
         settings: VerificationSettings) -> bool:
    """Would every word of the query be true of this rival? Words of the target's own name that the
    rival's name lacks ('lower' lobe, 'T11') rule it out, as does a contrast clause that describes it."""
    if set(parsed.tokens) & (name_tokens(target.label) - name_tokens(rival.label)):
        return False
    peers = index.peers(rival)
    if parsed.negated and not any(claim_failure(c, rival, peers) for c in parsed.negated):
        return False
    related = parsed.related
    for m in parsed.mentions:
        if m.side and m.start not in related:
            side = side_in_name(rival.label) or rival.cue_word("patient_side")
            if side is not None and side != m.side:
                return False
    if any(claim_failure(c, rival, peers) for c in parsed.claims):
        return False
    return not any(relation_failure(r, rival, index, settings) for r in parsed.relations)


class AmbiguityStage:
    name = STAGE

    def __init__(self, settings: VerificationSettings, index: CandidateIndex):
        self.settings = settings
        self.index = index

    def __call__(self, sample: Sample) -> Verdict:
        cand, parsed = sample.candidate, sample.parsed
        named = [m for m in parsed.mentions if names_target(m, cand, parsed.related)]
        peers = self.index.peers(cand)
        rivals = [p for p in peers if all(label_matches(p.label, Mention(m.structure, 0, 0)) for m in named)]
        discriminators = (len(parsed.claims) + len(parsed.negated) + len(parsed.relations)
                          + sum(1 for m in named if m.side))
        failures: list[tuple[str, dict[str, Any]]] = []
        if cand.group_size > 1 and discriminators == 0:
            failures.append(("no_discriminator", {"group_size": cand.group_size}))
        for rival in rivals:
            if fits(parsed, cand, rival, self.index, self.settings):
                code = "ambiguous_instance" if rival.label == cand.label else "ambiguous_target"
                failures.append((code, {"also_fits": rival.target_id, "label": rival.label,
                                        "instance": rival.instance}))
        seen = sum(1 for p in peers if p.label == cand.label) + 1
        return outcome(STAGE, failures, rivals=len(rivals), instances_seen=seen, group_size=cand.group_size)
