"""LQR env and Riccati gain: closed form in 1-D, the DARE in 2-D, the curve of optimal actions, interpolation misses."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import hti_rl.spec.task  # noqa: F401  (importing the task module registers the LQR ids)
from hti_rl.envs.lqr import LQR_ENVS, LQREnv, optimal_gain


def _closed_form_1d(weight: float) -> float:
    p = (1 + np.sqrt(1 + 4 * weight)) / 2  # root of P² − P − λ = 0
    return p / (weight + p)


def _lqr2d() -> LQREnv:
    return LQREnv(**LQR_ENVS["hti_rl/LQR2D-v0"])


@pytest.mark.parametrize("weight", [0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0])
def test_gain_1d_matches_closed_form(weight):
    np.testing.assert_allclose(optimal_gain([[1]], [[1]], [[1]], [[1]], weight), [[_closed_form_1d(weight)]], rtol=1e-10)


@pytest.mark.parametrize("discount", [1.0, 0.95, 0.5])
def test_gain_2d_solves_the_discounted_riccati_equation(discount):
    env = _lqr2d()
    weight = 0.7
    K = env.optimal_gain(weight, discount)
    A, B, Q, R = np.sqrt(discount) * env.A, np.sqrt(discount) * env.B, env.Q, weight * env.R
    P = Q.copy()  # value iteration of the Riccati recursion converges to the same P and K
    for _ in range(2000):
        P = Q + A.T @ P @ A - A.T @ P @ B @ np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    np.testing.assert_allclose(K, np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(K, optimal_gain(env.A, env.B, env.Q, env.R, weight, discount))


def test_optimal_action_2d_traces_a_curve():
    env = _lqr2d()
    x = np.array([1.0, 1.0]) / np.sqrt(2)
    u = np.stack([-env.optimal_gain(w) @ x for w in np.logspace(-1, 1, 21)])
    chord = u[-1] - u[0]
    offsets = u - u[0]
    distance = np.abs(offsets[:, 0] * chord[1] - offsets[:, 1] * chord[0]) / np.linalg.norm(chord)
    assert distance.max() > 0.3 * np.linalg.norm(chord)  # far from the straight line between the ends
    angles = np.degrees(np.arctan2(u[:, 1], u[:, 0]))
    assert abs(angles[-1] - angles[0]) > 10  # the action's direction turns, not only its length


def _interpolation_miss(gain, low=1.0, high=10.0, target=3.0) -> tuple[float, float]:
    """Relative error of the gain at ``target`` interpolated from the anchors' exact gains: (linear λ, log λ)."""
    k_low, k_high, k_target = gain(low), gain(high), gain(target)
    misses = []
    for s in ((target - low) / (high - low), np.log(target / low) / np.log(high / low)):
        misses.append(np.linalg.norm(k_low + s * (k_high - k_low) - k_target) / np.linalg.norm(k_target))
    return misses[0], misses[1]


def test_interpolation_miss_linear_vs_log():
    """docs/method.md §2: anchors 1 and 10, λ = 3: linear interpolation misses by ~25%, log-λ by ~4%."""
    linear, log = _interpolation_miss(lambda w: optimal_gain([[1]], [[1]], [[1]], [[1]], w))
    assert linear == pytest.approx(0.245, abs=0.005) and log == pytest.approx(0.041, abs=0.005)
    env = _lqr2d()
    linear, log = _interpolation_miss(env.optimal_gain)
    assert log < linear / 1.5  # measured: 21.9% and 11.9%


def test_env_dynamics_costs_and_bounds():
    env = LQREnv(A=[[1.0, 0.2], [0.0, 0.9]], B=[[1.0, 0.0], [0.5, 1.0]], R=[[2.0, 0.0], [0.0, 1.0]], noise_std=0.0, horizon=3,
                 action_bound=1.0, state_bound=5.0)
    assert np.all(np.isfinite(env.observation_space.high)) and np.all(np.isfinite(env.action_space.high))
    x, _ = env.reset(seed=0)
    assert env.observation_space.contains(x)
    u = np.array([3.0, -0.5], dtype=np.float32)  # first entry beyond the bound: clipped to 1
    x1, reward, terminated, truncated, info = env.step(u)
    clipped = np.array([1.0, -0.5])
    assert info["reward_state"] == pytest.approx(-float(x @ x), rel=1e-6)
    assert info["reward_ctrl"] == pytest.approx(-(2 * 1.0**2 + 0.5**2))
    assert reward == pytest.approx(info["reward_state"] + info["reward_ctrl"])
    np.testing.assert_allclose(x1, env.A @ x + env.B @ clipped, rtol=1e-6)
    assert not terminated and not truncated
    env.step(u)
    assert env.step(u)[3]  # truncated after `horizon` steps


def test_registered_ids():
    for env_id in LQR_ENVS:
        env = gym.make(env_id)
        obs, _ = env.reset(seed=1)
        assert obs.shape == env.observation_space.shape and obs.dtype == np.float32
    assert gym.make("hti_rl/LQR1D-v0").unwrapped.optimal_gain(1.0) == pytest.approx(_closed_form_1d(1.0))


def test_control_weight_scales_the_control_cost_as_reacher_does():
    import gymnasium as gym

    base, weighted = gym.make("hti_rl/LQR1D-v0"), gym.make("hti_rl/LQR1D-v0", control_weight=0.1)
    for env in (base, weighted):
        env.reset(seed=3)
    _, r1, *_, info1 = base.step(np.array([2.0], dtype=np.float32))
    _, r2, *_, info2 = weighted.step(np.array([2.0], dtype=np.float32))
    assert info1["reward_ctrl"] == -4.0 and info2["reward_ctrl"] == pytest.approx(-0.4)
    assert r1 - info1["reward_ctrl"] == pytest.approx(r2 - info2["reward_ctrl"])  # the state cost is untouched
