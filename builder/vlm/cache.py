"""Content-addressed SQLite cache of VLM responses, shared by every stage that calls a model.

Why SQLite: several processes (a build, a judge, an eval run) may hit the same cache at once; WAL mode and
a busy timeout make that safe without a server. Only *results* are stored: successful responses and
deterministic failures (4xx other than 429). Transient failures are never written, so a rerun retries
them instead of replaying a stale error (distilabel's trap).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    stage TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,          -- "ok" or "error"
    payload TEXT NOT NULL,       -- JSON: text/refusal/finish_reason/usage, or status/message
    created REAL NOT NULL
)
"""


def _strip_images(value: Any) -> Any:
    """Replace every data URL (an image) by its SHA-256 so keys stay small and image-exact."""
    if isinstance(value, dict):
        return {k: _strip_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_images(v) for v in value]
    if isinstance(value, str) and value.startswith("data:"):
        return "sha256:" + hashlib.sha256(value.encode("ascii", "replace")).hexdigest()
    return value


def cache_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any], prompt_version: str) -> str:
    """SHA-256 over model, messages (images by hash), request parameters and prompt version."""
    blob = json.dumps({"model": model, "messages": _strip_images(messages), "params": params,
                       "prompt_version": prompt_version}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A key -> response store; one connection per process, safe for concurrent processes."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(SCHEMA)

    def get(self, key: str) -> tuple[str, dict[str, Any]] | None:
        row = self._conn.execute("SELECT kind, payload FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def contains(self, key: str) -> bool:
        return self._conn.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def put(self, key: str, *, stage: str, model: str, kind: str, payload: dict[str, Any]) -> None:
        if kind not in ("ok", "error"):
            raise ValueError(f"cache kind must be 'ok' or 'error', got {kind!r}")
        self._conn.execute(
            "INSERT OR REPLACE INTO responses (key, stage, model, kind, payload, created) VALUES (?, ?, ?, ?, ?, ?)",
            (key, stage, model, kind, json.dumps(payload, ensure_ascii=False), time.time()))

    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._conn.close()
