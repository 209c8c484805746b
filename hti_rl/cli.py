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
from hti_rl.runs import RunDir


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


def shared_start_argument(parser: argparse.ArgumentParser) -> None:
    """``--shared-start``: the stages that train or use anchors can work on shared-start anchors."""
    parser.add_argument("--shared-start", action="store_true",
                        help="anchors fine-tuned from one shared base agent, in runs/<task>/shared/ "
                             "(the spec's shared_start settings, else: base at the middle weight)")


def load_spec(args: argparse.Namespace):
    """The task spec named on the command line, with shared-start anchors when ``--shared-start`` is given."""
    from hti_rl.spec.load import load_task

    spec = load_task(args.spec)
    return spec.with_shared_start() if getattr(args, "shared_start", False) else spec


# ----------------------------------------------------------------------------- train-anchors
def _train_anchors_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    shared_start_argument(parser)
    parser.add_argument("--workers", type=int, default=1, help="anchors trained at once (default: 1)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="local processes or Ray")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default: budget/10)")
    parser.add_argument("--no-check", action="store_true", help="skip the anchor check (check-anchors) after training")


@command("train-anchors", "train one SB3 agent per anchor weight (resumes after an interruption), then check them", _train_anchors_arguments)
def train_anchors_command(args: argparse.Namespace) -> int:
    from hti_rl.training.anchors import train_anchors

    spec = load_spec(args)
    finished = [w for w in spec.anchors if RunDir.of(spec, args.run_root).is_finished(w)]
    if not args.force:
        for w in finished:
            print(f"anchor w={w:g}: finished ({RunDir.of(spec, args.run_root).anchor(w)}), skipped; --force retrains it")
    if args.force or len(finished) < len(spec.anchors):
        metas = train_anchors(
            spec,
            run_root=args.run_root,
            workers=args.workers,
            backend=args.backend,
            force=args.force,
            checkpoint_every=args.checkpoint_every,
        )
        if spec.shared_start is not None:
            from hti_rl.training.shared_start import load_base_meta

            base = load_base_meta(spec, args.run_root)
            print(f"shared start: {base['algo']} at w={base['weight']:g}, {base['steps']} steps, {base['wall_time_s']:.1f} s; "
                  f"each anchor fine-tuned from it for {spec.shared_start.finetune_steps} steps")
        for meta in metas:
            resumed = f", resumed from step {meta['resumed_from']}" if meta.get("resumed_from") else ""
            seeds = ", ".join(f"{s['return_mean']:.4g}" for s in meta.get("seeds", []))
            best = f", best of seeds scoring [{seeds}] at its weight: seed {meta['seed_index']}" if seeds else ""
            took = f", {meta['wall_time_s']:.1f} s" if meta.get("wall_time_s") is not None else ", imported"
            print(f"anchor w={meta['weight']:g}: {meta['algo']} {meta['steps']} steps{took}{resumed}{best}")
    if not args.no_check:
        _check_anchors(spec, args.run_root, force=False)
    return 0


# ----------------------------------------------------------------------------- train-conditioned
def _train_conditioned_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    parser.add_argument("--budget-factor", type=float, default=1.0,
                        help="steps = factor × anchors × n_timesteps (default: 1, the anchors' total compute)")
    parser.add_argument("--workers", type=int, default=1, help="agents trained at once (default: 1)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default: budget/10)")


@command("train-conditioned", "train one agent that sees the weight in its observation, with the anchors' total compute (a peer baseline)",
         _train_conditioned_arguments)
def train_conditioned_command(args: argparse.Namespace) -> int:
    from hti_rl.training.conditioned import train_conditioned

    spec = load_spec(args)
    [meta] = train_conditioned(spec, [args.budget_factor], run_root=args.run_root, workers=args.workers, force=args.force,
                               checkpoint_every=args.checkpoint_every)
    resumed = f", resumed from step {meta['resumed_from']}" if meta.get("resumed_from") else ""
    print(f"conditioned agent (budget factor {meta['budget_factor']:g}): {meta['algo']} {meta['steps']} steps, "
          f"{meta['wall_time_s']:.1f} s{resumed} -> {RunDir.of(spec, args.run_root).conditioned(args.budget_factor)}")
    return 0


