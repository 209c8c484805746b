"""Phase 4 of ``hti-rl compare`` on a task that weighs several components (docs/method.md §12).

Phases 1-3 are the scalar ones with vectors (the anchors and the agents retrained at every held-out vector
train as one pool; the grid methods are fitted from the registry's ``fit_grid``; ``deployed`` is the grid
surrogate calibrated on the product grid). Here, with the scalar evaluation's per-weight steps
(:func:`~hti_rl.compare.evaluation.retrained_at`, :func:`~hti_rl.compare.evaluation.methods_at`):

- every method and the retrained agents at every held-out vector: returns, regret, W2, and ``deployed``
  against the best anchor there on the same episodes;
- the weight plane: at every vector of the deployed policy's calibration grid, the return of ``deployed`` and of
  the best anchor re-weighed there, on the comparison's episodes (the report's heat maps). Where ``deployed``
  deploys an anchor its actions are that anchor's, so its episodes are that anchor's rollouts; this is checked
  at the held-out vectors, where ``deployed`` is rolled out itself, and when any check fails every plane vector
  is rolled out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.compare.evaluation import (
    Bench,
    agent_metas,
    held_out_rows,
    is_lqr,
    rollouts,
)
from hti_rl.compare.experiment import Experiment
from hti_rl.compare.fitting import Fitted, Trained
from hti_rl.envs.lqr import OptimalPolicy
from hti_rl.evaluate import mean_ci
from hti_rl.methods.calibration import anchor_name
from hti_rl.spec.task import TaskSpec


def evaluate_grid(spec: TaskSpec, exp: Experiment, trained: Trained, fitted: Fitted,
                  run_root: str | Path) -> tuple[dict[str, Any], dict[Any, dict[str, np.ndarray]]]:
    """Every method and reference at every held-out vector, and the weight plane (module docstring).

    :return: (results for the report, keyed by weight vectors (tuples); action samples per held-out vector and method).
    """
    bench, results, histograms = held_out_rows(spec, exp, fitted, run_root)
    results["anchor_at"] = {a: {w: mean_ci(bench.returns(r, w)) for w in spec.held_out} for a, r in zip(spec.anchors, bench.anchor_rolls)}
    results["own_weight"] = {"scratch": {a: mean_ci(bench.returns(r, a)) for a, r in zip(spec.anchors, bench.anchor_rolls)}}
    if "deployed" in fitted.policies:
        results["plane"] = plane(bench, fitted.policies["deployed"], results)
    bench.env.close()
    results.update(conditioned_metas=trained.conditioned_metas, **agent_metas(spec, exp, run_root))
    return results, histograms


def plane(bench: Bench, deployed: Any, results: dict[str, Any]) -> dict[str, Any]:
    """Return of ``deployed``, of the best anchor and (LQR) of the exact optimum at every calibration grid vector, on
    the comparison's episodes.

    :return: ``{"weights": [P] vectors, "deployed": [P] {mean, ci, candidate}, "best_anchor": [P] {name, mean, ci},
        "optimum": [P] {mean, ci} or absent, "shortcut": {checked, held, rolled_out}}``.
    """
    spec = bench.spec
    anchors = {anchor_name(a): r for a, r in zip(spec.anchors, bench.anchor_rolls)}
    checks = [np.isclose(results["rows"]["deployed"][w]["mean"], float(np.mean(bench.returns(anchors[c["candidate"]], w))), rtol=1e-9, atol=1e-9)
              for w, c in results["deployed"].items() if c["candidate"] in anchors]
    shortcut = all(checks)
    weights = [tuple(p.weight) for p in deployed.calibration.points]
    out: dict[str, Any] = {"weights": weights, "deployed": [], "best_anchor": []}
    rolled_out = 0
    for w in weights:
        by_anchor = {name: bench.returns(r, w) for name, r in anchors.items()}
        best = max(by_anchor, key=lambda n: float(by_anchor[n].mean()))
        out["best_anchor"].append({"name": best, **_stat(by_anchor[best])})
        candidate = deployed.deployment(w).candidate
        if shortcut and candidate in anchors:
            returns = by_anchor[candidate]
        else:
            deployed.set_weight(w)
            returns = bench.returns(rollouts(deployed, spec, bench.exp), w)
            rolled_out += 1
        out["deployed"].append({"candidate": candidate, **_stat(returns)})
    if is_lqr(spec):
        out["optimum"] = [_stat(bench.returns(rollouts(OptimalPolicy(bench.env, w, discount=1.0), spec, bench.exp), w)) for w in weights]
    out["shortcut"] = {"checked": len(checks), "held": int(sum(checks)), "rolled_out": rolled_out}
    return out


def _stat(returns: np.ndarray) -> dict[str, float]:
    mean, ci = mean_ci(returns)
    return {"mean": mean, "ci": ci}
