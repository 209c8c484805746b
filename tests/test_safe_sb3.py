"""hti_rl.sb3io.safe_sb3: an SB3 zip loads with the same actions as SB3's own load, and no serialized setting runs code."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, TD3
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.utils import LinearSchedule

from hti_rl.errors import SpaceError
from hti_rl.sb3io.safe_pickle import UnsafePickleError
from hti_rl.sb3io.safe_sb3 import load_sb3


class _Payload:
    """Unpickling this creates the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _with_entry(src: Path, dst: Path, key: str, blob: bytes) -> Path:
    """A copy of the zip ``src`` whose ``data`` entry ``key`` is the serialized ``blob``."""
    with zipfile.ZipFile(src) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(members["data"])
    data[key] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(blob).decode()}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return dst


@pytest.fixture(scope="module")
def ppo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("safe_sb3") / "ppo.zip"
    model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0, device="cpu",
                learning_rate=LinearSchedule(1e-3, 0.0, 1.0), policy_kwargs={"activation_fn": torch.nn.ReLU, "net_arch": [8]})
    model.learn(64)
    model.save(path)
    return path


@pytest.mark.parametrize("algo", ["ppo", "td3"])
def test_same_actions_as_sb3_load(ppo_zip: Path, tmp_path: Path, algo: str) -> None:
    env = gym.make("Pendulum-v1")
    if algo == "td3":
        path, cls = tmp_path / "td3.zip", TD3
        TD3("MlpPolicy", env, buffer_size=100, learning_starts=0, seed=0, device="cpu",
            action_noise=NormalActionNoise(np.zeros(1), np.ones(1))).save(path)
    else:
        path, cls = ppo_zip, PPO
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 3)).astype(np.float32)
    ours, theirs = load_sb3(cls, path, env), cls.load(path, device="cpu")
    np.testing.assert_array_equal(ours.predict(obs, deterministic=True)[0], theirs.predict(obs, deterministic=True)[0])
    assert ours.policy_kwargs == theirs.policy_kwargs and ours.observation_space is env.observation_space


def test_schedule_from_hyperparams(ppo_zip: Path) -> None:
    model = load_sb3(PPO, ppo_zip, gym.make("Pendulum-v1"), {"algo_kwargs": {"learning_rate": LinearSchedule(1e-3, 0.0, 1.0), "clip_range": 0.1}})
    assert model.lr_schedule(0.5) == pytest.approx(5e-4) and model.clip_range(0.5) == pytest.approx(0.1)


@pytest.mark.parametrize("key", ["note", "policy_kwargs", "policy_class", "observation_space", "lr_schedule", "env"])
def test_payload_in_any_setting_does_not_run(ppo_zip: Path, tmp_path: Path, key: str) -> None:
    marker = tmp_path / "ran"
    path = _with_entry(ppo_zip, tmp_path / "crafted.zip", key, pickle.dumps(_Payload(marker)))
    try:
        load_sb3(PPO, path, gym.make("Pendulum-v1"))
    except UnsafePickleError as exc:
        assert key in ("policy_kwargs", "policy_class", "observation_space") and "Nothing in the file was run" in str(exc)
    assert not marker.exists()


def test_other_spaces_and_policies_are_refused(ppo_zip: Path, tmp_path: Path) -> None:
    discrete = _with_entry(ppo_zip, tmp_path / "discrete.zip", "action_space", pickle.dumps(gym.spaces.Discrete(3)))
    with pytest.raises(SpaceError, match="Discrete action space cannot be an anchor"):
        load_sb3(PPO, discrete, gym.make("Pendulum-v1"))
    cnn = _with_entry(ppo_zip, tmp_path / "cnn.zip", "policy_class", pickle.dumps(PPO.policy_aliases["CnnPolicy"]))
    with pytest.raises(SpaceError, match="ActorCriticCnnPolicy.*MlpPolicy"):
        load_sb3(PPO, cnn, gym.make("Pendulum-v1"))
