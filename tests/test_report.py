"""Report writing from plain results: markdown tables, the verdict's arithmetic, and the files written."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from hti_rl.compare.report import markdown_table, verdict, write_report


def _results() -> dict:
    spec = SimpleNamespace(name="toy", is_vector=False, env_id="Toy-v0", path=Path("envs/toy.yaml"), anchors=[1.0, 5.0], held_out=[3.0],
                           weight_scale="linear", algo="ppo", hyperparams_key="toy", hyperparams_file="agents/ppo.yml", seeds_per_anchor=1,
                           fingerprint=lambda: "0123456789abcdef")
    exp = SimpleNamespace(name="toy", path=Path("experiments/toy.yaml"), eval_episodes=10, eval_seeds=(0, 1), retrained_seeds=2, w2_samples=8)
    row = lambda mean, regret: {"mean": mean, "ci": 1.0, "regret": regret, "w2": 0.1, "w2_per_seed": [0.1, 0.1]}  # noqa: E731
    return {
        "experiment": exp, "spec": spec, "weights": [3.0], "grid": [1.0, 3.0, 5.0],
        "anchor_curves": {1.0: [(-10, 1), (-12, 1), (-15, 1)], 5.0: [(-14, 1), (-11, 1), (-9, 1)]},
        "optimum_curve": [], "gamma": 0.99,
        "rows": {"clot/full": {3.0: row(-10.1, 0.01)}, "linear": {3.0: row(-10.5, 0.05)}, "nearest": {3.0: row(-12.0, 0.2)}},
        "retrained": {3.0: {"mean": -10.0, "ci": 0.5, "seed_means": [-9.8, -10.2], "seed_cis": [0.6, 0.7],
                           "seed_episodes": [20, 20], "seed_spread": 0.4}},
        "random": {3.0: -20.0},
        "floor": {3.0: 0.05},
        "anchor_metas": [{"weight": 1.0, "steps": 100, "seed": 1, "wall_time_s": 2.0}, {"weight": 5.0, "steps": 100, "seed": 2, "wall_time_s": 2.0}],
        "retrained_metas": {3.0: [{"weight": 3.0, "steps": 100, "seed": 3, "wall_time_s": 2.0}] * 2},
        "timings": {"evaluate": 1.5}, "cross_warnings": [], "episodes": 20, "dataset_states": 100, "w2_states": 50,
        "hyperparams": {"n_timesteps": 100, "n_envs": 1, "normalize": False, "algo_kwargs": {"gamma": 0.99}},
    }


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_verdict_states_target_and_baseline_with_numbers():
    lines = verdict(_results())
    assert len(lines) == 1
    assert "regret +1.00% (within 2%)" in lines[0] and "beats the best baseline (linear: -10.5 vs -10.1)" in lines[0]
    results = _results()
    results["rows"]["clot/full"][3.0].update(mean=-11.0, regret=0.1)
    assert "NOT within" in verdict(results)[0] and "does NOT beat" in verdict(results)[0]


def test_write_report_files(tmp_path):
    report = write_report(_results(), tmp_path)
    text = report.read_text()
    assert "## λ = 3" in text and "| clot/full | -10.1 ± 1 | +1.00% | 0.1 |" in text
    assert "seed-to-seed floor" in text and "## Stage wall times" in text
    assert (tmp_path / "returns.png").stat().st_size > 10_000


def test_results_json_is_written_beside_the_report_and_parses(tmp_path):
    write_report(_results(), tmp_path)
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["format"] == "hti-rl-results" and document["version"] == 1 and document["held_out"] == [3.0]
    methods = document["methods"]
    assert methods["clot/full"]["3"] == {"mean": -10.1, "ci95": 1.0, "episodes": 20}
    assert methods["anchor:1"]["3"] == {"mean": -12, "ci95": 1, "episodes": 20}  # re-weighed at the held-out weight
    assert methods["anchor:5"]["3"]["mean"] == -11
    assert methods["retrained:1"]["3"] == {"mean": -10.2, "ci95": 0.7, "episodes": 20}
    assert methods["retrained"]["3"] == {"mean": -10.0, "ci95": 0.5, "episodes": 40}
    assert "deployed" not in document  # no calibrated method in this comparison
