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

from hti_rl.cli.base import COMMANDS
from hti_rl.cli.main import build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
