"""Where the per-case stages run: this machine's process pool (``local``) or a Ray cluster (``ray``).

The choice changes where work happens, never what it produces. The Ray backend (``builder.ray_executor``)
is imported only when chosen, so a local build never imports ray, which is an optional extra.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from types import ModuleType

from builder.config import BuildConfig

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Executor:
    kind: str = "local"
    address: str | None = None  # Ray cluster; None: $RAY_ADDRESS, else a Ray instance started on this machine

    @classmethod
    def from_options(cls, config: BuildConfig, kind: str | None = None, address: str | None = None) -> Executor:
        """Command-line options over ``[build] executor`` / ``[build] ray_address``."""
        section = config.section("build")
        kind = kind or section.get("executor", "local")
        if kind not in EXECUTORS:
            raise ValueError(f"[build] executor must be one of {EXECUTORS}, got {kind!r}")
        return cls(kind, address or section.get("ray_address"))

    @property
    def is_ray(self) -> bool:
        return self.kind == "ray"

    def ray(self) -> ModuleType:
        """The Ray backend, connected to the cluster."""
        try:
            from builder import ray_executor
        except ImportError as exc:
            raise SystemExit("--executor ray needs Ray: pip install 'medground[ray]' (or make setup-ray)") from exc
        ray_executor.connect(self.address)
        return ray_executor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=EXECUTORS,
                        help="run per-case stages in local processes or on a Ray cluster (default: [build] executor or local)")
    parser.add_argument("--ray-address", help="Ray cluster to join, e.g. ray://head:10001 or head:6379 "
                                              "(default: [build] ray_address, $RAY_ADDRESS, else a local Ray instance)")
