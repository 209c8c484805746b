"""Commands that use a surrogate: ``deploy``, ``export``, ``demo``, ``compare``."""

from __future__ import annotations

import argparse

from hti_rl.cli.base import at_least, command
from hti_rl.runs import DEFAULT_ROOT


def _deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("surrogate", help="a surrogate file, e.g. runs/lqr2d/surrogate.zip")
    parser.add_argument("--weight", required=True, help="reward weight to deploy at; a vector a,b on a task that weighs several components")
    parser.add_argument("--spec", default=None,
                        help="task spec (default: the spec the surrogate was fitted from, when it lies in the run root or envs/)")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic ones")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="one episode after another, one observation per predict, as SB3's evaluate_policy on one env: "
                             "SB3's numbers for the same seeds (default: episodes side by side, one batched predict per step, "
                             "faster; its float results differ by ~1e-7 per action, which chaotic envs amplify)")
    parser.add_argument("--allow-extrapolation", action="store_true", help="accept a weight outside the anchor range")
    parser.add_argument("--render", action="store_true", help="show one episode on screen (render_mode='human')")
    parser.add_argument("--video", default=None, metavar="PATH.gif", help="record one episode to a GIF")
    parser.add_argument("--plain", action="store_true", help="the plain surrogate, ignoring a stored calibration")


@command("deploy", "evaluate a surrogate at a reward weight: mean return with its 95% CI", _deploy_arguments)
def deploy_command(args: argparse.Namespace) -> int:
    from hti_rl.errors import WeightError
    from hti_rl.evaluate import (
        check_render,
        evaluate_at,
        record_episode,
        renderable_specs,
    )
    from hti_rl.methods.base import read_policy_file
    from hti_rl.methods.origin import shipped_envs, spec_of_policy
    from hti_rl.methods.surrogate import SurrogatePolicy
    from hti_rl.seeds import check_seed
    from hti_rl.spec.load import load_task
    from hti_rl.weights import WeightAxis

    at_least(args.episodes, 1, "--episodes")
    check_seed(args.seed, "--seed")
    header, _ = read_policy_file(args.surrogate)
    if args.spec:
        spec = load_task(args.spec)
        if header.get("shared_start"):  # fitted on shared-start anchors: the spec with the same settings
            spec = spec.with_shared_start(**header["shared_start"])
    else:
        spec = spec_of_policy(args.surrogate, header)
    if isinstance(header["weights"][0], list):  # a grid surrogate: the weight is a vector
        return _deploy_vector(args, spec)
    args.weight = scalar_weight(args.weight, header)
    axis = WeightAxis(tuple(header.get("weights") or spec.anchors), header.get("weight_scale") or spec.weight_scale)
    axis.coord(args.weight)  # finite, and > 0 on a log scale
    if not args.allow_extrapolation and not axis.low <= args.weight <= axis.high:
        raise WeightError(f"weight {args.weight:g} is outside the anchor range {axis.range_text()}. Pick a weight in range, "
                          "train an anchor beyond it, or pass --allow-extrapolation to accept an untested extrapolation.")
    if args.render or args.video:  # before the rollouts: a task that cannot render fails at once
        check_render(spec, human=args.render, renderable=renderable_specs(shipped_envs(), human=args.render))
    policy = SurrogatePolicy.load(args.surrogate, expect_fingerprint=spec.fingerprint(), allow_extrapolation=args.allow_extrapolation,
                                  calibrated=not args.plain)
    policy.set_weight(args.weight)
    print("\n".join(policy.deployment().lines()))
    mean, half = evaluate_at(policy, spec, args.weight, args.episodes, args.seed, deterministic=not args.stochastic,
                             batched=not args.one_at_a_time)
    print(f"{spec.name} at weight {args.weight:g}: return {mean:.4g} ± {half:.3g} (95% CI, {args.episodes} episodes)")
    if args.render or args.video:
        path = record_episode(policy, spec, args.weight, args.seed, video=args.video, human=args.render)
        if path:
            print(f"wrote {path}")
    return 0


def scalar_weight(text: str, header: dict) -> float:
    """``--weight`` of a surrogate fitted for one weight.

    :raises WeightError: not one number (a vector, or not a number); the message says what to give.
    """
    from hti_rl.errors import WeightError
    from hti_rl.weights import parse_vector

    vector = parse_vector(text)
    if len(vector) != 1:
        raise WeightError(f"--weight {text} is a vector of {len(vector)} numbers, but {header.get('task')!r}'s surrogate weighs one "
                          f"component ({header['weights'][0]:g} … {header['weights'][-1]:g}); give one number.")
    return vector[0]


