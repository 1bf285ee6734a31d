"""The offline query writer: fluent clinical queries from cue words, with no model and no network.

It is the default when no VLM endpoint is configured, so ``make build`` runs anywhere. Output is a pure
function of (seed, target, its slice's other targets): each target draws its templates from a
``random.Random`` seeded by a SHA-256 of the seed and target id (never the global random state), and a
slice's targets are written in target-id order, each avoiding every text its slice-mates already use.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from builder.anatomy import display_name, side_in_name
from builder.prompts import NUMBER_WORDS, leak_in, modality_word
from builder.records import Candidate, Query

GENERATOR = "template"
TEMPLATE_VERSION = "templates-v1"

VERTICAL_ADVERBS = {"anterior": "anteriorly", "posterior": "posteriorly", "superior": "superiorly",
                    "inferior": "inferiorly"}

# Each template names the phrases it needs in braces; a template is used only when all are available.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "category": (
        "the {name}",
        "find the {name}",
        "locate the {name} on this {modality} image",
        "where is the {name}?",
        "segment the {name}",
        "show me the {name}",
        "point out the {name} in this image",
        "the {name} on this {view} {modality} slice",
        "highlight the {name}",
        "outline the {name} in this scan",
    ),
    "attribute": (
        "the {size} {shape} {name}",
        "the {intensity_adj} {shape} {name}",
        "the {name} that appears {intensity_clause}",
        "the {name} with a {shape} contour",
        "a {size}, {shape} {name}",
        "the {size} {intensity_adj} {name}",
        "find the {shape}, {size} {name}",
        "the {name}, {shape} in outline and {size} in extent",
        "the {shape} {name} that looks {intensity_clause}",
        "the {size} {name} of {shape} configuration",
        "the {name} of {shape} shape, {intensity_clause}",
    ),
    "spatial": (
        "the {name} {relation}",
        "the {name} in the {grid}",
        "the {name} {side_phrase}",
        "the {name} lying {vertical_adv} {relation}",
        "the {name} located {vertical_adv} in the {grid}",
        "find the {name} {relation}",
        "the {centrality} {name} in the {grid}",
        "the {name} {side_phrase}, placed {vertical_adv}",
        "locate the {name} {relation}",
        "the {name} seen {vertical_adv}, {relation}",
        "the {centrality} {name} {side_phrase}",
    ),
    "disambiguation": (
        "the {order} {name}",
        "the {order} of the {count} {plural}",
        "of the {count} {plural}, the {rank} one",
        "among the {plural} in this slice, the one in the {grid}",
        "the {name} in the {grid}, not the one in the {other_grid}",
        "the {rank} of the {plural}, {relation}",
        "the {order} {name}, {distinct}",
        "which of the {plural} is {order}? the one {distinct}",
        "the {name} {distinct}, not the other {plural}",
        "the {name}, not the {other_label}",
        "the {name} rather than the neighbouring {other_label}",
        "of the structures shown, the {name} {distinct}",
    ),
}
TYPE_CYCLE = ("category", "attribute", "spatial", "disambiguation")
_FIELD = re.compile(r"{(\w+)}")


def target_rng(seed: int, target_id: str) -> random.Random:
    digest = hashlib.sha256(f"{TEMPLATE_VERSION}:{seed}:{target_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def plural(name: str) -> str:
    head, _, last = name.rpartition(" ")
    if last.endswith("s") and not last.endswith(("ss", "us", "is", "as")):
        pass  # already plural: 'costal cartilages'
    elif last.endswith("a"):
        last += "e"
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and not last.endswith(("ay", "ey", "oy", "uy")):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def _bare(word: str | None) -> str | None:
    """'the larger' -> 'larger'; empty -> None."""
    if not word:
        return None
    word = word.strip()
    return word[4:] if word.lower().startswith("the ") else word


def _intensity(word: str | None) -> tuple[str | None, str | None]:
    """(adjective, clause): 'hypodense' -> ('hypodense', 'hypodense'); 'brighter' -> (None, 'brighter than ...')."""
    if not word:
        return None, None
    low = word.lower()
    if low == "similar":
        return None, "similar in intensity to the surrounding tissue"
    if low.endswith("er"):  # a comparative: 'brighter', 'darker'
        return None, f"{low} than the surrounding tissue"
    return low, low


def _orders(words: list[str]) -> tuple[list[str], list[str]]:
    """Split order words into adjectives ('larger', 'most anterior') and clauses ('on the left of the image')."""
    adjectives, clauses = [], []
    for word in filter(None, map(_bare, words)):
        if re.fullmatch(r"(?:more |most |second |third )?[a-z]+", word):
            adjectives.append(word)
        else:
            clauses.append(word[4:] if word.startswith("one ") else word)
    return adjectives, clauses


@dataclass
class Phrases:
    """Every phrase a template may use for one target (None when its cue is missing)."""

    values: dict[str, str | None]

    def fill(self, template: str) -> str | None:
        fields = _FIELD.findall(template)
        if any(not self.values.get(f) for f in fields):
            return None
        text = template.format(**{f: self.values[f] for f in fields})
        return re.sub(r"\s+", " ", text).strip()


def phrases(c: Candidate, siblings: list[Candidate]) -> Phrases:
    name = display_name(c.label)
    word = c.cue_word
    size = word("size")
    if size == "medium":
        size = "medium-sized"
    intensity_adj, intensity_clause = _intensity(word("intensity"))
    side = word("patient_side")
    side_phrase = None
    if side and not side_in_name(c.label):
        side_phrase = "in the midline" if side == "midline" else f"on the patient's {side}"
    order, order_clauses = _orders([o["word"] for o in c.cues.get("order") or []])
    relations = [r["word"] for r in c.cues.get("relations") or []]
    grid = word("grid")
    sib_grids = {s.cue_word("grid") for s in siblings}
    distinct = order_clauses + [p for p in (
        f"in the {grid}" if grid and grid not in sib_grids else None,
        side_phrase if side and side not in {s.cue_word("patient_side") for s in siblings} else None,
        VERTICAL_ADVERBS.get(word("vertical") or "") if word("vertical") not in {s.cue_word("vertical") for s in siblings} else None,
        relations[0] if relations and relations[0] not in {r["word"] for s in siblings for r in s.cues.get("relations") or []} else None,
    ) if p]
    others = sorted({display_name(x) for x in c.labels_in_slice} - {name})
    many = len(siblings) >= 1
    values: dict[str, str | None] = {
        "name": name,
        "modality": modality_word(c.modality),
        "view": None if c.plane == "2d" else c.plane,
        "size": size,
        "shape": word("shape"),
        "intensity_adj": intensity_adj,
        "intensity_clause": intensity_clause,
        "grid": grid,
        "side_phrase": side_phrase,
        "vertical_adv": VERTICAL_ADVERBS.get(word("vertical") or ""),
        "centrality": word("centrality") if word("centrality") in ("central", "peripheral") else None,
        "relation": relations[0] if relations else None,
        "order": order[0] if many and order else None,
        "rank": _bare(word("size_rank")) if many and not leak_in(word("size_rank") or "") else None,
        "count": NUMBER_WORDS[c.group_size] if many and c.group_size < len(NUMBER_WORDS) else ("several" if many else None),
        "plural": plural(name) if many else None,
        "other_grid": next((g for g in sorted(x for x in sib_grids if x) if g != grid), None) if many else None,
        "distinct": distinct[0] if distinct else None,
        "other_label": others[0] if others and not many else None,
    }
    return Phrases(values)


def _with_qualifier(text: str, p: Phrases) -> list[str]:
    """Longer variants of a taken text that add a distinguishing phrase, tried in order."""
    return [f"{text} {q}" for q in (p.values.get("distinct"), p.values.get("relation"),
                                    f"in the {p.values['grid']}" if p.values.get("grid") else None) if q]


def write_queries(candidate: Candidate, siblings: list[Candidate], k: int, seed: int,
                  taken: set[str]) -> list[Query]:
    """Up to ``k`` queries of varied types; ``taken`` holds (lower-cased) texts other targets of the slice
    already use and is extended with this target's. A type with no usable template is skipped."""
    rng = target_rng(seed, candidate.target_id)
    p = phrases(candidate, siblings)
    usable = {t: [s for s in (p.fill(tpl) for tpl in TEMPLATES[t]) if s] for t in TYPE_CYCLE}
    if candidate.group_size == 1 and not p.values["other_label"]:  # nothing to tell it apart from
        usable["disambiguation"] = []
    if candidate.group_size > 1:  # "the lesion" names no single instance: qualify it with its order word
        for t in ("category", "attribute", "spatial"):
            usable[t] = [s for s in (p.fill(tpl.replace("the {name}", "the {order} {name}"))
                                     for tpl in TEMPLATES[t] if "the {name}" in tpl) if s]
    for texts in usable.values():
        rng.shuffle(texts)
    types = [t for t in TYPE_CYCLE if usable[t]]
    queries: list[Query] = []
    for slot in range(k * 3):
        if len(queries) == k or not types:
            break
        qtype = types[slot % len(types)]
        text = _pick(usable[qtype], taken, p)
        if text is None:
            types.remove(qtype)
            continue
        if leak_in(text):  # a cue word carrying a digit: never emit it
            continue
        taken.add(text.lower())
        index = len(queries)
        queries.append(Query(query_id=f"{candidate.target_id}__q{index}", target_id=candidate.target_id,
                             index=index, text=text, query_type=qtype, generator=GENERATOR,
                             prompt_version=TEMPLATE_VERSION))
    return queries


def _pick(options: list[str], taken: set[str], p: Phrases) -> str | None:
    while options:
        text = options.pop(0)
        if text.lower() not in taken:
            return text
        for longer in _with_qualifier(text, p):
            if longer.lower() not in taken:
                return longer
    return None
