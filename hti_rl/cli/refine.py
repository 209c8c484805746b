"""Commands that grow the anchor set where it helps: ``suggest`` and ``refine``."""

from __future__ import annotations

import argparse

from hti_rl.cli.base import command, load_spec, spec_arguments
from hti_rl.errors import HTIError
from hti_rl.runs import RunDir


def _suggest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="task spec, e.g. envs/lqr1d.yaml")
    parser.add_argument("--run-root", default="runs", help="root of the run directories (default: runs)")


def _calibrated(spec, run_root: str):
    from hti_rl.methods.surrogate import SurrogatePolicy
    from hti_rl.runs import spec_hint

    run = RunDir.of(spec, run_root)
    if not run.surrogate.exists():
        raise HTIError(f"no surrogate at {run.surrogate}: run `hti-rl fit {spec_hint(spec)}` and `hti-rl calibrate {spec_hint(spec)}` first.")
    policy = SurrogatePolicy.load(run.surrogate, expect_fingerprint=spec.fingerprint())
    if policy.calibration is None:
        raise HTIError(f"{run.surrogate} is not calibrated: run `hti-rl calibrate {spec_hint(spec)}` first.")
    return policy


@command("suggest", "rank the weights where a refined anchor would help most (from the calibration)", _suggest_arguments)
def suggest_command(args: argparse.Namespace) -> int:
    from hti_rl.refine.suggest import suggest, table

    ranking = suggest(_calibrated(load_spec(args), args.run_root).calibration)
    print("gap = the bracketing anchors' own-weight returns, interpolated in the weight scale, minus the deployed estimate")
    print("\n".join(table(ranking)))
    if ranking[0].gap <= 0:
        print("no grid weight is below the anchors' line: the deployed policy already matches what the anchors reach; a refine may gain little")
    print(f"refine the top one with `hti-rl refine {args.spec} --weight {ranking[0].weight:.6g}` (or --weight auto)")
    return 0


def _refine_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    parser.add_argument("--weight", required=True, help="the weight to refine at, or `auto` (the top of `hti-rl suggest`)")
    parser.add_argument("--budget", type=float, default=0.25, help="training steps as a fraction of an anchor's budget (default: 0.25)")


@command("refine", "train briefly at a weight from the candidate deployed there, install it as an anchor, refit and recalibrate",
         _refine_arguments)
def refine_command(args: argparse.Namespace) -> int:
    from hti_rl.refine.run import check_refine, refine
    from hti_rl.refine.suggest import suggest

    spec = load_spec(args)
    if args.weight == "auto":
        weight = suggest(_calibrated(spec, args.run_root).calibration)[0].weight
        print(f"--weight auto: {weight:.6g}, the top of `hti-rl suggest`")
    else:
        try:
            weight = float(args.weight)
        except ValueError:
            raise HTIError(f"--weight takes a number or `auto`, got {args.weight!r}.") from None
    check_refine(spec, weight, args.budget, args.run_root, args.force)  # before any work
    done = refine(spec, weight, args.budget, args.run_root, force=args.force)
    print("\n".join(done.lines()))
    run = RunDir.of(spec, args.run_root)
    print(f"installed {run.anchor(weight)}; refitted {run.surrogate} and calibrated it again; TensorBoard: {run.tb()}")
    return 0
