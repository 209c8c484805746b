"""The ``hti-rl`` command: one subcommand per pipeline stage.

Each subcommand is a function ``(args) -> exit code`` registered with :func:`command`, together with
a function that declares its arguments. To add one (``fit``, ``deploy``, ``compare``, ...)::

    def _fit_arguments(parser: argparse.ArgumentParser) -> None:
        spec_arguments(parser)
        parser.add_argument("--steps", type=int)

    @command("fit", "fit the CLOT surrogate on the recorded dataset", _fit_arguments)
    def fit(args: argparse.Namespace) -> int:
        ...
        return 0

Errors meant for users (:class:`hti_rl.errors.HTIError`) print as ``error: <message>`` with exit
code 2 and no traceback. Heavy modules are imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from hti_rl import __version__
from hti_rl.errors import HTIError


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, a function adding its arguments, and the function running it."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated function as subcommand ``name``."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = Command(help, arguments, run)
        return run

    return register


def spec_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every stage takes: the task spec, the run root, and ``--force``."""
    parser.add_argument("spec", help="task spec, e.g. envs/lqr1d.yaml")
    parser.add_argument("--run-root", default="runs", help="root of the run directories (default: runs)")
    parser.add_argument("--force", action="store_true", help="redo the stage even if it has finished")


# ----------------------------------------------------------------------------- train-anchors
def _train_anchors_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    parser.add_argument("--workers", type=int, default=1, help="anchors trained at once (default: 1)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="local processes or Ray")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default: budget/10)")


@command("train-anchors", "train one SB3 agent per anchor weight (resumes after an interruption)", _train_anchors_arguments)
def train_anchors_command(args: argparse.Namespace) -> int:
    from hti_rl.anchors import anchor_dir, is_finished, train_anchors
    from hti_rl.tasks import load_task

    spec = load_task(args.spec)
    finished = [w for w in spec.anchors if is_finished(spec, w, args.run_root)]
    if not args.force:
        for w in finished:
            print(f"anchor w={w:g}: finished ({anchor_dir(spec, w, args.run_root)}), skipped; --force retrains it")
        if len(finished) == len(spec.anchors):
            return 0
    metas = train_anchors(
        spec,
        run_root=args.run_root,
        workers=args.workers,
        backend=args.backend,
        force=args.force,
        checkpoint_every=args.checkpoint_every,
    )
    for meta in metas:
        resumed = f", resumed from step {meta['resumed_from']}" if meta.get("resumed_from") else ""
        print(f"anchor w={meta['weight']:g}: {meta['algo']} {meta['steps']} steps, {meta['wall_time_s']:.1f} s{resumed}")
    return 0


# ----------------------------------------------------------------------------- record
def _record_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    parser.add_argument("--seed", type=int, default=None, help="recording seed (default: the spec's seed)")


@command("record", "record every anchor's action distribution at the states the anchors visit", _record_arguments)
def record_command(args: argparse.Namespace) -> int:
    from hti_rl.dataset import dataset_path, record
    from hti_rl.tasks import load_task

    spec = load_task(args.spec)
    path = dataset_path(spec, args.run_root)
    if path.exists() and not args.force:
        print(f"{path} exists, skipped; --force records it again")
        return 0
    data = record(spec, run_root=args.run_root, seed=args.seed)
    k, n, m, d = data.samples.shape
    print(f"wrote {path}: {k} anchors × {n} states × {m} samples, action dim {d}")
    return 0


# ----------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hti-rl", description="Change a reward weight after training (CLOT surrogate policies for SB3).")
    parser.add_argument("--version", action="version", version=f"hti-rl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.arguments(sub.add_parser(name, help=cmd.help, description=cmd.help))
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


if __name__ == "__main__":
    sys.exit(main())
