"""What every ``hti-rl`` command shares: the command registry (:func:`command`), common arguments, and
the checks of numbers given on the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from hti_rl.errors import HTIError
from hti_rl.runs import DEFAULT_ROOT


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
    parser.add_argument("--run-root", default=DEFAULT_ROOT, help=f"root of the run directories (default: {DEFAULT_ROOT})")
    parser.add_argument("--force", action="store_true", help="redo the stage even if it has finished")


def shared_start_argument(parser: argparse.ArgumentParser) -> None:
    """``--shared-start``: the stages that train or use anchors can work on shared-start anchors."""
    parser.add_argument("--shared-start", action="store_true",
                        help="anchors fine-tuned from one shared base agent, in runs/<task>/shared/ "
                             "(the spec's shared_start settings, else: base at the middle weight)")


def at_least(value: int | None, minimum: int, flag: str) -> None:
    """Refuse ``flag``'s value below ``minimum`` (``None``: not given) before any work starts."""
    if value is not None and value < minimum:
        raise HTIError(f"{flag} must be ≥ {minimum}, got {value}.")


def load_spec(args: argparse.Namespace):
    """The task spec named on the command line, with shared-start anchors when ``--shared-start`` is given,
    else with the anchors ``hti-rl refine`` added under the run root (``runs/<task>/refined.json``)."""
    from hti_rl.spec.load import load_task
    from hti_rl.training.store import with_refined_anchors

    spec = load_task(args.spec)
    if getattr(args, "shared_start", False):
        return spec.with_shared_start()
    return with_refined_anchors(spec, getattr(args, "run_root", DEFAULT_ROOT))


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value

