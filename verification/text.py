"""Reading a query: which structures it names, which sides, positions, sizes, counts, shapes,
intensities and relations it claims. Parsed once per sample; every rule stage checks these claims."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from verification.vocabulary import find_phrases, tokenize

SIDES = {"left": "left", "right": "right"}
IMAGE_NOUNS = {"image", "frame", "picture", "screen", "field", "corner", "edge"}
ROW_WORDS = {"upper": "upper", "top": "upper", "uppermost": "upper", "topmost": "upper",
             "lower": "lower", "bottom": "lower", "lowermost": "lower", "bottommost": "lower"}
MIDDLE_WORDS = {"middle", "center", "centre", "centered", "centred"}
VERTICAL_WORDS = {"anterior": "anterior", "ventral": "anterior", "anteriorly": "anterior",
                  "posterior": "posterior", "dorsal": "posterior", "posteriorly": "posterior",
                  "superior": "superior", "cranial": "superior", "superiorly": "superior",
                  "inferior": "inferior", "caudal": "inferior", "inferiorly": "inferior"}
CENTRALITY_WORDS = {"central": "central", "centrally": "central",
                    "peripheral": "peripheral", "periphery": "peripheral", "peripherally": "peripheral"}
MEDIAL_WORDS = {"medial": "medial", "medially": "medial", "lateral": "lateral", "laterally": "lateral"}
# Words after "upper"/"lower" that make it anatomy ("upper pole"), not a position in the image.
ANATOMIC_AFTER_ROW = {"pole", "limb", "extremity", "abdomen", "quadrant", "lip", "jaw", "thorax", "chest",
                      "pelvis", "neck", "back", "segment", "border", "margin"}
SIZE_WORDS = {"tiny": "tiny", "minute": "tiny", "punctate": "tiny", "small": "small", "little": "small",
              "medium": "medium", "moderate": "medium", "large": "large", "big": "large", "huge": "large",
              "sizable": "large", "sizeable": "large", "massive": "large", "bulky": "large"}
RANK_WORDS = {"largest": "largest", "biggest": "largest", "smallest": "smallest", "larger": "larger",
              "bigger": "larger", "smaller": "smaller"}
COUNT_WORDS = {"two": 2, "both": 2, "pair": 2, "three": 3, "four": 4, "five": 5, "single": 1, "solitary": 1,
               "sole": 1, "only": 1, "several": -1, "multiple": -1, "numerous": -1}
SHAPE_WORDS = {"round": "round", "rounded": "round", "circular": "round", "spherical": "round",
               "oval": "oval", "ovoid": "oval", "elliptical": "oval", "ellipsoid": "oval",
               "elongated": "elongated", "tubular": "elongated", "linear": "elongated", "elongate": "elongated",
               "irregular": "irregular", "irregularly": "irregular",
               "lobulated": "lobulated", "lobular": "lobulated"}
# word -> (polarity, modality family that owns the word or None for plain words)
INTENSITY_WORDS = {
    "hyperdense": ("bright", "CT"), "hypodense": ("dark", "CT"), "isodense": ("similar", "CT"),
    "hyperattenuating": ("bright", "CT"), "hypoattenuating": ("dark", "CT"),
    "hyperintense": ("bright", "MRI"), "hypointense": ("dark", "MRI"), "isointense": ("similar", "MRI"),
    "hyperechoic": ("bright", "ultrasound"), "hypoechoic": ("dark", "ultrasound"),
    "anechoic": ("dark", "ultrasound"), "isoechoic": ("similar", "ultrasound"),
    "bright": ("bright", None), "brighter": ("bright", None), "dark": ("dark", None), "darker": ("dark", None),
}
RELATION_PHRASES: tuple[tuple[tuple[str, ...], str], ...] = tuple(sorted((
    (("inside",), "inside"), (("within",), "inside"), (("in",), "inside"), (("into",), "inside"),
    (("adjacent", "to"), "adjacent_to"), (("next", "to"), "adjacent_to"), (("abutting",), "adjacent_to"),
    (("bordering",), "adjacent_to"), (("touching",), "adjacent_to"), (("beside",), "adjacent_to"),
    (("alongside",), "adjacent_to"), (("near",), "adjacent_to"), (("contacting",), "adjacent_to"),
    (("containing",), "contains"), (("surrounding",), "contains"), (("encasing",), "contains"),
    (("above",), "above"), (("below",), "below"), (("beneath",), "below"), (("under",), "below"),
    (("superior", "to"), "above"), (("inferior", "to"), "below"),
    (("anterior", "to"), "anterior_to"), (("in", "front", "of"), "anterior_to"),
    (("posterior", "to"), "posterior_to"), (("behind",), "posterior_to"),
    (("left", "of"), "left_of"), (("right", "of"), "right_of"),
    (("patient", "left", "of"), "patient_left_of"), (("patient", "right", "of"), "patient_right_of"),
    (("medial", "to"), "medial_to"), (("lateral", "to"), "lateral_to"),
), key=lambda kv: -len(kv[0])))
FILLERS = {"the", "a", "an", "its", "patient", "of"}
# A contrast ("…, not the one in the centre") describes another region up to the end of its clause.
NEGATIONS: tuple[tuple[str, ...], ...] = (("not",), ("rather", "than"), ("unlike",), ("instead", "of"),
                                          ("other", "than"), ("except",), ("excluding",), ("apart", "from"))
CLAUSE_END = {",", ".", ";", ":", "!", "?"}
# Ordinal position among instances: "leftmost", "most anterior", "more superior".
EXTREME_WORDS = {"leftmost", "rightmost", "uppermost", "lowermost", "topmost", "bottommost"}
ORDER_DIRECTIONS = {"anterior", "posterior", "superior", "inferior", "left", "right", "lateral", "medial",
                    "central", "peripheral", "cranial", "caudal"}


@dataclass(frozen=True)
class Mention:
    """A vocabulary structure named in the query, with the side adjective attached to it, if any."""

    structure: str
    start: int
    end: int
    side: str | None = None


@dataclass(frozen=True)
class RelationClaim:
    kind: str  # inside, adjacent_to, contains, above, below, anterior_to, posterior_to, left_of, …
    other: Mention


@dataclass(frozen=True)
class Claim:
    """A word the query uses about the target: ``axis`` says which cue must agree."""

    axis: str  # side, image_row, image_col, vertical, centrality, medial, size, rank, count, shape, intensity
    word: str
    extra: str | None = None  # intensity: the modality family owning the word


@dataclass
class ParsedQuery:
    text: str
    tokens: list[str]
    mentions: list[Mention] = field(default_factory=list)
    relations: list[RelationClaim] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    negated: list[Claim] = field(default_factory=list)  # words describing what the target is not
    contrasted: set[int] = field(default_factory=set)  # starts of mentions inside a contrast clause
    neighbours: set[int] = field(default_factory=set)  # starts of mentions naming a relation's object

    def of(self, axis: str) -> list[Claim]:
        return [c for c in self.claims if c.axis == axis]

    @property
    def related(self) -> set[int]:
        """Start positions of mentions that do not name the target: relation objects and contrasts."""
        return self.neighbours | self.contrasted


def _image_frame(tokens: list[str], i: int) -> bool:
    """Is the word at i image-relative ('left of the image', 'image left', 'upper left of the frame')?"""
    window = tokens[i + 1:i + 6]
    before = tokens[max(0, i - 1):i]
    return any(t in IMAGE_NOUNS for t in window[:5] if t not in ("patient",)) or any(t in IMAGE_NOUNS for t in before)


def negated_spans(tokens: list[str]) -> list[bool]:
    """True for tokens from a negation cue to the end of its clause."""
    out = [False] * len(tokens)
    i = 0
    while i < len(tokens):
        cue = next((n for n in NEGATIONS if tuple(tokens[i:i + len(n)]) == n), None)
        if cue is None:
            i += 1
            continue
        j = i
        while j < len(tokens) and tokens[j] not in CLAUSE_END:
            out[j] = True
            j += 1
        i = j
    return out


def parse(text: str) -> ParsedQuery:
    tokens = tokenize(text)
    q = ParsedQuery(text=text, tokens=tokens)
    used = [False] * len(tokens)
    negated = negated_spans(tokens)
    mentions = []
    for start, end, name in find_phrases(tokens):
        side = None
        if start >= 1 and tokens[start - 1] in SIDES:
            side, used[start - 1] = tokens[start - 1], True
        elif start >= 2 and tokens[start - 2] in SIDES and tokens[start - 1] not in FILLERS | {"to", "of"}:
            side, used[start - 2] = tokens[start - 2], True
        for k in range(start, end):
            used[k] = True
        mentions.append(Mention(name, start, end, side))
        if negated[start]:
            q.contrasted.add(start)
    q.mentions = mentions
    by_start = {m.start: m for m in mentions}
    side_index = {m.start - (1 if m.start >= 1 and tokens[m.start - 1] in SIDES else 2): m
                  for m in mentions if m.side}

    i = 0
    while i < len(tokens):
        for phrase, kind in RELATION_PHRASES:
            n = len(phrase)
            if tuple(tokens[i:i + n]) != phrase or any(used[i:i + n]):
                continue
            j = i + n
            while j < len(tokens) and tokens[j] in FILLERS and j - (i + n) < 3:
                j += 1
            other = by_start.get(j) or side_index.get(j)
            if other is not None:
                q.neighbours.add(other.start)
                while other.end in by_start:  # "the liver lesion": the head noun is the last mention
                    other = by_start[other.end]
                    q.neighbours.add(other.start)
                if not negated[i]:
                    q.relations.append(RelationClaim(kind, other))
                for k in range(i, j):
                    used[k] = True
                i = j - 1
                break
        i += 1

    for i, tok in enumerate(tokens):
        if used[i]:
            continue
        claims = q.negated if negated[i] else q.claims
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in EXTREME_WORDS:
            claims.append(Claim("order", tok.replace("top", "upper").replace("bottom", "lower")))
        elif tok in ("most", "more") and nxt in ORDER_DIRECTIONS:
            claims.append(Claim("order", f"most {nxt}" if nxt not in SIDES else f"{nxt}most"))
            used[i + 1] = True
        elif tok in SIDES:
            claims.append(Claim("image_col" if _image_frame(tokens, i) else "side", tok))
        elif tok in ROW_WORDS and nxt not in ANATOMIC_AFTER_ROW:
            claims.append(Claim("image_row", ROW_WORDS[tok]))
        elif tok in MIDDLE_WORDS or (tok in CENTRALITY_WORDS and CENTRALITY_WORDS[tok] == "central"
                                     and _image_frame(tokens, i)):
            if _image_frame(tokens, i):
                prev = tokens[i - 1] if i else ""
                if prev in ROW_WORDS:
                    claims.append(Claim("image_col", "center"))
                elif nxt in SIDES:
                    claims.append(Claim("image_row", "middle"))
                else:
                    claims += [Claim("image_row", "middle"), Claim("image_col", "center")]
            else:
                claims.append(Claim("centrality", "central"))
        elif tok == "midline":
            claims.append(Claim("side", "midline"))
        elif tok in VERTICAL_WORDS:
            claims.append(Claim("vertical", VERTICAL_WORDS[tok]))
        elif tok in CENTRALITY_WORDS:
            claims.append(Claim("centrality", CENTRALITY_WORDS[tok]))
        elif tok in MEDIAL_WORDS:
            claims.append(Claim("medial", MEDIAL_WORDS[tok]))
        elif tok in SIZE_WORDS:
            claims.append(Claim("size", SIZE_WORDS[tok]))
        elif tok in RANK_WORDS:
            second = i >= 1 and tokens[i - 1] == "second"
            claims.append(Claim("rank", "second largest" if second else RANK_WORDS[tok]))
        elif tok in COUNT_WORDS:
            claims.append(Claim("count", str(COUNT_WORDS[tok])))
        elif tok in SHAPE_WORDS:
            claims.append(Claim("shape", SHAPE_WORDS[tok]))
        elif tok in INTENSITY_WORDS:
            polarity, family = INTENSITY_WORDS[tok]
            claims.append(Claim("intensity", polarity, family))
    return q


# Leaks: things a grounding query must never contain.
LEAK_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("leaked_coordinates", re.compile(r"[\(\[]\s*-?\d+(\.\d+)?\s*[,;]\s*-?\d+|\b[xy]\s*[=:]\s*-?\d+"
                                      r"|\b(bbox|bounding box|coordinates?)\b|\d+(\.\d+)?\s*,\s*\d+(\.\d+)?\s*,\s*\d+",
                                      re.I)),
    ("leaked_pixel_value", re.compile(r"\b\d+(\.\d+)?\s*(px|pixels?|hu|hounsfield)\b|\bpixel\s+(value|intensity)"
                                      r"|\bintensity\s+(of\s+)?\d+|\barea\s+(of\s+)?\d+", re.I)),
    ("leaked_label_id", re.compile(r"\b(label|class|id|index|mask)\s*(id\s*)?[#:=]?\s*\d+\b", re.I)),
    ("leaked_identifier", re.compile(r"\b[A-Za-z]+(?:_[A-Za-z0-9]+)+\b")),
)
# Numbers anatomy uses: vertebral levels (T9, L1), ribs and segments up to 12, ordinals.
ALLOWED_NUMBER = re.compile(r"^(\d|1[0-2])(st|nd|rd|th)?$")


def leaks(text: str, numbers_to_hide: set[int]) -> list[tuple[str, str]]:
    """(reason code, offending text) for every leak in a query."""
    found = [(code, m.group(0)) for code, pattern in LEAK_PATTERNS for m in [pattern.search(text)] if m]
    for m in re.finditer(r"(?<![A-Za-z])(\d+(?:\.\d+)?)(st|nd|rd|th)?\b", text):
        token = m.group(0)
        if ALLOWED_NUMBER.match(token):
            continue
        value = float(m.group(1))
        code = "leaked_coordinates" if value.is_integer() and int(value) in numbers_to_hide else "leaked_number"
        found.append((code, token))
        break
    return found