def _deploy_vector(args: argparse.Namespace, spec) -> int:
    """``deploy`` of a grid surrogate (or another grid policy) at a weight vector."""
    from hti_rl.evaluate import evaluate_at
    from hti_rl.methods.base import AnchoredPolicy
    from hti_rl.runs import weight_label

    if args.render or args.video:
        from hti_rl.errors import HTIError

        raise HTIError("--render and --video are not supported yet for a surrogate of several weights; drop them.")
    extra = {"calibrated": not args.plain} if holds_surrogate(args.surrogate) else {}
    policy = AnchoredPolicy.load(args.surrogate, expect_fingerprint=spec.fingerprint(), allow_extrapolation=args.allow_extrapolation, **extra)
    policy.set_weight(args.weight)
    label = weight_label(policy.weight)
    if hasattr(policy, "deployment"):
        print("\n".join(policy.deployment().lines()) + f"  [axes {', '.join(policy.grid.names)}]")
    else:
        print(f"deployed at weight {label} ({', '.join(policy.grid.names)}): {type(policy).__name__}")
    mean, half = evaluate_at(policy, spec, policy.weight, args.episodes, args.seed, deterministic=not args.stochastic,
                             batched=not args.one_at_a_time)
    print(f"{spec.name} at weight {label}: return {mean:.4g} ± {half:.3g} (95% CI, {args.episodes} episodes)")
    return 0


def holds_surrogate(path: str) -> bool:
    """Whether the policy file at ``path`` holds a (grid) surrogate, which may carry a calibration."""
    from hti_rl.methods.base import read_policy_file

    return read_policy_file(path)[0].get("policy_class") in ("SurrogatePolicy", "GridSurrogatePolicy")


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("surrogate", help="a surrogate file, e.g. runs/demo/surrogate.zip")
    parser.add_argument("--weight", required=True, help="reward weight the exported graph acts at (a vector a,b for several weights)")
    parser.add_argument("--format", default="onnx", help="onnx (onnxruntime; pip install 'hti-rl[export]') or torchscript (default: onnx)")
    parser.add_argument("-o", "--output", default=None, help="file to write (default: beside the surrogate, <name>_w=<weight>.<onnx|pt>)")
    parser.add_argument("--allow-extrapolation", action="store_true", help="accept a weight outside the anchor range")


@command("export", "write a surrogate at one weight as one ONNX or TorchScript graph (obs -> action, normalisation and clipping inside)",
         _export_arguments)
def export_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hti_rl.methods.export import export

    from hti_rl.methods.base import read_policy_file
    from hti_rl.weights import parse_vector

    source = Path(args.surrogate)
    header, _ = read_policy_file(source)
    weight = parse_vector(args.weight) if isinstance(header["weights"][0], list) else scalar_weight(args.weight, header)
    label = ",".join(f"{w:g}" for w in weight) if isinstance(weight, tuple) else f"{weight:g}"
    out = args.output or source.with_name(f"{source.stem}_w={label}.{'pt' if args.format == 'torchscript' else 'onnx'}")
    path = export(source, weight, args.format, out, allow_extrapolation=args.allow_extrapolation)
    print(f"wrote {path}: {args.format} graph of {source} at weight {label} (input obs [batch, C] float32, output action [batch, D])")
    return 0


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-root", default="runs", help="where runs/demo goes (default: runs)")
    parser.add_argument("--workers", type=int, default=2, help="anchors trained at once (default: 2)")
    parser.add_argument("--force", action="store_true", help="redo every stage")


@command("demo", "run the whole pipeline on the built-in 2-D LQR task and write a report", _demo_arguments)
def demo_command(args: argparse.Namespace) -> int:
    from hti_rl.compare.demo import run_demo

    run_demo(args.run_root, workers=args.workers, force=args.force)
    return 0


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment spec, e.g. experiments/lqr2d.yaml")
    parser.add_argument("--run-root", default=DEFAULT_ROOT, help=f"root of the run directories (default: {DEFAULT_ROOT})")
    parser.add_argument("--workers", type=int, default=1, help="agents trained at once (default: 1)")
    parser.add_argument("--force", action="store_true", help="refit the methods (training and recording are reused)")
    parser.add_argument("--train-only", action="store_true", help="stop after training anchors and retrained agents")


@command("compare", "surrogate vs retrained agents and baselines at held-out weights: report + TensorBoard", _compare_arguments)
def compare_command(args: argparse.Namespace) -> int:
    from hti_rl.compare.experiment import load_experiment
    from hti_rl.compare.run import run_compare

    run_compare(load_experiment(args.experiment), args.run_root, workers=args.workers, force=args.force, train_only=args.train_only)
    return 0
