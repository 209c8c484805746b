"""hti-rl calibrate on 1-D LQR with exact-gain anchors and one deliberately poor anchor (zero gain at λ = 10):
the poor anchor is replaced where the surrogate would have used it, choosing and estimating episodes are
disjoint, set_weight follows the stored choices (between grid points too), save/load keep them, a rerun
resumes, and bad input gets one clear error."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import numpy as np
import pytest
from conftest import save_lqr_anchor, write_lqr_spec

from hti_rl.cli import main
from hti_rl.dataset import record
from hti_rl.deploy.calibrate import calibrate, calibrate_policy
from hti_rl.errors import FileFormatError, HTIError, WeightError
from hti_rl.evaluate import mean_ci, returns_at, rollout_components
from hti_rl.methods.calibration import SURROGATE, Calibration, choose
from hti_rl.methods.surrogate import SurrogatePolicy, clot_config, fit
from hti_rl.runs import RunDir
from hti_rl.seeds import calibration_seeds, eval_seed
from hti_rl.spec.load import load_task

pytestmark = pytest.mark.usefixtures("one_thread")
EPISODES = 12
POOR = 10.0  # the anchor whose gain is zero: u = 0, the state drifts


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """(spec, run root, calibration, cost): anchors 0.1 and 1 exact, anchor 10 poor; fitted briefly and calibrated."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("calibrate")
    spec = load_task(write_lqr_spec(root, record={"episodes": 2, "samples": 4, "max_states": 100}))
    runs = root / "runs"
    for w in spec.anchors:
        save_lqr_anchor(spec, w, runs, gain_scale=0.0 if w == POOR else 1.0)
    record(spec, runs, progress=False)
    fit(spec, runs, clot_config({"steps": 10}, seed=0), progress=False)
    calibration, cost = calibrate(spec, runs, per_interval=1, episodes=EPISODES, progress=False)
    return spec, runs, calibration, cost


def _load(spec, runs, **kwargs) -> SurrogatePolicy:
    return SurrogatePolicy.load(RunDir.of(spec, runs).surrogate, expect_fingerprint=spec.fingerprint(), **kwargs)


def test_the_poor_anchor_is_replaced_where_the_surrogate_would_use_it(calibrated):
    spec, runs, calibration, cost = calibrated
    assert len(calibration.grid) == 7 and {0.1, 0.3, 1.0, 3.0, 10.0} <= set(calibration.grid)  # anchors, held-out, 1 per interval
    at_poor = calibration.points[-1]
    assert at_poor.weight == POOR and at_poor.chosen in ("anchor:0.1", "anchor:1")
    assert at_poor.estimate[at_poor.chosen][0] > at_poor.estimate["anchor:10"][0] + at_poor.estimate["anchor:10"][1]
    assert at_poor.estimate[SURROGATE] == at_poor.estimate["anchor:10"]  # at λ = 10 the plain surrogate is the poor anchor
    # The deployed policy acts like the chosen anchor there, the plain one like the poor anchor (u = 0).
    policy = _load(spec, runs)
    obs = np.random.default_rng(0).normal(size=(16, 1)).astype(np.float32)
    policy.set_weight(POOR)
    chosen = policy.actors[spec.anchors.index(float(at_poor.chosen.split(":")[1]))]
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], chosen.predict(obs, deterministic=True)[0])
    policy.use_calibration = False
    np.testing.assert_allclose(policy.predict(obs, deterministic=True)[0], 0.0, atol=1e-6)
    assert cost.episodes > 0 and cost.seconds > 0 and calibration.cost["episodes"] == cost.episodes


def test_the_choice_is_made_on_one_episode_set_and_estimated_on_another(calibrated):
    spec, runs, calibration, _ = calibrated
    choosing, estimating = calibration.reset_seeds()
    assert len(choosing) == len(estimating) == EPISODES and not set(choosing) & set(estimating)
    compare_seeds = {eval_seed(spec, s) + i for s in range(3) for i in range(100)}
    assert not (set(choosing) | set(estimating)) & compare_seeds
    # The stored estimate of an anchor is its return on the estimating set, recomputed here from scratch ...
    policy = _load(spec, runs)
    point = calibration.points[1]
    rolls = rollout_components(policy.actors[0], lambda: spec.make_env(1.0), EPISODES, calibration.estimate_seed)
    expected = mean_ci(returns_at(rolls, spec.reward.weighted, spec.reward.fixed, point.weight))
    assert point.estimate["anchor:0.1"] == pytest.approx(expected, rel=1e-9)
    # ... and differs from its return on the choosing set (other start states).
    assert point.choosing["anchor:0.1"] != pytest.approx(point.estimate["anchor:0.1"], rel=1e-6)


