"""Which structures and findings a query may name, per body region and modality, with synonyms.

Builds on ``builder.anatomy`` (regions, display names): a rule needs to know that "renal" means the
kidney, that a kidney cannot be seen in a colonoscopy frame, and that "lesion" is a finding, not anatomy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from builder.anatomy import normalize_label

# Modality groups: what an imaging technique can show at all.
CROSS = "cross_sectional"  # CT, MRI, PET: any internal anatomy
XRAY = "xray"
US = "ultrasound"
ENDO = "endoscopy"
DERM = "dermoscopy"
FUNDUS = "fundus"
MICRO = "microscopy"
ALL_GROUPS = (CROSS, XRAY, US, ENDO, DERM, FUNDUS, MICRO)
INTERNAL = (CROSS, US)

MODALITY_GROUPS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("ct", "mri", "mr", "pet", "spect"), CROSS),
    (("x-ray", "xray", "radiograph", "mammograph", "cxr"), XRAY),
    (("ultrasound", "us", "echo"), US),
    (("endoscop", "colonoscop", "gastroscop", "laparoscop", "capsule"), ENDO),
    (("dermoscop", "dermatolog", "skin"), DERM),
    (("fundus", "retina", "oct"), FUNDUS),
    (("microscop", "histopath", "patholog", "brightfield", "cytolog"), MICRO),
)

# Regions that share slices: a liver dome shows on a lower chest CT, a bladder on a low abdominal one.
NEIGHBOUR_REGIONS: dict[str, set[str]] = {
    "brain": {"brain", "head", "neck"}, "head": {"brain", "head", "neck"},
    "neck": {"neck", "head", "brain", "chest"},
    "chest": {"chest", "neck", "abdomen"},
    "abdomen": {"abdomen", "chest", "pelvis", "colon"},
    "pelvis": {"pelvis", "abdomen", "colon"},
    "colon": {"colon", "abdomen", "pelvis"},
}


@dataclass(frozen=True)
class Structure:
    """One nameable thing: anatomy ("organ", "bone", …) or a finding ("finding")."""

    name: str
    kind: str
    synonyms: tuple[str, ...]
    regions: tuple[str, ...]  # empty: any region
    modalities: tuple[str, ...]

    @property
    def is_finding(self) -> bool:
        return self.kind == "finding"


def _s(name: str, kind: str, synonyms: str, regions: str, modalities: tuple[str, ...] = INTERNAL) -> Structure:
    syns = tuple(s.strip() for s in synonyms.split(",") if s.strip())
    return Structure(name, kind, (name, *syns), tuple(regions.split()), modalities)


BONE_MODS = (CROSS, XRAY, US)
CHEST_MODS = (CROSS, XRAY, US)

STRUCTURES: tuple[Structure, ...] = (
    # abdomen
    _s("liver", "organ", "hepatic, liver lobe", "abdomen"),
    _s("spleen", "organ", "splenic", "abdomen"),
    _s("kidney", "organ", "renal", "abdomen"),
    _s("pancreas", "organ", "pancreatic", "abdomen"),
    _s("gallbladder", "organ", "gall bladder", "abdomen"),
    _s("stomach", "organ", "gastric", "abdomen"),
    _s("duodenum", "organ", "duodenal", "abdomen"),
    _s("small bowel", "organ", "small intestine, jejunum, ileum", "abdomen pelvis"),
    _s("colon", "organ", "large bowel, large intestine, colonic, caecum, cecum, sigmoid", "abdomen pelvis colon"),
    _s("rectum", "organ", "rectal", "pelvis colon"),
    _s("adrenal gland", "organ", "adrenal, suprarenal gland", "abdomen"),
    _s("aorta", "vessel", "aortic", "abdomen chest"),
    _s("inferior vena cava", "vessel", "ivc, vena cava, caval", "abdomen chest"),
    _s("portal vein", "vessel", "portal, splenic vein", "abdomen"),
    _s("iliac artery", "vessel", "iliac vessel, iliac vein", "pelvis abdomen"),
    _s("esophagus", "organ", "oesophagus, esophageal, oesophageal", "chest abdomen neck"),
    _s("psoas", "muscle", "iliopsoas, psoas muscle", "abdomen pelvis"),
    _s("autochthon", "muscle", "autochthonous muscle, erector spinae, paraspinal muscle, paraspinal, back muscle",
       "abdomen chest pelvis"),
    # pelvis
    _s("urinary bladder", "organ", "bladder, vesical", "pelvis"),
    _s("prostate", "organ", "prostatic", "pelvis"),
    _s("uterus", "organ", "uterine", "pelvis"),
    _s("gluteus maximus", "muscle", "gluteal muscle, gluteus, gluteus medius, gluteus minimus, buttock muscle",
       "pelvis"),
    _s("hip", "bone", "hip bone, iliac bone, ilium, ischium, pubis, pelvic bone, innominate bone, iliac wing",
       "pelvis", BONE_MODS),
    _s("femur", "bone", "femoral head, femoral neck, thigh bone, femoral", "pelvis", BONE_MODS),
    _s("sacrum", "bone", "sacral", "pelvis", BONE_MODS),
    # chest
    _s("lung", "organ", "pulmonary lobe, lung lobe, lungs, upper lobe, lower lobe, middle lobe", "chest", CHEST_MODS),
    _s("heart", "organ", "cardiac", "chest", CHEST_MODS),
    _s("atrium", "organ", "heart atrium, atrial, atria", "chest"),
    _s("cardiac ventricle", "organ", "heart ventricle, ventricle, ventricular", "chest brain"),
    _s("myocardium", "organ", "heart myocardium, myocardial, heart muscle", "chest"),
    _s("trachea", "organ", "tracheal, airway", "chest neck", CHEST_MODS),
    _s("pulmonary artery", "vessel", "pulmonary trunk", "chest"),
    _s("rib", "bone", "costal, ribs", "chest abdomen", BONE_MODS),
    _s("sternum", "bone", "sternal", "chest", BONE_MODS),
    _s("clavicle", "bone", "collarbone", "chest neck", BONE_MODS),
    _s("scapula", "bone", "shoulder blade", "chest", BONE_MODS),
    _s("vertebra", "bone", "vertebrae, vertebral body, vertebral, spine, spinal column", "chest abdomen pelvis neck",
       BONE_MODS),
    _s("spinal cord", "organ", "cord", "chest abdomen pelvis neck"),
    # neck, head
    _s("thyroid", "organ", "thyroid gland", "neck"),
    _s("carotid artery", "vessel", "carotid", "neck"),
    _s("brain", "organ", "cerebral, cerebrum, cerebellum", "brain head"),
    _s("hippocampus", "organ", "hippocampal", "brain head"),
    # image-only modalities
    _s("mucosa", "tissue", "mucosal surface, colonic mucosa, mucosal fold, fold", "", (ENDO,)),
    _s("lumen", "tissue", "bowel lumen", "", (ENDO,)),
    _s("optic disc", "organ", "optic disk, optic cup, optic nerve head", "", (FUNDUS,)),
    _s("macula", "organ", "fovea", "", (FUNDUS,)),
    _s("retinal vessel", "vessel", "retinal vessels, blood vessel", "", (FUNDUS,)),
    _s("nucleus", "cell", "nuclei, cell nucleus", "", (MICRO,)),
    _s("cell", "cell", "cells", "", (MICRO,)),
    _s("gland", "tissue", "glands, glandular", "", (MICRO,)),
    # findings: no region (a tumour can be anywhere), modality where it can be seen
    _s("lesion", "finding", "mass, tumour, tumor, neoplasm, growth, abnormality, nodule, cancer, carcinoma, "
       "malignancy, metastasis, metastases", "", ALL_GROUPS),
    _s("polyp", "finding", "polypoid lesion, adenoma", "", (ENDO, CROSS)),
    _s("cyst", "finding", "cystic lesion", "", (CROSS, US)),
    _s("stone", "finding", "calculus, calculi, kidney stone, gallstone", "", (CROSS, US, XRAY)),
    _s("fracture", "finding", "broken bone", "", (CROSS, XRAY)),
    _s("hemorrhage", "finding", "haemorrhage, bleed, hematoma, haematoma", "", (CROSS, US, ENDO)),
    _s("effusion", "finding", "pleural effusion, fluid collection", "", (CROSS, US, XRAY)),
    _s("edema", "finding", "oedema", "", (CROSS,)),
    _s("ulcer", "finding", "ulceration, erosion", "", (ENDO, DERM)),
    _s("melanoma", "finding", "nevus, naevus, mole, skin lesion", "", (DERM,)),
    _s("exudate", "finding", "microaneurysm, drusen", "", (FUNDUS,)),
    _s("calcification", "finding", "calcified plaque, plaque", "", (CROSS, XRAY)),
    _s("aneurysm", "finding", "aneurysmal", "", (CROSS, US)),
    _s("thrombus", "finding", "clot, embolus", "", (CROSS, US)),
    _s("infarct", "finding", "infarction, ischemia, ischaemia", "", (CROSS,)),
    _s("abscess", "finding", "", "", (CROSS, US)),
)

BY_NAME: dict[str, Structure] = {s.name: s for s in STRUCTURES}
# Parts name their whole too: a label "heart_atrium_left" is also "the heart".
PARENTS: dict[str, str] = {"atrium": "heart", "cardiac ventricle": "heart", "myocardium": "heart"}

def modality_group(modality: str) -> str | None:
    low = modality.lower()
    for keys, group in MODALITY_GROUPS:
        if any(low == k or (len(k) > 3 and k in low) for k in keys):
            return group
    return None


def _plural(word: str) -> str:
    return word if word.endswith("s") else word + "s"


@lru_cache(maxsize=1)
def phrase_table() -> dict[str, tuple[tuple[tuple[str, ...], str], ...]]:
    """First token -> ((token tuple, structure name), …), longest phrases first: the matcher takes the longest hit."""
    rows: dict[tuple[str, ...], str] = {}
    for s in STRUCTURES:
        for syn in s.synonyms:
            tokens = tuple(syn.split())
            rows.setdefault(tokens, s.name)
            rows.setdefault((*tokens[:-1], _plural(tokens[-1])), s.name)
    table: dict[str, list[tuple[tuple[str, ...], str]]] = {}
    for phrase, name in sorted(rows.items(), key=lambda kv: -len(kv[0])):
        table.setdefault(phrase[0], []).append((phrase, name))
    return {k: tuple(v) for k, v in table.items()}


def find_phrases(tokens: list[str]) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, structure name) of every vocabulary phrase in a token list."""
    out: list[tuple[int, int, str]] = []
    table = phrase_table()
    i = 0
    while i < len(tokens):
        for phrase, name in table.get(tokens[i], ()):
            n = len(phrase)
            if tuple(tokens[i:i + n]) == phrase:
                out.append((i, i + n, name))
                i += n
                break
        else:
            i += 1
    return out


