"""The ``hti-rl`` entry point: the parser of every registered command, and the one place errors become
``error:`` lines with exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from hti_rl import __version__
from hti_rl.cli.base import COMMANDS
from hti_rl.errors import HTIError

# Each module registers its commands when imported; in this order they appear in `hti-rl --help`,
# the order of the pipeline.
for _module in ("train", "fit", "refine", "run"):
    importlib.import_module(f"hti_rl.cli.{_module}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hti-rl", description="Change a reward weight after training (CLOT surrogate policies for SB3).")
    parser.add_argument("--version", action="version", version=f"hti-rl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.arguments(sub.add_parser(name, help=cmd.help.replace("%", "%%"), description=cmd.help))  # help is %-formatted
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hti-rl``; returns the exit code (2 for a user error, printed without a traceback)."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except HTIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the command again to resume", file=sys.stderr)
        return 130