@pytest.mark.parametrize("episodes", [2, 1000, 2**29])
def test_calibration_seed_ranges_never_overlap(episodes):
    for seed in range(50):
        a, b = calibration_seeds(seed, episodes)
        assert a + episodes <= b or b + episodes <= a
    assert calibration_seeds(7, 30) == calibration_seeds(7, 30)


def test_set_weight_follows_the_stored_choices(calibrated):
    spec, runs, calibration, _ = calibrated
    policy = _load(spec, runs)
    for point in calibration.points:
        policy.set_weight(point.weight)
        assert policy.deployed == point.chosen
        assert policy.deployment().estimate == point.estimate[point.chosen]
    # Between grid points: the choice of both neighbours when they agree, else the surrogate.
    points = list(calibration.points)
    points[1] = dataclasses.replace(points[1], chosen="anchor:1")
    points[2] = dataclasses.replace(points[2], chosen="anchor:1")
    policy.attach_calibration(dataclasses.replace(calibration, points=tuple(points)))
    between = float(np.sqrt(points[1].weight * points[2].weight))
    policy.set_weight(between)
    assert policy.deployed == "anchor:1" and "both neighbouring" in policy.deployment().why
    assert policy.deployment().estimate == policy.deployment().anchors["anchor:1"]  # an anchor's estimate anywhere: re-weighed
    policy.set_weight(float(np.sqrt(points[0].weight * points[1].weight)))  # surrogate | anchor:1
    assert policy.deployed == SURROGATE and policy.deployment().estimate is None and "chose differently" in policy.deployment().why
    obs = np.array([[0.7]], dtype=np.float32)
    policy.set_weight(between)
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], policy.actors[1].predict(obs, deterministic=True)[0])


def test_save_and_load_keep_the_calibration(calibrated, tmp_path):
    spec, runs, calibration, _ = calibrated
    policy = _load(spec, runs)
    assert policy.calibration.to_json() == calibration.to_json()
    policy.save(tmp_path / "copy.zip")
    again = SurrogatePolicy.load(tmp_path / "copy.zip")
    assert again.calibration.to_json() == calibration.to_json()
    obs = np.random.default_rng(1).normal(size=(8, 1)).astype(np.float32)
    for w in (*calibration.grid, 0.2, 2.0, 5.0):
        policy.set_weight(w)
        again.set_weight(w)
        assert again.deployed == policy.deployed
        np.testing.assert_array_equal(again.predict(obs, deterministic=True)[0], policy.predict(obs, deterministic=True)[0])
    # calibrated=False: the plain surrogate, and a save keeps the calibration it did not read.
    plain = SurrogatePolicy.load(tmp_path / "copy.zip", calibrated=False)
    plain.set_weight(POOR)
    assert plain.calibration is None and plain.deployed == SURROGATE and "forced" in plain.deployment().why
    plain.save(tmp_path / "plain.zip")
    assert SurrogatePolicy.load(tmp_path / "plain.zip").calibration.to_json() == calibration.to_json()


def test_an_uncalibrated_surrogate_behaves_as_before(calibrated, tmp_path, capsys):
    spec, runs, _, _ = calibrated
    policy = _load(spec, runs, calibrated=False)
    policy._stored_calibration = None  # as written before calibration existed: no calibration entry at all
    policy.save(tmp_path / "old.zip")
    old = SurrogatePolicy.load(tmp_path / "old.zip")
    assert old.calibration is None and "uncalibrated" in old.deployment(3.0).why
    assert main(["deploy", str(tmp_path / "old.zip"), "--spec", str(spec.path), "--weight", "3", "--episodes", "2"]) == 0
    assert "deployed at weight 3: surrogate (uncalibrated: the plain surrogate; `hti-rl calibrate <spec>`" in capsys.readouterr().out
    calibrated_policy = _load(spec, runs)
    calibrated_policy.use_calibration = False
    obs = np.random.default_rng(2).normal(size=(8, 1)).astype(np.float32)
    for w in (0.2, 3.0, POOR):
        old.set_weight(w)
        calibrated_policy.set_weight(w)
        np.testing.assert_array_equal(old.predict(obs, deterministic=True)[0], calibrated_policy.predict(obs, deterministic=True)[0])


