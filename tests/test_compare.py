"""hti-rl compare: experiment specs validated with file and field in the error; retrained jobs laid out
and seeded apart from anchors; and one whole comparison on exact-gain 1-D LQR agents (no training)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import write_lqr_spec

from hti_rl.compare.experiment import load_experiment
from hti_rl.compare.run import run_compare
from hti_rl.errors import SpecError
from hti_rl.methods.base import AnchoredPolicy
from hti_rl.runs import RunDir
from hti_rl.seeds import anchor_seed
from hti_rl.spec.load import load_task
from hti_rl.training.retrained import RetrainJob


def _experiment(root, spec_fields=None, **fields):
    spec = write_lqr_spec(root, **(spec_fields or {}))
    body = {"task": str(spec), **fields}
    path = root / "experiments" / "x.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_valid_experiment_and_method_names(tmp_path):
    exp = load_experiment(_experiment(tmp_path, variants={"full": {}, "euclidean": {"metric": "euclidean"}}, methods=["surrogate", "linear", "optimum"]))
    assert exp.name == "x" and exp.retrained_seeds == 2 and exp.eval_episodes == 10
    assert exp.method_names() == ["clot/full", "clot/euclidean", "linear", "optimum"]


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"retrained_seeds": 1}, "retrained_seeds"),
        ({"eval_episodes": 5}, "eval_episodes"),
        ({"eval_seeds": [1, 1]}, "eval_seeds"),
        ({"methods": ["surrogate", "magic"]}, "methods"),
        ({"methods": ["surrogate", "param_interp"]}, "methods"),
        ({"shared_start": ["conditioned"]}, "shared_start"),
        ({"variants": {"bad": {"metric": "riemann"}}}, "variants.bad"),
        ({"variants": {"bad": {"no_such": 1}}}, "variants.bad"),
        ({"episodes": 10}, "episodes"),
        ({"task": "envs/missing.yaml"}, "task"),
    ],
)
def test_bad_experiment_names_file_and_field(tmp_path, fields, field):
    path = _experiment(tmp_path, **fields)
    with pytest.raises(SpecError) as err:
        load_experiment(path)
    assert str(err.value).startswith(str(path)) and f"`{field}`" in str(err.value)


def test_retrain_jobs_have_their_own_directories_and_seeds(tmp_path):
    spec = load_task(write_lqr_spec(tmp_path))
    jobs = [RetrainJob(spec=spec, index=0, run_root="runs", checkpoint_every=100, retrain_weight=w, retrain_seed=i) for w in spec.held_out for i in range(2)]
    assert jobs[1].directory == RunDir.of(spec, "runs").retrained(0.3, 1) and str(jobs[1].directory).endswith("retrained/w=0.3/seed=1")
    seeds = {job.seed for job in jobs} | {anchor_seed(spec, k) for k in range(len(spec.anchors))}
    assert len(seeds) == len(jobs) + len(spec.anchors)
    assert jobs[0].weight == 0.3 and jobs[0].tb_name == "retrained_w=0.3_seed0"


def _save_exact(spec, weight, directory, log_std=-2.0):
    """An exact-gain linear PPO agent at ``weight`` written as a finished anchor/retrained run."""
    from stable_baselines3 import PPO

    from hti_rl.io import write_json

    env = spec.make_env(weight)
    model = PPO("MlpPolicy", env, seed=0, device="cpu", n_steps=64, batch_size=64, policy_kwargs=dict(net_arch=[], log_std_init=log_std))
    with torch.no_grad():
        model.policy.action_net.weight.copy_(-torch.as_tensor(env.unwrapped.optimal_gain(weight, 0.95), dtype=torch.float32))
        model.policy.action_net.bias.zero_()
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.zip")
    write_json(directory / "meta.json", {"task": spec.name, "task_fingerprint": spec.fingerprint(), "weight": weight, "algo": "ppo",
                                         "steps": 0, "seed": 0, "wall_time_s": 1.0})


def _save_exact_runs(spec, exp, runs, spread=0.1):
    """Exact-gain agents as every anchor and every retrained seed of ``exp`` (no training); retrained seed i has
    log-std −2 + spread·i, so the seeds differ when ``spread`` ≠ 0."""
    for w in spec.anchors:
        _save_exact(spec, w, RunDir.of(spec, runs).anchor(w))
    for w in spec.held_out:
        for i in range(exp.retrained_seeds):
            _save_exact(spec, w, RunDir.of(spec, runs).retrained(w, i), log_std=-2.0 + spread * i)


def test_whole_comparison_on_exact_agents(tmp_path):
    path = _experiment(
        tmp_path, eval_episodes=10, eval_seeds=[0], methods=["surrogate", "deployed", "nearest", "linear", "optimum"],
        variants={"full": {"steps": 3}}, w2_states=20, w2_samples=4, grid=5,
    )
    exp = load_experiment(path)
    spec = load_task(exp.task)
    runs = tmp_path / "runs"
    _save_exact_runs(spec, exp, runs)
    results = run_compare(exp, runs, progress=False, log=lambda _: None)
    report = (tmp_path / "experiments" / "x" / "report.md").read_text()
    assert (tmp_path / "experiments" / "x" / "returns.png").stat().st_size > 10_000
    assert "## λ = 0.3" in report and "seed-to-seed floor" in report and "optimum γ=0.95" in report
    assert list((runs / "lqr1d" / "tb" / "compare").iterdir())
    for w in spec.held_out:
        rows = results["rows"]
        # Exact-gain agents: the retrained agents' and the γ-matched optimum's returns are the same policy.
        assert rows["optimum γ=0.95"][w]["regret"] == pytest.approx(0.0, abs=0.02)
        assert rows["optimum γ=0.95"][w]["w2"] < 0.2 and results["floor"][w] < 0.2  # 4 samples per state; σ = e^-2 ≈ 0.14 vs a Dirac
        assert rows["nearest"][w]["w2_optimum"] > 0.01  # the nearer anchor's gain is not the optimum
        assert np.isfinite(rows["clot/full"][w]["mean"])
    # deployed: the calibrated surrogate, at least the best anchor at every held-out weight (paired, 95% CI).
    assert "## Deployed: the calibrated surrogate" in report and "≥ best anchor (95% CI)" in report
    for w in spec.held_out:
        check = results["deployed"][w]
        assert check["holds"] and check["candidate"] in ("surrogate", "anchor:0.1", "anchor:1", "anchor:10")
    # results.json: every method, anchor re-weighed and retrained seed at every held-out weight.
    document = json.loads((tmp_path / "experiments" / "x" / "results.json").read_text())
    assert document["format"] == "hti-rl-results" and document["held_out"] == [0.3, 3.0]
    entries = document["methods"]
    for name in ("clot/full", "deployed", "nearest", "anchor:0.1", "anchor:1", "anchor:10", "retrained:0", "retrained:1", "retrained"):
        for label in ("0.3", "3"):
            entry = entries[name][label]
            assert set(entry) == {"mean", "ci95", "episodes"} and np.isfinite(entry["mean"]) and entry["ci95"] >= 0
    assert entries["retrained"]["3"]["episodes"] == 20 and entries["deployed"]["3"]["episodes"] == 10
    assert entries["deployed"]["0.3"]["mean"] == pytest.approx(results["rows"]["deployed"][0.3]["mean"])
    assert document["deployed"]["3"]["holds"] is True
    timings = json.loads((runs / "lqr1d" / "compare" / "timings.json").read_text())
    assert "evaluate" in timings and "fit clot/full" in timings
    # A second run reuses every fit; a damaged (or older-format) fit is refitted, not fatal.
    fitted = RunDir.of(spec, runs).method("clot/full")
    written = fitted.stat().st_mtime_ns
    again = run_compare(exp, runs, progress=False, log=lambda _: None)
    assert again["rows"]["clot/full"][spec.held_out[0]]["mean"] == rows["clot/full"][spec.held_out[0]]["mean"]
    assert fitted.stat().st_mtime_ns == written  # not refitted (the fit names the dataset it was fitted on)
    fitted.write_bytes(fitted.read_bytes()[:100])
    run_compare(exp, runs, progress=False, log=lambda _: None)
    assert AnchoredPolicy.load(fitted, expect_fingerprint=spec.fingerprint()).header["compare_key"]


def test_comparison_with_shared_start_anchors(tmp_path):
    """Exact agents from scratch beside real shared-start anchors (a tiny base, tiny fine-tunes): the shared
    rows, the fine-tuned reference and its W2 column, and the report's compute and head-to-head lines."""
    path = _experiment(
        tmp_path, spec_fields={"shared_start": {"base_steps": 3000, "finetune_steps": 1000}}, eval_episodes=10, eval_seeds=[0],
        methods=["surrogate", "linear"], shared_start=["surrogate", "param_interp"], variants={"full": {"steps": 3}},
        w2_states=20, w2_samples=4, grid=5,
    )
    exp = load_experiment(path)
    assert exp.shared_method_names() == ["clot/full", "param_interp"]
    scratch = load_task(exp.task)
    scratch = dataclasses.replace(scratch, shared_start=None)
    runs = tmp_path / "runs"
    _save_exact_runs(scratch, exp, runs, spread=0.0)
    results = run_compare(exp, runs, workers=2, progress=False, log=lambda _: None)
    rows = results["rows"]
    assert {"shared/clot/full", "shared/param_interp", "shared/fine-tuned"} <= set(rows)
    for w in scratch.held_out:
        assert all(np.isfinite(rows[name][w]["w2_shared"]) for name in rows)
        assert rows["shared/fine-tuned"][w]["w2_shared"] < rows["linear"][w]["w2_shared"]  # itself, up to sampling
    report = (tmp_path / "experiments" / "x" / "report.md").read_text()
    assert "## Shared-start anchors and parameter interpolation" in report and "W2 to shared fine-tune" in report
    assert "the shared-start anchors took 6000 environment steps" in report  # 3000 (base) + 3 × 1000
    assert "(1000 steps)" in report
    assert "shared/clot/full" in report and "vs shared/param_interp" in report
    assert (runs / "lqr1d" / "shared" / "finetuned" / "w=0.3" / "meta.json").exists()


