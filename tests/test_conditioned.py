"""WeightInObservation, the conditioned agent's budget, training and ConditionedPolicy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hti_rl.envs.wrappers import WEIGHT_KEY, RewardWeightWrapper, WeightInObservation
from hti_rl.errors import AnchorError, HTIError, WeightError
from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.conditioned import ConditionedPolicy, load_conditioned_policy
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task
from hti_rl.training.conditioned import (
    conditioned_budget,
    make_conditioned_env,
    train_conditioned,
)


def _lqr_env(weight: float = 1.0) -> RewardWeightWrapper:
    import gymnasium as gym

    import hti_rl.envs.lqr  # noqa: F401  (registers the LQR envs)

    return RewardWeightWrapper(gym.make("hti_rl/LQR1D-v0"), {"state": "reward_state", "ctrl": "reward_ctrl"}, "ctrl", weight)


# ----------------------------------------------------------------------------- the wrapper
def test_fixed_weight_observation_space_and_reward():
    env = WeightInObservation(_lqr_env(), weight_range=(0.1, 10.0), scale="log", fixed=3.0)
    assert env.observation_space.shape == (2,)
    assert env.observation_space.low[-1] == pytest.approx(math.log(0.1))
    assert env.observation_space.high[-1] == pytest.approx(math.log(10.0))
    assert env.observation_space.low[0] == -10.0 and env.observation_space.high[0] == 10.0  # the LQR state bound
    obs, info = env.reset(seed=0)
    assert info[WEIGHT_KEY] == 3.0 and env.weight == 3.0
    assert obs.shape == (2,) and obs.dtype == env.observation_space.dtype
    assert obs[-1] == pytest.approx(math.log(3.0))
    x = float(obs[0])
    obs2, reward, *_ , info = env.step(np.array([0.5], dtype=np.float32))
    # LQR1D: reward = −x² − λ·u², x the state before the step
    assert reward == pytest.approx(-x * x - 3.0 * 0.25, rel=1e-5)
    assert obs2[-1] == pytest.approx(math.log(3.0))
    assert env.observation_space.contains(obs2)


def test_linear_scale_observes_the_weight_itself():
    env = WeightInObservation(_lqr_env(), weight_range=(1.0, 5.0), scale="linear", fixed=2.5)
    obs, _ = env.reset(seed=1)
    assert obs[-1] == pytest.approx(2.5)
    assert (env.observation_space.low[-1], env.observation_space.high[-1]) == (1.0, 5.0)


def test_sampling_uniform_in_log_weight_and_reproducible():
    env = WeightInObservation(_lqr_env(), weight_range=(0.1, 10.0), scale="log")
    env.reset(seed=7)
    coords = []
    for _ in range(2000):
        obs, info = env.reset()
        assert obs[-1] == pytest.approx(math.log(info[WEIGHT_KEY]), abs=1e-6)
        coords.append(obs[-1])
    coords = np.array(coords)
    assert coords.min() >= math.log(0.1) - 1e-6 and coords.max() <= math.log(10.0) + 1e-6
    # uniform on [log 0.1, log 10]: mean 0, variance (2 log 10)² / 12
    assert abs(coords.mean()) < 0.1
    assert coords.var() == pytest.approx((2 * math.log(10.0)) ** 2 / 12, rel=0.1)
    again = WeightInObservation(_lqr_env(), weight_range=(0.1, 10.0), scale="log")
    again.reset(seed=7)
    assert [again.reset()[0][-1] for _ in range(5)] == pytest.approx(list(coords[:5]))


def test_sampling_from_choices_then_fix():
    env = WeightInObservation(_lqr_env(), weight_range=(0.1, 10.0), scale="log", choices=[0.1, 10.0], seed=0)
    seen = {env.reset()[1][WEIGHT_KEY] for _ in range(50)}
    assert seen == {0.1, 10.0}
    env.fix(1.0)
    obs, info = env.reset()
    assert info[WEIGHT_KEY] == 1.0 and obs[-1] == pytest.approx(0.0)
    env.fix(None)
    assert {env.reset()[1][WEIGHT_KEY] for _ in range(50)} == {0.1, 10.0}


def test_bad_weights_refused():
    with pytest.raises(WeightError):
        WeightInObservation(_lqr_env(), weight_range=(0.0, 10.0), scale="log")
    with pytest.raises(WeightError):
        WeightInObservation(_lqr_env(), weight_range=(10.0, 1.0), scale="linear")
    env = WeightInObservation(_lqr_env(), weight_range=(0.1, 10.0), scale="log")
    with pytest.raises(WeightError):
        env.fix(float("nan"))
    with pytest.raises(WeightError):
        env.fix(-1.0)


# ----------------------------------------------------------------------------- budget and env of a spec
def test_budget_arithmetic(make_lqr_spec):
    spec = load_task(make_lqr_spec())  # 3 anchors × 6000 steps
    assert conditioned_budget(spec, 1) == 18000
    assert conditioned_budget(spec, 2) == 36000
    assert conditioned_budget(spec, 0.5) == 9000
    for bad in (0, -1, float("inf"), "x"):
        with pytest.raises(HTIError):
            conditioned_budget(spec, bad)
    env = make_conditioned_env(spec, weight=0.3)
    obs, info = env.reset(seed=0)
    assert info[WEIGHT_KEY] == 0.3 and obs[-1] == pytest.approx(math.log(0.3))


# ----------------------------------------------------------------------------- a tiny training run
def test_train_predict_save_load(make_lqr_spec, tmp_path):
    spec = load_task(make_lqr_spec(n_timesteps=1000))  # budget 3 × 1000 × 1 = 3000 steps
    run_root = tmp_path / "runs"
    with pytest.raises(AnchorError, match="train-conditioned"):
        load_conditioned_policy(spec, 1.0, run_root)
    [meta] = train_conditioned(spec, [1.0], run_root, progress=False)
    directory = RunDir.of(spec, run_root).conditioned(1.0)
    assert directory == run_root / "lqr1d" / "conditioned" / "f=1"
    assert (directory / "model.zip").exists() and not (directory / "checkpoints").exists()
    assert meta["steps"] >= 3000 and meta["budget"] == 3000 and meta["budget_factor"] == 1.0
    assert meta["weight"] is None and meta["task_fingerprint"] == spec.fingerprint()
    assert list((run_root / "lqr1d" / "tb").glob("conditioned_f=1_*"))
    # finished: skipped (same meta back, untouched)
    assert train_conditioned(spec, [1.0], run_root, progress=False) == [json.loads((directory / "meta.json").read_text())]

    policy = load_conditioned_policy(spec, 1.0, run_root)
    obs = np.array([[1.0], [-0.5], [2.0]], dtype=np.float32)
    policy.set_weight(0.3)
    a_low, _ = policy.predict(obs, deterministic=True)
    policy.set_weight(3.0)
    a_high, _ = policy.predict(obs, deterministic=True)
    assert a_low.shape == (3, 1) and np.all(np.isfinite(a_low)) and not np.allclose(a_low, a_high)
    single, _ = policy.predict(obs[0], deterministic=True)
    assert single.shape == (1,) and single == pytest.approx(a_high[0])
    # the policy appends log λ itself: the same as the agent on the conditioned env's observation
    actor = policy.actors[0]
    import torch

    with torch.no_grad():
        raw = actor.to_env_action(actor.distribution(torch.tensor([[1.0, math.log(3.0)]]))[0]).numpy()
    assert raw[0] == pytest.approx(a_high[0], abs=1e-6)
    with pytest.raises(WeightError):
        policy.set_weight(20.0)

    path = tmp_path / "conditioned.zip"
    policy.save(path)
    loaded = AnchoredPolicy.load(path, expect_fingerprint=spec.fingerprint(), weight=3.0)
    assert isinstance(loaded, ConditionedPolicy)
    assert loaded.predict(obs, deterministic=True)[0] == pytest.approx(a_high)
    loaded.set_weight(0.3)
    assert loaded.predict(obs, deterministic=True)[0] == pytest.approx(a_low)


# ----------------------------------------------------------------------------- compare and report
def test_experiment_accepts_conditioned_methods(make_lqr_spec, tmp_path):
    from hti_rl.compare.experiment import load_experiment

    make_lqr_spec()
    path = tmp_path / "experiments" / "x.yaml"
    path.parent.mkdir()
    path.write_text("task: envs/lqr1d.yaml\nmethods: [surrogate, conditioned, conditioned_x2]\n")
    exp = load_experiment(path)
    assert exp.method_names() == ["clot/full", "conditioned", "conditioned_x2"]


def test_report_names_the_winner_per_weight():
    from hti_rl.compare.report import verdict, winners

    def row(mean, ci):
        return {"mean": mean, "ci": ci, "regret": 0.0, "w2": 0.0}

    results = {
        "weights": [0.3, 3.0],
        "rows": {
            "clot/full": {0.3: row(-10.0, 0.5), 3.0: row(-20.0, 0.5)},
            "nearest": {0.3: row(-12.0, 0.5), 3.0: row(-30.0, 0.5)},
            "conditioned": {0.3: row(-10.4, 0.5), 3.0: row(-15.0, 1.0)},
            "optimum γ=1": {0.3: row(-1.0, 0.1), 3.0: row(-1.0, 0.1)},
        },
        "retrained": {0.3: {"mean": -9.0, "ci": 0.3, "seed_spread": 0.1}, 3.0: {"mean": -14.0, "ci": 0.3, "seed_spread": 0.1}},
        "random": {0.3: -100.0, 3.0: -100.0},
    }
    lines = [line for line in winners(results) if line.startswith("- ")]
    peers = [line for line in winners(results) if line.startswith("  - ")]
    assert lines[0].startswith("- λ=0.3: **clot/full** -10 ± 0.5 ahead of conditioned by 0.4") and lines[0].endswith("CIs overlap with conditioned.")
    assert lines[1].startswith("- λ=3: **conditioned** -15 ± 1 ahead of clot/full by 5") and lines[1].endswith("its CI overlaps no other method's.")
    assert peers == ["  - clot/full -10 ± 0.5 vs conditioned -10.4 ± 0.5: clot/full ahead by 0.4 (CIs overlap)",
                     "  - clot/full -20 ± 0.5 vs conditioned -15 ± 1: conditioned ahead by 5"]
    assert "best baseline (conditioned: -15 vs -20)" in verdict(results)[1]


def test_cli_trains_then_skips_when_finished(make_lqr_spec, tmp_path, capsys):
    """`hti-rl train-conditioned` with a budget factor: trains to factor × anchors × n_timesteps, says where
    the agent went, and a second call leaves the finished agent alone."""
    from hti_rl.cli import main

    spec_path = make_lqr_spec(n_timesteps=1000)  # budget 3 × 1000 × 0.5 = 1500 steps
    run_root = tmp_path / "runs"
    args = ["train-conditioned", str(spec_path), "--run-root", str(run_root), "--budget-factor", "0.5",
            "--checkpoint-every", "500"]
    assert main(args) == 0
    directory = RunDir.of(load_task(spec_path), run_root).conditioned(0.5)
    assert f"-> {directory}" in capsys.readouterr().out
    assert json.loads((directory / "meta.json").read_text())["budget"] == 1500
    assert main(args) == 0 and "resumed" not in capsys.readouterr().out  # finished: skipped