# ----------------------------------------------------------------------------- import-anchors
def _import_anchors_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    parser.add_argument("--anchor", action="append", default=[], metavar="W=PATH",
                        help="an SB3 model .zip or rl-zoo3 run folder to install as the anchor at weight W (repeatable)")
    parser.add_argument("--vecnormalize", action="append", default=[], metavar="W=PATH",
                        help="the vecnormalize.pkl of the model at weight W (read without running code; repeatable)")


@command("import-anchors", "install existing SB3 agents as the task's anchors (spaces checked); only import files you trust", _import_anchors_arguments)
def import_anchors_command(args: argparse.Namespace) -> int:
    from hti_rl.training.importing import import_anchors

    spec = load_spec(args)
    results = import_anchors(spec, _weight_paths(args.anchor, "--anchor"), _weight_paths(args.vecnormalize, "--vecnormalize"),
                             run_root=args.run_root, force=args.force)
    for r in results:
        imported = r.meta["imported"]
        norm = f" + {imported['vecnormalize']}" if imported.get("vecnormalize") else ""
        did = "unchanged, skipped (--force imports it again)" if r.status == "unchanged" else f"imported {r.meta['algo']} ({imported['kind']})"
        print(f"anchor w={r.weight:g}: {did} from {imported['source']}{norm} -> {RunDir.of(spec, args.run_root).anchor(r.weight)}")
    missing = [w for w in spec.anchors if not (RunDir.of(spec, args.run_root).anchor(w) / "meta.json").exists()]
    if missing:
        print(f"anchors still missing: {', '.join(f'{w:g}' for w in missing)} (import them, or `hti-rl train-anchors {args.spec}` trains them)")
    else:
        print(f"next: hti-rl check-anchors {args.spec}, then record and fit")
    return 0


def _weight_paths(pairs: Sequence[str], flag: str) -> list[tuple[str, str]]:
    """["0.1=a.zip"] -> [("0.1", "a.zip")] (weights checked by import_anchors)."""
    out = []
    for pair in pairs:
        weight, sep, path = pair.partition("=")
        if not sep or not weight.strip() or not path.strip():
            raise HTIError(f"{flag} takes WEIGHT=PATH, e.g. {flag} 0.1=models/ppo_0.1.zip; got {pair!r}")
        out.append((weight.strip(), path.strip()))
    return out


# ----------------------------------------------------------------------------- check-anchors
def _check_anchors_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    shared_start_argument(parser)


@command("check-anchors", "evaluate every anchor at every anchor weight and warn about bad anchors", _check_anchors_arguments)
def check_anchors_command(args: argparse.Namespace) -> int:

    _check_anchors(load_spec(args), args.run_root, args.force)
    return 0


def _check_anchors(spec, run_root: str, force: bool) -> None:
    """Cross-evaluate (or reuse the up-to-date ``cross_eval.json``) and print the table and warnings."""
    from hti_rl.quality import check_anchors, print_report, stale_reason

    fresh = not force and stale_reason(spec, run_root) is None
    cross = check_anchors(spec, run_root, force=force, log_warnings=False)
    print_report(cross)
    path = RunDir.of(spec, run_root).cross_eval
    print(f"{path} is up to date (--force evaluates again)" if fresh else f"wrote {path} and {path.with_suffix('.png')}")


# ----------------------------------------------------------------------------- record
def _record_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    shared_start_argument(parser)
    parser.add_argument("--seed", type=int, default=None, help="recording seed (default: the spec's seed)")


@command("record", "record every anchor's action distribution at the states the anchors visit", _record_arguments)
def record_command(args: argparse.Namespace) -> int:
    from hti_rl.dataset import record

    spec = load_spec(args)
    path = RunDir.of(spec, args.run_root).dataset
    if path.exists() and not args.force:
        print(f"{path} exists, skipped; --force records it again")
        return 0
    data = record(spec, run_root=args.run_root, seed=args.seed)
    k, n, m, d = data.samples.shape
    print(f"wrote {path}: {k} anchors × {n} states × {m} samples, action dim {d}")
    return 0


# ----------------------------------------------------------------------------- fit
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
        print(f"{path} exists, skipped; --force fits again")
        return 0
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


