"""The fused, traced predict (AtWeight) gives the unfused computation's actions: exactly when
deterministic below FAST_BATCH, within 1e-6 from it on (the fast arrangement: tanh through σ, both
anchors in one stack, folded standardisations, the push in env units), the same draws when stochastic, at every
weight, batch size and anchor kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import synthetic_surrogate

from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.deployed import FAST_BATCH

pytestmark = pytest.mark.usefixtures("one_thread")

WEIGHTS = (0.1, 0.2, 0.5, 1.0, 2.0, 7.0, 10.0)  # anchors, and two weights in each interval (in-place moves)


def unfused(policy, obs: np.ndarray, deterministic: bool) -> np.ndarray:
    """The reference: AnchoredPolicy's per-call computation (CLOTModel.push), clipped as SB3 does."""
    with torch.no_grad():
        actions = AnchoredPolicy._predict(policy, torch.from_numpy(obs), deterministic).numpy()
    return np.clip(actions, policy.action_space.low, policy.action_space.high)


@pytest.fixture(scope="module", params=[
    dict(algo="ppo"), dict(algo="sac", normalize=True), dict(algo="ppo", mode="map", normalize=True),
    dict(algo="ppo", max_bend=None),
], ids=["ppo", "sac-vecnormalize", "map-mode", "unbounded-path"])
def policy(request):
    return synthetic_surrogate(5, 3, **request.param)


@pytest.mark.parametrize("trace", [True, False])
def test_deterministic_actions_equal_the_unfused_ones(policy, trace):
    policy.trace = trace
    obs = np.random.default_rng(0).normal(size=(33, 5)).astype(np.float32)
    for weight in WEIGHTS:
        policy.set_weight(weight)
        for batch in (obs, obs[:1], obs[:7], obs[:31]):  # traces made at one batch size serve the others
            fused, expected = policy.predict(batch, deterministic=True)[0], unfused(policy, batch, True)
            if len(batch) < FAST_BATCH:
                np.testing.assert_array_equal(fused, expected)
            else:
                np.testing.assert_allclose(fused, expected, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(policy.predict(obs[0], deterministic=True)[0], unfused(policy, obs[:1], True)[0])
    policy.trace = True


@pytest.mark.parametrize("batch", [16, 40], ids=["below-fast-batch", "fast-arrangement"])
def test_stochastic_actions_are_the_unfused_draws(policy, batch):
    obs = np.random.default_rng(1).normal(size=(batch, 5)).astype(np.float32)
    for weight in WEIGHTS:
        policy.set_weight(weight)
        policy.generator.manual_seed(7)
        fused = policy.predict(obs, deterministic=False)[0]
        policy.generator.manual_seed(7)
        np.testing.assert_allclose(fused, unfused(policy, obs, False), rtol=0, atol=1e-6)
        assert not np.array_equal(fused, policy.predict(obs, deterministic=False)[0])  # the generator advances


def test_the_fast_arrangement_serves_endpoint_paths_between_like_anchors(policy):
    """It is built for every endpoint path here (the anchors share one layer description), not in map mode, and
    not for anchors whose layers differ (they run one after the other, as below FAST_BATCH)."""
    from hti_rl.methods.deployed import _Pair

    policy.set_weight(0.5)
    at = policy.at_weight
    assert (at.pair is not None) == policy.clot.endpoint
    wider = dict(at.end.arch, trunk=[{**at.end.arch["trunk"][0], "out": 17}, *at.end.arch["trunk"][1:]])
    assert _Pair.fits(at.start, at.end) and not _Pair.fits(at.start, type(at.end)(wider))


def test_set_weight_leaves_the_policy_state_dict_alone(policy):
    keys = set(policy.state_dict())
    policy.set_weight(0.5)
    policy.predict(np.zeros(5, np.float32))
    assert set(policy.state_dict()) == keys and not any(k.startswith("at") for k in keys)


def test_observation_checks_and_sb3_shapes_remain(policy):
    from hti_rl.errors import ObservationError

    policy.set_weight(0.5)
    single, state = policy.predict(np.zeros(5, np.float64), state=("s",))
    assert single.shape == (3,) and single.dtype == np.float32 and state == ("s",)
    with pytest.raises(ObservationError, match="tuple"):
        policy.predict((np.zeros(5), {}))
    with pytest.raises(ObservationError, match="NaN"):
        policy.predict(np.array([np.nan, 0, 0, 0, 0]))
    with pytest.raises(ObservationError, match="float32 range"):
        policy.predict(np.array([1e300, 0, 0, 0, 0]))
    big = policy.predict(np.full((4, 5), 50.0, np.float32), deterministic=False)[0]
    assert np.all(np.abs(big) <= policy.action_space.high)


def test_a_clot_model_fitted_on_other_anchor_times_is_refused(policy):
    """The path's local time comes from the policy's times: a CLOT model fitted on others would extrapolate silently."""
    from hti_rl.errors import FileFormatError
    from hti_rl.methods.surrogate import SurrogatePolicy

    with pytest.raises(FileFormatError, match="anchor times .* are not this policy's"):
        SurrogatePolicy(policy.observation_space, policy.action_space, list(policy.actors), policy.weights, "linear",
                        policy.x_mean, policy.x_std, header=policy.header, clot=policy.clot)
