"""AnchorActor reproduces SB3's own action distribution and predict, and survives a weights-only round trip."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from hti_rl.actors import DETERMINISTIC_LOG_STD, AnchorActor
from hti_rl.errors import AnchorError, FileFormatError, ObservationError, SpaceError
from hti_rl.sb3io.actor import actor_from_sb3

NET = dict(net_arch=[16, 16])


def _train(algo, env_id: str, normalize: bool, policy_kwargs: dict = NET, **kwargs):
    """A few hundred steps of ``algo`` on ``env_id`` -> (model, its VecNormalize or None)."""
    venv = make_vec_env(env_id, n_envs=2, seed=0)
    if normalize:
        venv = VecNormalize(venv, clip_obs=5.0)
    model = algo("MlpPolicy", venv, seed=0, policy_kwargs=dict(policy_kwargs), **kwargs)  # SB3 edits it in place
    model.learn(300)
    return model, (venv if normalize else None)


def _obs(env_id: str, n: int = 32) -> np.ndarray:
    """Real observations: a short random rollout, so VecNormalize's statistics matter."""
    env = gym.make(env_id)
    env.action_space.seed(1)
    obs, _ = env.reset(seed=1)
    out = []
    for _ in range(n):
        out.append(obs)
        obs, *_ = env.step(env.action_space.sample())
    return np.asarray(out, dtype=np.float32)


CASES = {
    "ppo": (PPO, "Pendulum-v1", False, dict(n_steps=64, batch_size=64, n_epochs=1)),
    "ppo_vecnorm": (PPO, "Pendulum-v1", True, dict(n_steps=64, batch_size=64, n_epochs=1)),
    "ppo_gsde_vecnorm": (PPO, "Reacher-v5", True, dict(n_steps=64, batch_size=64, n_epochs=1, use_sde=True)),
    "ppo_gsde_expln": (
        PPO, "Pendulum-v1", False,
        dict(n_steps=64, batch_size=64, n_epochs=1, use_sde=True, policy_kwargs=dict(NET, use_expln=True, full_std=False)),
    ),
    "a2c": (A2C, "Reacher-v5", False, dict(n_steps=8)),
    "sac_vecnorm": (SAC, "Pendulum-v1", True, dict(learning_starts=100, batch_size=32)),
    "sac_gsde": (SAC, "Reacher-v5", False, dict(learning_starts=100, batch_size=32, use_sde=True)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request):
    algo, env_id, normalize, kwargs = CASES[request.param]
    return _train(algo, env_id, normalize, **kwargs), env_id


def _sb3_distribution(model, obs_norm: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """SB3's own (mean, log_std) of the unsquashed action at normalised observations."""
    obs_t = torch.as_tensor(obs_norm)
    with torch.no_grad():
        if isinstance(model, SAC):
            mean, log_std, kwargs = model.policy.actor.get_action_dist_params(obs_t)
            if kwargs:  # gSDE: the per-state std comes from the distribution
                dist = model.policy.actor.action_dist.proba_distribution(mean, log_std, **kwargs).distribution
                return dist.mean, dist.stddev.log()
            return mean, log_std
        dist = model.policy.get_distribution(obs_t).distribution
        return dist.mean, dist.stddev.log()


def test_actor_matches_sb3(trained):
    (model, vecnorm), env_id = trained
    obs = _obs(env_id)
    obs_norm = vecnorm.normalize_obs(obs) if vecnorm is not None else obs
    actor = actor_from_sb3(model, vecnorm)
    with torch.no_grad():
        mean, log_std = actor.distribution(torch.as_tensor(obs))
        action = actor.to_env_action(mean).numpy()
    sb3_mean, sb3_log_std = _sb3_distribution(model, obs_norm)
    torch.testing.assert_close(mean, sb3_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_std, sb3_log_std.expand_as(log_std), atol=1e-5, rtol=1e-5)
    expected, _ = model.predict(obs_norm, deterministic=True)
    np.testing.assert_allclose(action, expected, atol=1e-5)
    assert actor.kind == ("squashed_gaussian" if isinstance(model, SAC) else "gaussian")


def test_predict_matches_sb3_on_raw_obs(trained):
    (model, vecnorm), env_id = trained
    obs = _obs(env_id)
    obs_norm = vecnorm.normalize_obs(obs) if vecnorm is not None else obs
    actor = actor_from_sb3(model, vecnorm)
    action, state = actor.predict(obs)
    assert state is None and action.shape == (len(obs), actor.action_dim)
    np.testing.assert_allclose(action, model.predict(obs_norm, deterministic=True)[0], atol=1e-5)
    single, _ = actor.predict(obs[0])
    np.testing.assert_allclose(single, model.predict(obs_norm[0], deterministic=True)[0], atol=1e-5)
    actor.seed(3)
    sample, _ = actor.predict(obs, deterministic=False)
    again, _ = actor.predict(obs, deterministic=False, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(sample, again)
    assert not np.allclose(sample, action) and np.all((sample >= actor.action_low.numpy()) & (sample <= actor.action_high.numpy()))
    with pytest.raises(ObservationError, match=r"shape \(3, 99\)"):
        actor.predict(np.zeros((3, 99), dtype=np.float32))


def test_state_round_trip_weights_only(trained):
    (model, vecnorm), env_id = trained
    actor = actor_from_sb3(model, vecnorm)
    buf = io.BytesIO()
    torch.save(actor.state(), buf)
    buf.seek(0)
    clone = AnchorActor.from_state(torch.load(buf, weights_only=True))
    obs = torch.as_tensor(_obs(env_id))
    with torch.no_grad():
        for a, b in zip(actor.distribution(obs), clone.distribution(obs)):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert clone.kind == actor.kind


def test_gaussian_clips_to_box():
    model, _ = _train(PPO, "Pendulum-v1", False, n_steps=64, batch_size=64, n_epochs=1)
    actor = actor_from_sb3(model)
    y = torch.linspace(-10, 10, 21).reshape(-1, 1)
    np.testing.assert_array_equal(actor.to_env_action(y).numpy(), np.clip(y.numpy(), -2.0, 2.0))


def test_td3_deterministic():
    venv = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    model = TD3("MlpPolicy", venv, seed=0, policy_kwargs=dict(NET), learning_starts=50, batch_size=32)
    model.learn(150)
    actor = actor_from_sb3(model)
    obs = _obs("Pendulum-v1")
    with torch.no_grad():
        mean, log_std = actor.distribution(torch.as_tensor(obs))
        action = actor.to_env_action(mean).numpy()
    assert actor.kind == "deterministic"
    assert torch.all(log_std == DETERMINISTIC_LOG_STD)
    np.testing.assert_allclose(action, model.predict(obs, deterministic=True)[0], atol=1e-5)


def test_non_box_action_space_refused():
    model = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, policy_kwargs=dict(NET))
    with pytest.raises(SpaceError, match="Box action space"):
        actor_from_sb3(model)


def test_unsupported_model_refused():
    with pytest.raises(AnchorError, match="PPO, A2C, SAC"):
        actor_from_sb3(object())


def test_bad_state_refused():
    with pytest.raises(FileFormatError, match="format"):
        AnchorActor.from_state({"arch": {}})
