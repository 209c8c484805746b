"""Commands that make the surrogate file: ``record``, ``fit``, ``calibrate``."""

from __future__ import annotations

import argparse
from typing import Sequence

from hti_rl.cli.base import command, load_spec, shared_start_argument, spec_arguments
from hti_rl.errors import HTIError
from hti_rl.runs import RunDir


def _record_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    shared_start_argument(parser)
    parser.add_argument("--seed", type=int, default=None, help="recording seed (default: the spec's seed)")


@command("record", "record every anchor's action distribution at the states the anchors visit", _record_arguments)
def record_command(args: argparse.Namespace) -> int:
    from hti_rl.dataset import record
    from hti_rl.seeds import check_seed

    if args.seed is not None:
        check_seed(args.seed, "--seed")
    spec = load_spec(args)
    path = RunDir.of(spec, args.run_root).dataset
    if path.exists() and not args.force:
        from hti_rl.dataset import stale_reason

        stale = stale_reason(spec, args.run_root)
        if stale is None:
            print(f"{path} exists, skipped; --force records it again")
            return 0
        print(f"recording again: {stale}")
    data = record(spec, run_root=args.run_root, seed=args.seed)
    k, n, m, d = data.samples.shape
    print(f"wrote {path}: {k} anchors × {n} states × {m} samples, action dim {d}")
    return 0


def _fit_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    shared_start_argument(parser)
    parser.add_argument("--accept-anchors", action="store_true", help="fit even when check-anchors warned about the anchors")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a CLOT setting, e.g. --set steps=1000 --set metric=euclidean (repeatable)",
    )


@command("fit", "fit the CLOT surrogate on the recorded dataset (runs/<task>/surrogate.zip)", _fit_arguments)
def fit_command(args: argparse.Namespace) -> int:
    from hti_rl.methods.surrogate import clot_config, fit
    from hti_rl.quality import require_good_anchors

    spec = load_spec(args)
    path = RunDir.of(spec, args.run_root).surrogate
    if path.exists() and not args.force:
        from hti_rl.methods.surrogate import stale_reason

        stale = stale_reason(spec, args.run_root)
        if stale is None:
            print(f"{path} exists, skipped; --force fits again")
            return 0
        print(f"fitting again: {stale}")
    require_good_anchors(spec, args.run_root, accept=args.accept_anchors)
    config = clot_config(_key_values(args.set), seed=spec.seed)
    policy = fit(spec, args.run_root, config)
    print(f"wrote {path} (fit {policy.header['fit_seconds']:.1f} s); TensorBoard: {RunDir.of(spec, args.run_root).tb()}")
    return 0


def _key_values(pairs: Sequence[str]) -> dict[str, str]:
    """["a=1", "b=x"] -> {"a": "1", "b": "x"}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise HTIError(f"--set takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    shared_start_argument(parser)
    parser.add_argument("--per-interval", type=int, default=3, help="grid points inside each anchor interval (default: 3)")
    parser.add_argument("--episodes", type=int, default=30, help="episodes per set, choosing and estimating (default: 30)")
    parser.add_argument("--seed", type=int, default=None, help="calibration seed (default: the spec's seed)")


@command("calibrate", "measure every candidate (anchors, surrogate, parameter interpolation) on a grid of weights and store "
         "the best at each in surrogate.zip", _calibrate_arguments)
def calibrate_command(args: argparse.Namespace) -> int:
    from hti_rl.deploy.calibrate import calibrate, check_settings, summary

    check_settings(args.per_interval, args.episodes)
    spec = load_spec(args)
    calibration, cost = calibrate(spec, args.run_root, args.per_interval, args.episodes, args.seed, args.force)
    print("\n".join(summary(calibration, cost)))
    run = RunDir.of(spec, args.run_root)
    figure = f" and {run.calibration() / 'calibration.png'}" if spec.grid.dim <= 2 else ""  # one or two weight axes
    print(f"wrote {run.surrogate} (calibrated){figure}; TensorBoard: {run.tb('calibrate')}")
    return 0
