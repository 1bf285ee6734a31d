"""Build configuration (TOML). Each stage owns its own section and parses it into its own dataclass;
this module reads the file, resolves source paths against the config's folder and keeps the raw dict."""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.records import ORIENTATIONS, SourceSpec

SOURCE_KEYS = {"name", "format", "path", "modality", "body_region", "license", "labels", "orientation", "window"}


@dataclass
class BuildConfig:
    sources: list[SourceSpec]
    raw: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.raw.get(name, {}))

    @property
    def seed(self) -> int:
        return int(self.raw.get("build", {}).get("seed", 0))

    def digest(self) -> str:
        """A short hash of the configuration (secrets never live in it: keys come from the environment)."""
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def reject_unknown(section: str, data: dict[str, Any], *allowed: Any) -> None:
    """A typo in a config key must fail loudly, not fall back to a default silently."""
    known = set().union(*(set(a) for a in allowed))
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"[{section}] has unknown keys {unknown}; known: {', '.join(sorted(known))}")


def source_spec(entry: dict[str, Any], base: Path) -> SourceSpec:
    missing = [k for k in ("name", "format", "path") if k not in entry]
    if missing:
        raise ValueError(f"[[sources]] entry {entry!r} lacks {', '.join(missing)}")
    if entry.get("orientation") and entry["orientation"] not in ORIENTATIONS:
        raise ValueError(f"source '{entry['name']}': orientation must be one of {ORIENTATIONS}")
    path = Path(entry["path"]).expanduser()
    if not path.is_absolute():
        path = (base / path).resolve()
    labels = entry.get("labels")
    return SourceSpec(
        name=entry["name"], format=entry["format"], path=str(path), modality=entry.get("modality"),
        body_region=entry.get("body_region"), license=entry.get("license"),
        labels={int(k): str(v) for k, v in labels.items()} if labels else None,
        orientation=entry.get("orientation"), window=entry.get("window"),
        options={k: v for k, v in entry.items() if k not in SOURCE_KEYS},
    )


def parse_source_arg(text: str) -> SourceSpec:
    """``FORMAT:PATH`` from the command line; the source is named after the path's last part."""
    fmt, sep, path = text.partition(":")
    if not sep or not path:
        raise ValueError(f"--source expects FORMAT:PATH, got '{text}'")
    resolved = Path(path).expanduser().resolve()
    return SourceSpec(name=resolved.stem if resolved.is_file() else resolved.name, format=fmt, path=str(resolved))


def load_config(path: Path | str | None, extra_sources: list[str] | None = None) -> BuildConfig:
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        base = path.resolve().parent
    sources = [source_spec(entry, base) for entry in raw.get("sources", [])]
    sources += [parse_source_arg(s) for s in extra_sources or []]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique, got {names}")
    return BuildConfig(sources=sources, raw=raw, path=Path(path) if path else None)