@pytest.mark.long  # ~15-35 s: trains 8 short runs (CI runs it: `pytest -m long`)
def test_comparison_with_refining_rows(tmp_path):
    """refine: [0.1, 0.25] adds refined@0.1, refined@0.25, nearest-finetune@0.25 and scratch@0.25 at every held-out
    weight, trained at that weight with those budgets, with steps and wall time in the report and results.json."""
    path = _experiment(tmp_path, eval_episodes=10, eval_seeds=[0], methods=["surrogate", "deployed"], refine=[0.1, 0.25],
                       variants={"full": {"steps": 3}}, w2_states=10, w2_samples=2, grid=3)
    exp = load_experiment(path)
    spec = load_task(exp.task)
    runs = tmp_path / "runs"
    _save_exact_runs(spec, exp, runs, spread=0.0)
    results = run_compare(exp, runs, progress=False, log=lambda _: None)
    names = ["refined@0.1", "refined@0.25", "nearest-finetune@0.25", "scratch@0.25"]
    budget = int(spec.hyperparams()["n_timesteps"])
    for name, factor in zip(names, (0.1, 0.25, 0.25, 0.25)):
        for w in spec.held_out:
            assert np.isfinite(results["rows"][name][w]["mean"])
            meta = results["refine_metas"][name][w]
            assert meta["weight"] == w and meta["steps"] >= factor * budget and meta["warm_start"]["budget_factor"] == factor
    assert results["refine_metas"]["scratch@0.25"][3.0]["warm_start"]["start"] == "scratch"
    assert results["refine_metas"]["nearest-finetune@0.25"][3.0]["warm_start"]["start"] in ("anchor:1", "anchor:10")
    out = tmp_path / "experiments" / "x"
    report = (out / "report.md").read_text()
    assert "## Refining at the held-out weights" in report and "Goal: `refined@0.25`" in report
    assert (out / "refine_curves.png").stat().st_size > 5_000
    document = json.loads((out / "results.json").read_text())
    for name in names:
        assert set(document["methods"][name]) == {"0.3", "3"}
        assert document["compute"][name]["3"]["steps"] == results["refine_metas"][name][3.0]["steps"]
    assert document["compute"]["anchors"]["0.1"]["wall_time_s"] == 1.0
