"""RewardWeightWrapper: rewards against hand-computed ones on every task, weight switching, errors, VecEnvs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv

from hti_rl.envs.wrappers import COMPONENTS_KEY, WEIGHT_KEY, RewardWeightWrapper
from hti_rl.errors import HTIError, SpecError, WeightError
from hti_rl.spec.load import load_task

ENVS = Path(__file__).resolve().parents[1] / "envs"


def _steps(env: gym.Env, n: int, seed: int = 0, scale: float = 1.0):
    """Yield (obs before, action, next_obs, reward, info) for ``n`` steps of random actions."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    for _ in range(n):
        action = (scale * rng.uniform(low, high)).astype(np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        yield obs, action, next_obs, reward, info
        obs = env.reset()[0] if terminated or truncated else next_obs


@pytest.mark.parametrize("task, weight", [("lqr1d", 0.3), ("lqr2d", 3.0)])
def test_lqr_reward(task, weight):
    env = load_task(ENVS / f"{task}.yaml").make_env(weight)
    R = env.unwrapped.R
    for obs, action, _, reward, info in _steps(env, 60):
        u = np.clip(action, -env.unwrapped.action_bound, env.unwrapped.action_bound)
        expected = -(obs @ obs) - weight * (u @ R @ u)  # Q = I
        assert reward == pytest.approx(expected, rel=1e-5)
        assert info[COMPONENTS_KEY] == {"state": info["reward_state"], "ctrl": info["reward_ctrl"]}
        assert info[WEIGHT_KEY] == weight


def test_pendulum_reward_matches_pendulum_at_its_own_weight():
    """At λ = 0.001 the reward is Pendulum-v1's own, torque clipping and angle wrapping included."""
    env = load_task(ENVS / "pendulum.yaml").make_env(0.001)
    plain = gym.make("Pendulum-v1")
    plain.reset(seed=3)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        action = rng.uniform(-3, 3, size=1).astype(np.float32)  # beyond ±2 half the time
        _, reward, *_ = env.step(action)
        assert reward == pytest.approx(plain.step(action)[1], rel=1e-5, abs=1e-6)


def test_pendulum_reward_by_hand():
    weight = 0.5
    env = load_task(ENVS / "pendulum.yaml").make_env(weight)
    for obs, action, _, reward, info in _steps(env, 50, scale=1.5):
        theta, speed, u = np.arctan2(obs[1], obs[0]), obs[2], np.clip(action[0], -2, 2)
        assert reward == pytest.approx(-(theta**2 + 0.1 * speed**2 + weight * u**2), rel=1e-6)
        assert info[COMPONENTS_KEY]["torque"] == pytest.approx(-(u**2))


def test_reacher_reward_by_hand():
    weight = 3.0
    env = load_task(ENVS / "reacher.yaml").make_env(weight)
    for _, action, next_obs, reward, info in _steps(env, 60):
        dist = -np.linalg.norm(next_obs[-2:])  # fingertip − target, after the step
        ctrl = -(action.astype(np.float64) ** 2).sum()  # unweighted: reward_control_weight is 1
        assert info[COMPONENTS_KEY]["ctrl"] == pytest.approx(ctrl, rel=1e-6)
        assert reward == pytest.approx(dist + weight * ctrl, rel=1e-5)


def test_mo_halfcheetah_reward_by_hand():
    pytest.importorskip("mo_gymnasium")
    weight = 0.3
    env = load_task(ENVS / "mo_halfcheetah.yaml").make_env(weight)
    for _, action, _, reward, info in _steps(env, 30):
        forward, ctrl = info["x_velocity"], -(action.astype(np.float64) ** 2).sum()  # MO-Gymnasium undoes ctrl_cost_weight
        assert info[COMPONENTS_KEY]["ctrl"] == pytest.approx(ctrl, rel=1e-5)
        assert reward == pytest.approx(forward + weight * ctrl, rel=1e-4, abs=1e-5)


def _lqr(weight: float = 1.0, **kwargs) -> RewardWeightWrapper:
    return RewardWeightWrapper(
        gym.make("hti_rl/LQR1D-v0"), components={"state": "reward_state", "ctrl": "reward_ctrl"}, weighted="ctrl", weight=weight, **kwargs
    )


def test_fixed_weights():
    env = _lqr(weight=2.0, fixed={"state": 0.5})
    for _, _, _, reward, info in _steps(env, 5):
        c = info[COMPONENTS_KEY]
        assert reward == pytest.approx(0.5 * c["state"] + 2.0 * c["ctrl"])


def test_set_weight_takes_effect_at_next_reset():
    env = _lqr(weight=1.0)
    _, info = env.reset(seed=0)
    assert info[WEIGHT_KEY] == 1.0
    env.set_weight(7.0)
    _, reward, *_, info = env.step(np.array([1.0], dtype=np.float32))
    assert env.weight == 1.0 and info[WEIGHT_KEY] == 1.0
    assert reward == pytest.approx(info["reward_state"] + info["reward_ctrl"])
    _, info = env.reset()
    assert env.weight == 7.0 and info[WEIGHT_KEY] == 7.0
    _, reward, *_, info = env.step(np.array([1.0], dtype=np.float32))
    assert reward == pytest.approx(info["reward_state"] + 7.0 * info["reward_ctrl"])


@pytest.mark.parametrize("weight", [float("nan"), float("inf")])
def test_non_finite_weight_refused(weight):
    with pytest.raises(WeightError, match="not finite"):
        _lqr().set_weight(weight)


def test_missing_info_key_names_key_and_keys_present():
    env = RewardWeightWrapper(gym.make("hti_rl/LQR1D-v0"), components={"ctrl": "reward_control"}, weighted="ctrl", weight=1.0)
    env.reset(seed=0)
    with pytest.raises(SpecError, match=r"'reward_control'.*\['reward_ctrl', 'reward_state'\]"):
        env.step(np.zeros(1, dtype=np.float32))


def test_non_finite_component_names_component_and_step():
    def broken(obs, action, next_obs):
        return float("nan") if abs(obs[0]) > 0 else 0.0

    env = RewardWeightWrapper(gym.make("hti_rl/LQR1D-v0"), components={"ctrl": "reward_ctrl", "odd": broken}, weighted="ctrl", weight=1.0)
    env.reset(seed=0)
    with pytest.raises(HTIError, match="component 'odd' is nan at step 0"):
        env.step(np.zeros(1, dtype=np.float32))


def test_vector_index_out_of_range():
    env = RewardWeightWrapper(gym.make("hti_rl/LQR1D-v0"), components={"ctrl": 2}, weighted="ctrl", weight=1.0)
    env.reset(seed=0)
    with pytest.raises(SpecError, match="index 2 of the env's vector reward"):
        env.step(np.zeros(1, dtype=np.float32))


def test_bad_arguments():
    with pytest.raises(SpecError, match="weighted component 'torque'"):
        RewardWeightWrapper(gym.make("hti_rl/LQR1D-v0"), components={"ctrl": "reward_ctrl"}, weighted="torque", weight=1.0)
    with pytest.raises(SpecError, match=r"fixed weights given for \['ctrl'\]"):
        _lqr(fixed={"ctrl": 2.0})


def test_vec_env_switches_weight_between_episodes():
    spec = load_task(ENVS / "lqr1d.yaml")
    venv = make_vec_env(lambda: spec.make_env(0.1), n_envs=2, seed=0)
    venv.reset()
    venv.env_method("set_weight", 10.0)
    horizon = spec.make_env(0.1).unwrapped.horizon
    for t in range(horizon + 1):
        _, rewards, dones, infos = venv.step(np.zeros((2, 1), dtype=np.float32))
        expected = 0.1 if t < horizon else 10.0
        assert [i[WEIGHT_KEY] for i in infos] == [expected, expected]
        assert dones.all() == (t == horizon - 1)
        np.testing.assert_allclose(rewards, [i["reward_state"] for i in infos])  # u = 0: no control cost
    assert venv.get_attr("weight") == [10.0, 10.0]


def test_subproc_vec_env():
    spec = load_task(ENVS / "pendulum.yaml")
    venv = make_vec_env(lambda: spec.make_env(0.5), n_envs=2, seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "fork"})
    try:
        venv.reset()
        _, rewards, _, infos = venv.step(np.full((2, 1), 1.0, dtype=np.float32))
        for reward, info in zip(rewards, infos):
            c = info[COMPONENTS_KEY]
            assert reward == pytest.approx(c["angle"] + 0.1 * c["speed"] + 0.5 * c["torque"], rel=1e-5)
            assert c["torque"] == -1.0
    finally:
        venv.close()