def test_a_rerun_resumes_and_force_recomputes(calibrated):
    spec, runs, calibration, _ = calibrated
    again, cost = calibrate(spec, runs, per_interval=1, episodes=EPISODES, progress=False)
    assert cost.episodes == 0 and cost.reused == len([w for w in calibration.grid if w not in spec.anchors])
    assert again.to_json() == calibration.to_json()
    path = RunDir.of(spec, runs).calibration_point(3.0)
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "key": {**raw["key"], "surrogate": "another"}}))  # as if written for another fit
    _, cost = calibrate(spec, runs, per_interval=1, episodes=EPISODES, progress=False)
    assert cost.episodes == 2 * EPISODES  # the stale weight only, surrogate on both sets
    assert (RunDir.of(spec, runs).calibration() / "calibration.png").stat().st_size > 10_000
    assert list(RunDir.of(spec, runs).tb("calibrate").iterdir())


def test_the_rule():
    rng = np.random.default_rng(0)
    base = rng.normal(size=40)
    kept = choose({SURROGATE: base, "anchor:1": base + rng.normal(0.0, 1.0, 40)})
    assert kept[0] == SURROGATE and "no candidate" in kept[1]
    ahead = choose({SURROGATE: base, "anchor:1": base + 1.0 + rng.normal(0, 0.1, 40), "anchor:2": base + 2.0 + np.tile([20.0, -20.0], 20)})
    assert ahead[0] == "anchor:1"  # anchor:2 has the higher mean but is not measurably ahead
    both = choose({SURROGATE: base, "anchor:1": base + 1.0, "anchor:2": base + 2.0 + rng.normal(0, 0.1, 40)})
    assert both[0] == "anchor:2" and both[2]["anchor:1"] == pytest.approx((1.0, 0.0), abs=1e-9)


@pytest.mark.parametrize("episodes, per_interval", [(0, 3), (-5, 3), (1, 3), (10, 0), (10, -1), (10**9, 3)])
def test_bad_settings_are_refused_before_any_work(calibrated, episodes, per_interval):
    spec, runs, _, _ = calibrated
    with pytest.raises(HTIError, match="--episodes|--per-interval"):
        calibrate(spec, runs, per_interval=per_interval, episodes=episodes, progress=False)


def test_a_grid_outside_the_anchor_range_is_refused(calibrated):
    spec, runs, _, _ = calibrated
    outside = dataclasses.replace(spec, held_out=(20.0,))
    with pytest.raises(WeightError, match=r"outside the anchor range \[0.1, 10\]"):
        calibrate_policy(_load(spec, runs), outside, RunDir.of(spec, runs), episodes=EPISODES, progress=False)


def test_a_calibration_of_another_spec_or_surrogate_is_refused(calibrated):
    spec, runs, calibration, _ = calibrated
    policy = _load(spec, runs, calibrated=False)
    with pytest.raises(FileFormatError, match="another spec"):
        policy.attach_calibration(dataclasses.replace(calibration, task_fingerprint="0" * 16))
    with pytest.raises(FileFormatError, match="anchors"):
        policy.attach_calibration(dataclasses.replace(calibration, anchors=(0.1, 1.0, 5.0)))
    with pytest.raises(FileFormatError, match="another spec or other anchors"):
        calibrate_policy(policy, dataclasses.replace(spec, anchors=(0.1, 1.0, 5.0)), RunDir.of(spec, runs), progress=False)
    with perturbed(policy):  # a refit: other parameters
        with pytest.raises(FileFormatError, match="another surrogate"):
            policy.attach_calibration(calibration)


