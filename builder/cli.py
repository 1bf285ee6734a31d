"""``python -m builder COMMAND``: one subcommand per stage; each stage module registers its own."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Modules exposing ``register(subparsers)``, which adds a subcommand whose ``func(args) -> int`` runs it.
COMMAND_MODULES = [
    "builder.build",
    "builder.candidates",
    "builder.evaluate",
    "builder.phantom",
    "builder.preview",
    "builder.push",
    "builder.queries",
    "verification.cli",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m builder", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return int(args.func(args) or 0)