@lru_cache(maxsize=4096)
def structures_of_label(label: str) -> frozenset[str]:
    """Vocabulary structures a label name denotes: 'heart_atrium_left' -> {heart, atrium};
    'liver_tumor' -> {liver, lesion}. Side words and numbers are ignored."""
    tokens = [t for t in normalize_label(label).split("_") if t and t not in ("left", "right")]
    names = {name for _, _, name in find_phrases(tokens)}
    return frozenset(names | {PARENTS[n] for n in names if n in PARENTS})


def plausible(structure: str, modality: str, body_region: str) -> tuple[bool, str]:
    """Can this structure appear in an image of this modality and body region? (answer, why not)"""
    s = BY_NAME[structure]
    group = modality_group(modality)
    if group is not None and group not in s.modalities:
        return False, f"{structure} is not seen in {modality} images"
    region = (body_region or "unknown").lower()
    if s.regions and group in (CROSS, XRAY, US) and region in NEIGHBOUR_REGIONS:
        if not set(s.regions) & NEIGHBOUR_REGIONS[region]:
            return False, f"{structure} does not lie in the {region} region"
    return True, ""


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens and clause punctuation; hyphens split words ('left-sided' -> 'left', 'sided')."""
    return re.findall(r"[a-z]+|\d+(?:\.\d+)?|[,.;:!?()]", text.lower().replace("'s", " "))
