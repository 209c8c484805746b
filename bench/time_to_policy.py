"""Time to a policy at a new weight: the surrogate (set_weight + first predict) vs retraining an agent.

Both retraining figures are printed side by side, measured in this run:
- "recorded": the anchors' own training wall time from their meta.json (full budget, as trained);
- "measured": one agent trained here for ``--fraction`` of the budget, scaled up linearly.
And the total compute for a curve of 11 weights: anchors' training + record + fit vs 11 retrained agents.

    python bench/time_to_policy.py                                   # the demo's run (`hti-rl demo` first)
    python bench/time_to_policy.py experiments/lqr2d.yaml [--fraction 0.05]

An experiment needs its anchors, dataset and fitted surrogate (``hti-rl compare`` makes them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", nargs="?", default=None, help="experiment yaml (default: the demo's run)")
    parser.add_argument("--run-root", default="runs")
    parser.add_argument("--fraction", type=float, default=0.05, help="share of the budget retrained here (then scaled)")
    args = parser.parse_args()

    from hti_rl.compare.experiment import load_experiment
    from hti_rl.methods.base import AnchoredPolicy
    from hti_rl.runs import RunDir
    from hti_rl.spec.load import load_task
    from hti_rl.training.anchors import train_anchors

    if args.experiment is None:
        from hti_rl.runs import RunDir

        spec = load_task(Path(args.run_root) / "demo" / "spec" / "envs" / "demo.yaml")
        variant, path = "surrogate", RunDir.of(spec, args.run_root).surrogate
        timings_path = RunDir.of(spec, args.run_root).path / "demo" / "timings.json"
    else:
        exp = load_experiment(args.experiment)
        spec = load_task(exp.task)
        variant = f"clot/{next(iter(exp.variants))}"
        path = RunDir.of(spec, args.run_root).method(variant)
        timings_path = RunDir.of(spec, args.run_root).path / "compare" / "timings.json"
    policy = AnchoredPolicy.load(path, expect_fingerprint=spec.fingerprint())
    weight = spec.held_out[len(spec.held_out) // 2]
    obs = spec.make_env(weight).reset(seed=0)[0]
    started = time.perf_counter()
    policy.set_weight(weight)
    policy.predict(obs, deterministic=True)
    surrogate_s = time.perf_counter() - started

    metas = [json.loads((RunDir.of(spec, args.run_root).anchor(w) / "meta.json").read_text()) for w in spec.anchors]
    recorded_s = float(np.mean([m["wall_time_s"] for m in metas]))
    budget = int(spec.hyperparams()["n_timesteps"])
    steps = max(int(budget * args.fraction), 1)
    with tempfile.TemporaryDirectory() as tmp:
        small = dataclasses.replace(spec, anchors=(weight,), n_timesteps=steps)
        started = time.perf_counter()
        train_anchors(small, tmp, progress=False)
        measured_s = (time.perf_counter() - started) * budget / steps

    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    record_s = float(timings.get("record", float("nan")))
    fit_s = float(policy.header.get("fit_seconds", float("nan")))
    anchors_s = float(sum(m["wall_time_s"] for m in metas))
    pipeline_s = anchors_s + record_s + fit_s

    print(f"task {spec.name}: {spec.algo} budget {budget} steps; surrogate {variant} ({path}); new weight λ = {weight:g}")
    print(f"{'quantity':<58} {'seconds':>12} {'ratio':>12}")
    print(f"{'surrogate: set_weight + first predict':<58} {surrogate_s:>12.4g}")
    print(f"{'retrain one agent, recorded (anchors meta.json, mean)':<58} {recorded_s:>12.4g} {surrogate_s / recorded_s:>12.3g}")
    print(f"{f'retrain one agent, measured ({steps} steps here, scaled)':<58} {measured_s:>12.4g} {surrogate_s / measured_s:>12.3g}")
    print(f"{'curve of 11 weights: anchors + record + fit':<58} {pipeline_s:>12.4g}")
    print(f"{'curve of 11 weights: 11 retrained (recorded per-agent time)':<58} {11 * recorded_s:>12.4g} {pipeline_s / (11 * recorded_s):>12.3g}")
    print(f"({len(spec.anchors)} anchors {anchors_s:.4g} s, record {record_s:.4g} s, fit {fit_s:.4g} s; ratios = surrogate side / retraining side)")


if __name__ == "__main__":
    main()
