"""Commands that make anchors: ``train-anchors``, ``train-conditioned``, ``import-anchors``, ``check-anchors``."""

from __future__ import annotations

import argparse
from typing import Sequence

from hti_rl.cli.base import (
    at_least,
    command,
    load_spec,
    positive_int,
    shared_start_argument,
    spec_arguments,
)
from hti_rl.errors import HTIError
from hti_rl.runs import RunDir, weight_label


def _text(weight: object) -> str:
    """A weight as the commands print it: ``f"{λ:g}"``, or a vector's ``0.1,10``."""
    return weight_label(tuple(weight)) if isinstance(weight, (list, tuple)) else f"{weight:g}"  # type: ignore[arg-type]


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

    at_least(args.workers, 1, "--workers")
    at_least(args.checkpoint_every, 1, "--checkpoint-every")
    spec = load_spec(args)
    finished = [w for w in spec.anchors if RunDir.of(spec, args.run_root).is_finished(w)]
    if not args.force:
        for w in finished:
            print(f"anchor w={_text(w)}: finished ({RunDir.of(spec, args.run_root).anchor(w)}), skipped; --force retrains it")
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
            print(f"anchor w={_text(meta['weight'])}: {meta['algo']} {meta['steps']} steps{took}{resumed}{best}")
    if not args.no_check:
        _check_anchors(spec, args.run_root, force=False)
    return 0


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

    at_least(args.workers, 1, "--workers")
    at_least(args.checkpoint_every, 1, "--checkpoint-every")
    spec = load_spec(args)
    [meta] = train_conditioned(spec, [args.budget_factor], run_root=args.run_root, workers=args.workers, force=args.force,
                               checkpoint_every=args.checkpoint_every)
    resumed = f", resumed from step {meta['resumed_from']}" if meta.get("resumed_from") else ""
    print(f"conditioned agent (budget factor {meta['budget_factor']:g}): {meta['algo']} {meta['steps']} steps, "
          f"{meta['wall_time_s']:.1f} s{resumed} -> {RunDir.of(spec, args.run_root).conditioned(args.budget_factor)}")
    return 0


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


def _check_anchors_arguments(parser: argparse.ArgumentParser) -> None:
    spec_arguments(parser)
    shared_start_argument(parser)
    parser.add_argument("--episodes", type=positive_int, default=None,
                        help="episodes per anchor (default: the spec's eval_episodes, at least 10); with --episodes or "
                             "--seed the result is printed, and cross_eval.json (what fit checks) is left as it is")
    parser.add_argument("--seed", type=int, default=None, help="reset seed of the first episode (default: the task's cross-evaluation seed)")


@command("check-anchors", "evaluate every anchor at every anchor weight and warn about bad anchors", _check_anchors_arguments)
def check_anchors_command(args: argparse.Namespace) -> int:

    _check_anchors(load_spec(args), args.run_root, args.force, args.episodes, args.seed)
    return 0


def _check_anchors(spec, run_root: str, force: bool, episodes: int | None = None, seed: int | None = None) -> None:
    """Cross-evaluate (or reuse the up-to-date ``cross_eval.json``) and print the table and warnings."""
    from hti_rl.cross_eval import stale_reason
    from hti_rl.quality import check_anchors, is_default
    from hti_rl.quality_report import print_report

    fresh = not force and stale_reason(spec, run_root) is None
    cross = check_anchors(spec, run_root, force=force, log_warnings=False, episodes=episodes, seed=seed)
    print_report(cross)
    path = RunDir.of(spec, run_root).cross_eval
    if not is_default(spec, episodes, seed):
        print(f"not saved: {path} keeps the default episodes, which `hti-rl fit` checks")
    else:
        print(f"{path} is up to date (--force evaluates again)" if fresh else f"wrote {path} and {path.with_suffix('.png')}")
