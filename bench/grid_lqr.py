"""Issue 22 item 3: the grid surrogate on the 2-weight LQR task against the Riccati optimum, beside the
multilinear mix of the anchors' actions (exact-gain anchors on the 3×3 log grid over [0.1, 10]², envs/lqr2w.yaml).

Run: python bench/grid_lqr.py /tmp/grid_lqr 600 0,1   (run root, CLOT steps, seeds)

Prints, per seed, the mean relative error of the deterministic action at each interior vector.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import yaml

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the exact-gain anchor helpers
from conftest import save_lqr_anchor

from hti_rl.dataset import record
from hti_rl.methods.grid import fit_grid_multilinear
from hti_rl.methods.grid_surrogate import fit_grid_policy
from hti_rl.methods.surrogate import clot_config
from hti_rl.spec.load import load_task
from hti_rl.training.store import load_anchor_actor

root, steps, seeds = Path(sys.argv[1]), int(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")]
root.mkdir(parents=True, exist_ok=True)
raw = yaml.safe_load((ROOT / "envs/lqr2w.yaml").read_text())
raw.update(hyperparams_file=str(ROOT / "agents/ppo.yml"), record={"episodes": 10, "samples": 16, "max_states": 1000})
(root / "lqr2w.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
spec, runs = load_task(root / "lqr2w.yaml"), root / "runs"
for w in spec.anchors:
    save_lqr_anchor(spec, w, runs)
dataset = record(spec, runs, progress=False)
actors = [load_anchor_actor(spec, w, runs) for w in spec.anchors]
obs = dataset.obs[np.linalg.norm(dataset.obs, axis=1) > 0.3]
interior = [(0.3, 0.3), (0.3, 3.0), (3.0, 0.3), (3.0, 3.0), (0.2, 5.0), (2.0, 0.5), (1.0, 3.0), (3.0, 1.0)]


def error(policy, weight):
    policy.set_weight(weight)
    action = policy.predict(obs, deterministic=True)[0]
    optimum = obs @ -spec.make_env(weight).unwrapped.optimal_gain(weight).T
    return float(np.mean(np.linalg.norm(action - optimum, axis=1) / np.linalg.norm(optimum, axis=1)))


mix = fit_grid_multilinear(spec, dataset, actors)
print("vector       " + "  ".join(f"{a:g},{b:g}".ljust(7) for a, b in interior) + "  mean")
row = [error(mix, w) for w in interior]
print("multilinear  " + "  ".join(f"{100 * e:6.2f}%" for e in row) + f"  {100 * np.mean(row):.2f}%")
for seed in seeds:
    policy = fit_grid_policy(spec, dataset, actors, clot_config({"steps": steps}, seed=seed), progress=False)
    row = [error(policy, w) for w in interior]
    print(f"clot seed {seed}  " + "  ".join(f"{100 * e:6.2f}%" for e in row) + f"  {100 * np.mean(row):.2f}% ({policy.header['fit_seconds']:.0f} s)")
