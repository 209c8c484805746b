"""hti-rl compare on a task that weighs two components (issue 22 item 5): the whole comparison on exact-gain
agents of the 2-weight LQR (R = diag(λ1, λ2)·R, 2×2 anchor grid, no training): rows at the held-out vectors,
deployed against the best anchor, the weight plane's heat maps, and results.json with weights as vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import write_lqr_spec
from test_compare import _save_exact_runs
from test_grid_cli import VECTOR_LQR

from hti_rl.compare.experiment import load_experiment
from hti_rl.compare.run import run_compare
from hti_rl.spec.load import load_task

pytestmark = pytest.mark.usefixtures("one_thread")


def test_whole_grid_comparison_on_exact_agents(tmp_path):
    spec_path = write_lqr_spec(tmp_path, **{**VECTOR_LQR, "held_out": [[1.0, 1.0], [0.3, 3.0]]})
    (tmp_path / "experiments").mkdir()
    path = tmp_path / "experiments" / "x.yaml"
    path.write_text(yaml.safe_dump({
        "task": str(spec_path), "eval_episodes": 10, "eval_seeds": [0], "w2_states": 20, "w2_samples": 4,
        "methods": ["surrogate", "deployed", "nearest", "linear", "regression", "optimum"],
        "variants": {"full": {"steps": 3}}, "calibration": {"per_interval": 1, "episodes": 4},
    }))
    exp = load_experiment(path)
    spec = load_task(exp.task)
    runs = tmp_path / "runs"
    _save_exact_runs(spec, exp, runs)
    results = run_compare(exp, runs, progress=False, log=lambda _: None)
    out = tmp_path / "experiments" / "x"
    report = (out / "report.md").read_text()
    assert (out / "plane.png").stat().st_size > 10_000 and not (out / "returns.png").exists()
    assert "## λ = 1,1" in report and "## λ = 0.3,3" in report and "## Return over the weight plane" in report
    assert "(log/log weight scale per axis; weight vectors (ctrl0, ctrl1))" in report
    for w in spec.held_out:
        rows = results["rows"]
        # Exact-gain agents: the γ-matched optimum is the retrained agents' policy.
        assert rows["optimum γ=0.95"][w]["regret"] == pytest.approx(0.0, abs=0.02)
        assert rows["nearest"][w]["w2_optimum"] > 0.01
        assert results["deployed"][w]["holds"]
        assert all(np.isfinite(rows[m][w]["mean"]) for m in ("clot/full", "linear", "regression"))
    # The plane: the calibration's product grid (axis values 0.1, 1, 10 and the held-out entries: 0.3 on axis 1,
    # 3 on axis 2; the midpoint 10^0 computed as 1.0000000000000004 is the held-out 1), every
    # vector with deployed, the best anchor and the optimum; at an anchor vector deployed is that anchor,
    # which is the best anchor there (exact gains).
    plane = results["plane"]
    assert len(plane["weights"]) == 16 and plane["shortcut"]["checked"] == plane["shortcut"]["held"]
    for k, w in enumerate(plane["weights"]):
        if w in spec.anchors:
            assert plane["deployed"][k]["candidate"] in ("surrogate", f"anchor:{w[0]:g},{w[1]:g}")  # the same actions there
            assert plane["best_anchor"][k]["name"] == f"anchor:{w[0]:g},{w[1]:g}"
            assert plane["deployed"][k]["mean"] == pytest.approx(plane["best_anchor"][k]["mean"])
        assert plane["optimum"][k]["mean"] >= plane["best_anchor"][k]["mean"] - 1e-6 - plane["optimum"][k]["ci"]
    document = json.loads((out / "results.json").read_text())
    assert document["held_out"] == [[1.0, 1.0], [0.3, 3.0]] and document["anchors"][0] == [0.1, 0.1]
    assert document["weight_names"] == ["ctrl0", "ctrl1"] and document["weight_scale"] == ["log", "log"]
    for name in ("clot/full", "deployed", "linear", "anchor:0.1,10", "retrained:0", "retrained"):
        assert set(document["methods"][name]) == {"1,1", "0.3,3"}
    assert document["deployed"]["1,1"]["holds"] is True
    assert len(document["plane"]["weights"]) == 16 and document["plane"]["weights"][0] == [0.1, 0.1]
    assert set(document["plane"]["deployed"][0]) == {"mean", "ci95", "episodes", "candidate"}
