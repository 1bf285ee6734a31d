"""The ``[verification]`` section of a build config, parsed into typed settings with defaults.

```toml
[verification]
order = ["format", "geometry", "priors", "ambiguity", "judge"]   # cheapest first
stop_at_first_failure = true      # later (costlier) stages are skipped once one fails
min_query_chars = 8
max_query_chars = 300
max_query_words = 45
min_mask_area = 16                # pixels
bbox_tolerance = 0.5              # pixels between the box and the mask's extent
inside_fraction = 0.9             # share of the target inside the other mask for "in the X"
adjacency_px = 3                  # mask gap for "adjacent to the X"

[verification.judge]
mode = "auto"                     # auto (vlm if an endpoint is set, else evidence), vlm, evidence
model = ""                        # VLM model name; endpoint and key come from [vlm] / the environment
min_score = 0.6
reject_if_could_refer_to_other = true
box_color = [255, 0, 0]
box_width = 2
max_tokens = 300

[verification.evidence]
ring_px = 6
min_contrast = 0.4                # |mean_in - mean_ring| / std_ring
min_texture = 0.35                # |log(std_in / std_ring)|
```
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

STAGE_NAMES = ("format", "geometry", "priors", "ambiguity", "judge")


@dataclass(frozen=True)
class JudgeSettings:
    mode: str = "auto"
    model: str = ""
    min_score: float = 0.6
    reject_if_could_refer_to_other: bool = True
    box_color: tuple[int, int, int] = (255, 0, 0)
    box_width: int = 2
    max_tokens: int = 300
    prompt_version: str = "judge-v1"


@dataclass(frozen=True)
class EvidenceSettings:
    ring_px: int = 6
    min_contrast: float = 0.4
    min_texture: float = 0.35


@dataclass(frozen=True)
class VerificationSettings:
    order: tuple[str, ...] = STAGE_NAMES
    stop_at_first_failure: bool = True
    min_query_chars: int = 8
    max_query_chars: int = 300
    max_query_words: int = 45
    min_mask_area: int = 16
    bbox_tolerance: float = 0.5
    inside_fraction: float = 0.9
    adjacency_px: int = 3
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> VerificationSettings:
        """Build from a config section; unknown keys and stages fail loudly (a typo must not pass silently)."""
        data = dict(data or {})
        judge = _typed(JudgeSettings, data.pop("judge", {}), "verification.judge")
        evidence = _typed(EvidenceSettings, data.pop("evidence", {}), "verification.evidence")
        base = _typed(cls, data, "verification", skip={"judge", "evidence"})
        unknown = [s for s in base.order if s not in STAGE_NAMES]
        if unknown:
            raise ValueError(f"[verification] order: unknown stages {unknown} (known: {', '.join(STAGE_NAMES)})")
        if not base.order or base.order[0] != "format":
            raise ValueError("[verification] order must start with 'format': later stages need a readable sample")
        if judge.mode not in ("auto", "vlm", "evidence"):
            raise ValueError(f"[verification.judge] mode must be auto, vlm or evidence, got {judge.mode!r}")
        return cls(**{**base.__dict__, "judge": judge, "evidence": evidence})


def _typed(cls, data: dict[str, Any], section: str, skip: set[str] = frozenset()):
    names = {f.name: f for f in fields(cls) if f.name not in skip}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"[{section}]: unknown keys {unknown} (known: {', '.join(sorted(names))})")
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, float):
            value = float(value)
        values[key] = value
    return cls(**values)
