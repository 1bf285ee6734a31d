"""Licence status, so the card can flag non-commercial and unclear terms."""

from __future__ import annotations

import re

NON_COMMERCIAL = re.compile(
    r"\bnc\b|non-?commercial|non commercial|commercial (use|purposes).{0,40}(forbidden|not|prohibited)|"
    r"research and educational|research and education only|academic", re.IGNORECASE)
OPEN = re.compile(r"cc[ -]?by|cc0|public domain|bsd|apache|mit\b|gpl", re.IGNORECASE)


def license_status(text: str | None) -> str:
    """'non-commercial', 'open' or 'unclear' for a licence text."""
    if not text or text.strip().lower() in ("unknown", "none"):
        return "unclear"
    if NON_COMMERCIAL.search(text):
        return "non-commercial"
    if OPEN.search(text):
        return "open"
    return "unclear"