@contextlib.contextmanager
def perturbed(policy):
    """One CLOT parameter moved by 1e-3 for the block, then restored."""
    import torch

    param = next(policy.clot.parameters())
    saved = param.detach().clone()
    with torch.no_grad():
        param.add_(1e-3)
    try:
        yield
    finally:
        with torch.no_grad():
            param.copy_(saved)


@pytest.mark.parametrize("damage, message", [("version", "version 0"), ("json", "not valid JSON"), ("field", "damaged")])
def test_a_damaged_or_older_calibration_in_the_file_is_refused(calibrated, tmp_path, damage, message):
    spec, runs, calibration, _ = calibrated
    policy = _load(spec, runs, calibrated=False)
    raw = calibration.to_json()
    stored = {"version": json.dumps({**raw, "version": 0}), "json": "{not json",
              "field": json.dumps({**raw, "anchor_sums": raw["anchor_sums"][:1]})}[damage]
    policy._stored_calibration = stored
    policy.save(tmp_path / "bad.zip")
    with pytest.raises(FileFormatError, match=message) as err:
        SurrogatePolicy.load(tmp_path / "bad.zip")
    assert "calibrate" in str(err.value) and "calibrated=False" in str(err.value)
    assert SurrogatePolicy.load(tmp_path / "bad.zip", calibrated=False).calibration is None  # still usable, plainly
    with pytest.raises(FileFormatError):
        Calibration.from_json({**raw, "points": raw["points"] * 20_000})  # bounded before anything is built


def test_cli_calibrate_and_deploy(calibrated, capsys):
    spec, runs, calibration, _ = calibrated
    assert main(["calibrate", str(spec.path), "--run-root", str(runs), "--per-interval", "1", "--episodes", str(EPISODES)]) == 0
    out = capsys.readouterr().out
    assert "cost: this run 0 episodes" in out and "deployed anchor:" in out and "calibration.png" in out
    surrogate = str(RunDir.of(spec, runs).surrogate)
    assert main(["deploy", surrogate, "--spec", str(spec.path), "--weight", "10", "--episodes", "4"]) == 0
    out = capsys.readouterr().out
    assert f"deployed at weight 10: {calibration.points[-1].chosen}" in out and "anchor:10:" in out and "estimated return" in out
    assert main(["deploy", surrogate, "--spec", str(spec.path), "--weight", "10", "--episodes", "4", "--plain"]) == 0
    assert "deployed at weight 10: surrogate (the plain surrogate, forced" in capsys.readouterr().out
    assert main(["calibrate", str(spec.path), "--run-root", str(runs), "--episodes", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "--episodes" in err


def test_parameter_interpolation_is_a_candidate_when_the_anchors_share_a_start(calibrated):
    from hti_rl.methods.baselines import ParameterInterpolation

    spec, runs, _, _ = calibrated
    policy = _load(spec, runs, calibrated=False)
    for actor in policy.actors:  # as fine-tunes of one base would be marked (hti_rl.training.store)
        actor.arch["source"]["shared_start"] = "one-base"
    calibration, _ = calibrate_policy(policy, spec, RunDir.of(spec, runs), "shared", per_interval=1, episodes=EPISODES, progress=False)
    between = [p for p in calibration.points if p.weight not in spec.anchors]
    assert all("param_interp" in p.estimate and "param_interp" in p.versus for p in between)
    points = [dataclasses.replace(p, chosen="param_interp") if i in (1, 2) else p for i, p in enumerate(calibration.points)]
    policy.attach_calibration(dataclasses.replace(calibration, points=tuple(points)))
    weight = float(np.sqrt(points[1].weight * points[2].weight))  # between 0.3 and √0.1, both param_interp
    policy.set_weight(weight)
    assert policy.deployed == "param_interp"
    reference = ParameterInterpolation(policy.observation_space, policy.action_space, list(policy.actors), policy.weights,
                                       policy.weight_scale, policy.x_mean.numpy(), policy.x_std.numpy(), weight=weight)
    obs = np.random.default_rng(3).normal(size=(8, 1)).astype(np.float32)
    np.testing.assert_allclose(policy.predict(obs, deterministic=True)[0], reference.predict(obs, deterministic=True)[0], atol=1e-6)
