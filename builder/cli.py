"""``python -m builder COMMAND``: one subcommand per stage; each stage module registers its own.

Only the chosen command's module is imported: the stages pull in heavy libraries (datasets, openai),
and a command should not pay for the others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command -> (module exposing ``register(subparsers)``, one-line help for the listing)
COMMANDS = {
    "build": ("builder.build", "the whole pipeline into a Hub-ready dataset folder"),
    "candidates": ("builder.candidates", "extract grounding targets with cues from segmentation sources"),
    "queries": ("builder.queries", "write referring queries for candidates (VLM or offline writer)"),
    "verify": ("verification.cli", "verify queries: format, geometry, priors, ambiguity, judge"),
    "push": ("builder.push", "publish a built folder to the Hugging Face Hub"),
    "preview": ("builder.preview", "static HTML gallery of kept and rejected samples"),
    "eval": ("builder.evaluate", "score a VLM's grounding on a built dataset"),
    "phantom": ("builder.phantom", "write the synthetic demo phantom (MSD layout)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m builder", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return int(args.func(args) or 0)
