"""The surrogate at weight vectors (issue 22): the 2-weight LQR task, R = diag(λ1, λ2)·R, with exact-gain
anchors on the 3×3 log grid over [0.1, 10]²; the surrogate against the Riccati optimum beside the
multilinear mix of the anchors' actions, exact at the anchors, save/load, and the 1-axis reduction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import save_lqr_anchor

from hti_rl.dataset import PolicyDataset, record
from hti_rl.errors import WeightError
from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.grid import fit_grid_multilinear, fit_grid_nearest, fit_grid_regression
from hti_rl.methods.grid_surrogate import GridSurrogatePolicy, fit_grid_policy
from hti_rl.methods.surrogate import clot_config
from hti_rl.spec.load import load_task
from hti_rl.training.store import load_anchor_actor

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
FAST_CLOT = {"steps": 50}
INTERIOR = [(0.3, 0.3), (0.3, 3.0), (3.0, 0.3), (3.0, 3.0), (0.2, 5.0), (2.0, 0.5)]


def grid_spec(root: Path, **changes):
    raw = yaml.safe_load((ROOT / "envs/lqr2w.yaml").read_text())
    raw.update(hyperparams_file=str(ROOT / "agents/ppo.yml"), record={"episodes": 2, "samples": 8, "max_states": 200}, **changes)
    path = root / "lqr2w.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_task(path)


@pytest.fixture(scope="module")
def lqr2w(tmp_path_factory):
    """(spec, run root, dataset, actors, surrogate): exact-gain anchors on the 3×3 grid, recorded and fitted once."""
    root = tmp_path_factory.mktemp("lqr2w")
    spec, runs = grid_spec(root), root / "runs"
    for w in spec.anchors:
        save_lqr_anchor(spec, w, runs)
    dataset = record(spec, runs, progress=False)
    actors = [load_anchor_actor(spec, w, runs) for w in spec.anchors]
    policy = fit_grid_policy(spec, dataset, actors, clot_config(FAST_CLOT, seed=0), progress=False)
    return spec, runs, dataset, actors, policy


def relative_error(policy, spec, obs, weight) -> float:
    """Mean ‖a − a*‖ / ‖a*‖ of the deterministic action against the Riccati optimum u = −K(λ1, λ2) x."""
    policy.set_weight(weight)
    action, _ = policy.predict(obs, deterministic=True)
    optimum = obs @ -spec.make_env(weight).unwrapped.optimal_gain(weight).T
    return float(np.mean(np.linalg.norm(action - optimum, axis=1) / np.linalg.norm(optimum, axis=1)))


def test_surrogate_error_against_multilinear(lqr2w):
    """Issue 22 item 3 as measured: with exact (nearly deterministic) anchors nothing between the anchors tells
    any interpolating method how the optimum bends (docs/method.md §7.2, §12), and the surrogate's fitted paths
    stay close to the straight ones: its error matches the multilinear mix's to within a tenth of a percentage
    point on average (measured: 7.57% against 7.53%, seed 0, 50 steps), not below it."""
    spec, _, dataset, actors, policy = lqr2w
    mix = fit_grid_multilinear(spec, dataset, actors)
    obs = dataset.obs[np.linalg.norm(dataset.obs, axis=1) > 0.3]  # relative error is ill-posed at the origin
    ours = [relative_error(policy, spec, obs, w) for w in INTERIOR]
    theirs = [relative_error(mix, spec, obs, w) for w in INTERIOR]
    print("surrogate", np.round(ours, 4), "multilinear", np.round(theirs, 4))
    assert np.mean(ours) <= np.mean(theirs) + 0.002
    assert all(a <= b + 0.005 for a, b in zip(ours, theirs))
    assert max(ours) < 0.2 and min(ours) > 0.01  # a real miss, of the size the grid's decade-wide cells give


def test_exact_at_every_anchor_vector(lqr2w):
    spec, runs, dataset, actors, policy = lqr2w
    obs = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    for w, actor in zip(spec.anchors, actors):
        policy.set_weight(w)
        np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], actor.predict(obs, deterministic=True)[0])


def test_on_an_edge_it_is_the_row_path(lqr2w):
    """s2 = 0: the row's scalar CLOT path; s1 = 0: the column's."""
    import torch

    spec, _, _, actors, policy = lqr2w
    obs = torch.from_numpy(np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32))
    x = (obs - policy.x_mean) / policy.x_std
    policy.set_weight((3.0, 1.0))  # between anchors (1, 1) and (10, 1): row j = 1
    row = policy.rows[1].push(actors[4].distribution(obs)[0], x, torch.full((8,), float(np.log(3.0))), y_end=actors[7].distribution(obs)[0])
    torch.testing.assert_close(policy._inside(obs, x, *policy._cell, True), row)


def test_save_load_and_vector_checks(lqr2w, tmp_path):
    spec, _, dataset, _, policy = lqr2w
    path = tmp_path / "surrogate.zip"
    policy.save(path)
    loaded = AnchoredPolicy.load(path, expect_fingerprint=spec.fingerprint(), weight=(0.3, 3.0))
    assert isinstance(loaded, GridSurrogatePolicy) and loaded.weight == (0.3, 3.0)
    policy.set_weight((0.3, 3.0))
    np.testing.assert_array_equal(loaded.predict(dataset.obs[:50], deterministic=True)[0], policy.predict(dataset.obs[:50], deterministic=True)[0])
    loaded.set_weight("3,0.3")
    assert loaded.weight == (3.0, 0.3)
    for bad, words in [(0.3, "not the scalar"), ((0.3,), "has 1 entries"), ((30, 1), "outside the anchor range")]:
        with pytest.raises(WeightError, match=words):
            loaded.set_weight(bad)
    stochastic = loaded.predict(dataset.obs[:5])[0]
    assert stochastic.shape == (5, 2) and np.isfinite(stochastic).all()


def test_a_clot_model_fitted_on_other_anchor_times_is_refused(lqr2w, tmp_path):
    """A row model fitted on other times (log10 instead of the axis's natural log, say) would put every weight
    at the wrong local time without a word: loading refuses it and names the axis."""
    import copy

    from hti_rl.errors import FileFormatError

    spec, _, _, _, policy = lqr2w
    other = copy.deepcopy(policy)
    other.rows[1].times.div_(np.log(10.0))
    other.save(tmp_path / "other.zip")
    with pytest.raises(FileFormatError, match=r"anchor times .* are not those of the .* axis \(row model 1"):
        AnchoredPolicy.load(tmp_path / "other.zip", expect_fingerprint=spec.fingerprint())


def test_baselines_on_the_grid(lqr2w, tmp_path):
    spec, _, dataset, actors, _ = lqr2w
    obs = dataset.obs[np.linalg.norm(dataset.obs, axis=1) > 0.3]
    regression = fit_grid_regression(spec, dataset, actors, steps=300)
    nearest = fit_grid_nearest(spec, dataset, actors)
    for policy in (regression, nearest, fit_grid_multilinear(spec, dataset, actors)):
        policy.save(tmp_path / "p.zip")
        again = AnchoredPolicy.load(tmp_path / "p.zip", weight=(3.0, 3.0))
        policy.set_weight((3.0, 3.0))
        np.testing.assert_array_equal(again.predict(obs, deterministic=True)[0], policy.predict(obs, deterministic=True)[0])
    nearest.set_weight((0.2, 5.0))  # the nearest anchor in log λ is (0.1, 10)
    np.testing.assert_array_equal(nearest.predict(obs, deterministic=True)[0], actors[2].predict(obs, deterministic=True)[0])
    assert relative_error(regression, spec, obs, (0.3, 3.0)) < 0.5


def test_one_axis_grid_is_the_scalar_surrogate(tmp_path):
    from hti_rl.methods.surrogate import fit_policy

    from conftest import write_lqr_spec

    spec = load_task(write_lqr_spec(tmp_path, name="line", env_id="hti_rl/LQR2D-v0", anchors=[0.1, 1.0, 10.0], held_out=[3.0],
                                    record={"episodes": 1, "samples": 4, "max_states": 100}))
    runs = tmp_path / "runs"
    for w in spec.anchors:
        save_lqr_anchor(spec, w, runs)
    dataset = record(spec, runs, progress=False)
    actors = [load_anchor_actor(spec, w, runs) for w in spec.anchors]
    config = clot_config({"steps": 40}, seed=0)
    scalar, grid = fit_policy(spec, dataset, actors, config, progress=False), fit_grid_policy(spec, dataset, actors, config, progress=False)
    for w in (0.3, 3.0, 10.0):
        scalar.set_weight(w)
        grid.set_weight((w,))
        np.testing.assert_allclose(grid.predict(dataset.obs, deterministic=True)[0], scalar.predict(dataset.obs, deterministic=True)[0], atol=1e-5)


def test_more_than_two_axes_are_refused_by_the_surrogate_fit(tmp_path):
    from hti_rl.errors import SpecError
    from hti_rl.methods.grid_surrogate import check_grid_config

    spec = grid_spec(tmp_path, reward={"components": {"state": {"info": "reward_state"}, "ctrl0": {"info": "reward_ctrl_0"},
                                                      "ctrl1": {"info": "reward_ctrl_1"}}, "weighted": ["state", "ctrl0", "ctrl1"]},
                     anchors={"state": [0.5, 2.0], "ctrl0": [0.1, 10.0], "ctrl1": [0.1, 10.0]}, held_out=[[1, 1, 1]])
    assert spec.grid.shape == (2, 2, 2)
    with pytest.raises(SpecError, match="at most 2 weight axes"):
        check_grid_config(spec, clot_config(seed=0))
    with pytest.raises(SpecError, match="needs CLOT mode 'endpoint'"):
        check_grid_config(grid_spec(tmp_path), clot_config({"mode": "map"}, seed=0))


def test_parameter_interpolation_on_the_grid(lqr2w):
    """Linear exact-gain actors: the multilinear mix of their parameters is the multilinear mix of their
    actions; anchors without a shared start are refused."""
    import copy

    from hti_rl.errors import AnchorError
    from hti_rl.methods.grid import GridParameterInterpolation, grid_arguments

    spec, _, dataset, actors, _ = lqr2w
    with pytest.raises(AnchorError, match="shared start"):
        GridParameterInterpolation(**grid_arguments(spec, dataset, actors, 0, "param_interp"))
    shared = [copy.deepcopy(a) for a in actors]
    for actor in shared:
        actor.arch.setdefault("source", {})["shared_start"] = "one-base"
    soup = GridParameterInterpolation(**grid_arguments(spec, dataset, shared, 0, "param_interp"))
    mix = fit_grid_multilinear(spec, dataset, shared)
    obs = dataset.obs[:40]
    for weight in ((0.3, 3.0), (2.0, 0.5)):
        soup.set_weight(weight)
        mix.set_weight(weight)
        np.testing.assert_allclose(soup.predict(obs, deterministic=True)[0], mix.predict(obs, deterministic=True)[0], atol=1e-5)