# ----------------------------------------------------------------------------- deploy
def _deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("surrogate", help="a surrogate file, e.g. runs/lqr2d/surrogate.zip")
    parser.add_argument("--weight", type=float, required=True, help="reward weight to deploy at")
    parser.add_argument("--spec", default=None, help="task spec (default: envs/<task>.yaml of the surrogate's task)")
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic ones")
    parser.add_argument("--allow-extrapolation", action="store_true", help="accept a weight outside the anchor range")
    parser.add_argument("--render", action="store_true", help="show one episode on screen (render_mode='human')")
    parser.add_argument("--video", default=None, metavar="PATH.gif", help="record one episode to a GIF")


@command("deploy", "evaluate a surrogate at a reward weight: mean return with its 95%% CI", _deploy_arguments)
def deploy_command(args: argparse.Namespace) -> int:
    from hti_rl.evaluate import evaluate_at, record_episode
    from hti_rl.methods.base import read_policy_file
    from hti_rl.methods.surrogate import SurrogatePolicy
    from hti_rl.spec.load import load_task

    header, _ = read_policy_file(args.surrogate)
    spec = load_task(args.spec or f"envs/{header.get('task')}.yaml")
    if header.get("shared_start"):  # fitted on shared-start anchors: the spec with the same settings
        spec = spec.with_shared_start(**header["shared_start"])
    policy = SurrogatePolicy.load(args.surrogate, expect_fingerprint=spec.fingerprint(), allow_extrapolation=args.allow_extrapolation)
    policy.set_weight(args.weight)
    mean, half = evaluate_at(policy, spec, args.weight, args.episodes, args.seed, deterministic=not args.stochastic)
    print(f"{spec.name} at weight {args.weight:g}: return {mean:.4g} ± {half:.3g} (95% CI, {args.episodes} episodes)")
    if args.render or args.video:
        path = record_episode(policy, spec, args.weight, args.seed, video=args.video, human=args.render)
        if path:
            print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------- export
def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("surrogate", help="a surrogate file, e.g. runs/demo/surrogate.zip")
    parser.add_argument("--weight", type=float, required=True, help="reward weight the exported graph acts at")
    parser.add_argument("--format", default="onnx", help="onnx (onnxruntime; pip install 'hti-rl[export]') or torchscript (default: onnx)")
    parser.add_argument("-o", "--output", default=None, help="file to write (default: beside the surrogate, <name>_w=<weight>.<onnx|pt>)")
    parser.add_argument("--allow-extrapolation", action="store_true", help="accept a weight outside the anchor range")


@command("export", "write a surrogate at one weight as one ONNX or TorchScript graph (obs -> action, normalisation and clipping inside)",
         _export_arguments)
def export_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hti_rl.methods.export import export

    source = Path(args.surrogate)
    out = args.output or source.with_name(f"{source.stem}_w={args.weight:g}.{'pt' if args.format == 'torchscript' else 'onnx'}")
    path = export(source, args.weight, args.format, out, allow_extrapolation=args.allow_extrapolation)
    print(f"wrote {path}: {args.format} graph of {source} at weight {args.weight:g} (input obs [batch, C] float32, output action [batch, D])")
    return 0


# ----------------------------------------------------------------------------- demo
def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-root", default="runs", help="where runs/demo goes (default: runs)")
    parser.add_argument("--workers", type=int, default=2, help="anchors trained at once (default: 2)")
    parser.add_argument("--force", action="store_true", help="redo every stage")


@command("demo", "run the whole pipeline on the built-in 2-D LQR task and write a report", _demo_arguments)
def demo_command(args: argparse.Namespace) -> int:
    from hti_rl.compare.demo import run_demo

    run_demo(args.run_root, workers=args.workers, force=args.force)
    return 0


# ----------------------------------------------------------------------------- compare
def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment spec, e.g. experiments/lqr2d.yaml")
    parser.add_argument("--run-root", default="runs", help="root of the run directories (default: runs)")
    parser.add_argument("--workers", type=int, default=1, help="agents trained at once (default: 1)")
    parser.add_argument("--force", action="store_true", help="refit the methods (training and recording are reused)")
    parser.add_argument("--train-only", action="store_true", help="stop after training anchors and retrained agents")


@command("compare", "surrogate vs retrained agents and baselines at held-out weights: report + TensorBoard", _compare_arguments)
def compare_command(args: argparse.Namespace) -> int:
    from hti_rl.compare.experiment import load_experiment
    from hti_rl.compare.run import run_compare

    run_compare(load_experiment(args.experiment), args.run_root, workers=args.workers, force=args.force, train_only=args.train_only)
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
