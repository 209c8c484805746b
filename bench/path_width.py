"""Path-net width vs accuracy of the pipeline surrogate on exact-gain 2-D LQR anchors (600 steps each).

Run: python bench/path_width.py /tmp/path_width 0.1,1,10 0.3,3   (run root, anchors, held-out weights)

Prints, per width and seed, the mean relative error of the deterministic action against the Riccati
optimum at each held-out weight and the largest action difference to the 256-wide fit of the same seed.
"""

import sys
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the exact-gain anchor helpers
from conftest import save_lqr_anchor, write_lqr_spec

from hti_rl.dataset import PolicyDataset, record
from hti_rl.methods.surrogate import clot_config, fit
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task

root = Path(sys.argv[1]); anchors = [float(a) for a in sys.argv[2].split(",")]; held = [float(a) for a in sys.argv[3].split(",")]
path = write_lqr_spec(root, name="lqr2d", env_id="hti_rl/LQR2D-v0", anchors=anchors, held_out=held,
                      record={"episodes": 10, "samples": 16, "max_states": 1000})
spec, runs = load_task(path), root / "runs"
for w in spec.anchors: save_lqr_anchor(spec, w, runs)
record(spec, runs, progress=False)
obs = PolicyDataset.load(RunDir.of(spec, runs).dataset).obs
obs = obs[np.linalg.norm(obs, axis=1) > 0.3]
acts = {}
for ph in (256, 64, 32):
    for seed in (0, 1):
        pol = fit(spec, runs, clot_config({"path_hidden": ph}, seed=seed), progress=False)
        errs = []
        for w in held:
            pol.set_weight(w)
            a = pol.predict(obs, deterministic=True)[0]
            acts[(ph, seed, w)] = a
            opt = obs @ -spec.make_env(w).unwrapped.optimal_gain(w).T
            errs.append(float(np.mean(np.linalg.norm(a - opt, axis=1) / np.linalg.norm(opt, axis=1))))
        d = [float(np.abs(acts[(ph, seed, w)] - acts[(256, seed, w)]).max()) for w in held]
        print(f"path_hidden {ph} seed {seed} fit {pol.header['fit_seconds']} s: rel err vs Riccati " + " ".join(f"{e:.2%}" for e in errs)
              + " | max |a - a_256| " + " ".join(f"{x:.4f}" for x in d), flush=True)
