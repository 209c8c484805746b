"""Predict latency of the surrogate vs SB3's own PPO policy, on the same observations, in one run.

    python bench/predict_latency.py                       # uses runs/demo (run `hti-rl demo` first)
    python bench/predict_latency.py --spec envs/lqr2d.yaml --surrogate runs/lqr2d/compare/clot-full.zip

Prints the median time per ``predict`` call at batch 1 and batch 256 for: the SB3 PPO model of the
first anchor (``model.predict``), the surrogate at an anchor weight (one actor), and the surrogate at a
held-out weight (two actors + the CLOT path), deterministic and stochastic, and the ratios. When the
task's shared-start anchors and their dataset exist (``hti-rl train-anchors/record --shared-start``),
also parameter interpolation of those anchors at the held-out weight (one blended actor).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from hti_rl.dataset import PolicyDataset
from hti_rl.evaluate import time_call
from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.baselines import fit_param_interp
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task
from hti_rl.training.store import load_anchor, load_anchor_actor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="runs/demo/spec/envs/demo.yaml")
    parser.add_argument("--run-root", default="runs")
    parser.add_argument("--surrogate", default=None, help="a fitted policy file (default: the task's surrogate.zip)")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)

    spec = load_task(args.spec)
    path = Path(args.surrogate) if args.surrogate else RunDir.of(spec, args.run_root).surrogate
    if not path.exists():
        print(f"no surrogate at {path}: run `hti-rl demo` (or the pipeline for {args.spec}) first", file=sys.stderr)
        return 1
    surrogate = AnchoredPolicy.load(path, expect_fingerprint=spec.fingerprint())
    interp = None
    shared = spec.with_shared_start()
    if all(RunDir.of(shared, args.run_root).is_finished(w) for w in spec.anchors) and RunDir.of(shared, args.run_root).dataset.exists():
        actors = [load_anchor_actor(shared, w, args.run_root) for w in spec.anchors]
        interp = fit_param_interp(shared, PolicyDataset.load(RunDir.of(shared, args.run_root).dataset, shared), actors)
    model, vecnormalize = load_anchor(spec, spec.anchors[0], args.run_root)
    env = spec.make_env(spec.anchors[0])
    rng = np.random.default_rng(0)
    held_out = spec.held_out[0] if spec.held_out else float(np.sqrt(spec.anchors[0] * spec.anchors[1]))

    print(f"task {spec.name}; surrogate {path}; SB3 {type(model).__name__} policy of anchor λ={spec.anchors[0]:g}; torch threads 1")
    print(f"{'batch':>5} {'mode':>13} {'SB3 PPO µs':>11} {'surrogate@anchor µs':>20} {'surrogate@held-out µs':>22} {'ratio held-out/SB3':>19}"
          + (f" {'param_interp@held-out µs':>25} {'ratio/SB3':>10}" if interp is not None else ""))
    for batch in (1, 256):
        obs = np.stack([env.observation_space.sample() for _ in range(batch)]).astype(np.float32)
        obs = np.clip(obs, -3, 3)  # unbounded boxes sample huge values; keep observations realistic
        sb3_obs = vecnormalize.normalize_obs(obs) if vecnormalize is not None else obs
        if batch == 1:
            obs, sb3_obs = obs[0], sb3_obs[0]
        for deterministic in (True, False):
            t_sb3 = time_call(lambda: model.predict(sb3_obs, deterministic=deterministic), args.repeat)
            surrogate.set_weight(spec.anchors[0])
            t_anchor = time_call(lambda: surrogate.predict(obs, deterministic=deterministic), args.repeat)
            surrogate.set_weight(held_out)
            t_held = time_call(lambda: surrogate.predict(obs, deterministic=deterministic), args.repeat)
            mode = "deterministic" if deterministic else "stochastic"
            extra = ""
            if interp is not None:
                interp.set_weight(held_out)
                t_interp = time_call(lambda: interp.predict(obs, deterministic=deterministic), args.repeat)
                extra = f" {t_interp * 1e6:>25.1f} {t_interp / t_sb3:>10.2f}"
            print(f"{batch:>5} {mode:>13} {t_sb3 * 1e6:>11.1f} {t_anchor * 1e6:>20.1f} {t_held * 1e6:>22.1f} {t_held / t_sb3:>19.2f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
