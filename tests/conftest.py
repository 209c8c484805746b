"""Small shared fixtures: a tiny, fast 1-D LQR task spec, and its anchors trained once per session."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

TINY_PPO: dict[str, Any] = {
    "n_timesteps": 6000,
    "policy": "MlpPolicy",
    "n_envs": 2,
    "n_steps": 100,
    "batch_size": 100,
    "n_epochs": 5,
    "gamma": 0.95,
    "gae_lambda": 0.9,
    "learning_rate": 3e-3,
    "ent_coef": 0.0,
    "policy_kwargs": "dict(net_arch=dict(pi=[8], vf=[16]), log_std_init=-1.0)",
}
TINY_LQR: dict[str, Any] = {
    "name": "lqr1d",
    "env_id": "hti_rl/LQR1D-v0",
    "reward": {"components": {"state": {"info": "reward_state"}, "ctrl": {"info": "reward_ctrl"}}, "weighted": "ctrl"},
    "weight_scale": "log",
    "anchors": [0.1, 1.0, 10.0],
    "held_out": [0.3, 3.0],
    "algo": "ppo",
    "record": {"episodes": 2, "samples": 4, "max_states": 150},
}


def write_lqr_spec(root: Path, agent: dict[str, Any] | None = None, **fields: Any) -> Path:
    """Write ``root/envs/<name>.yaml`` and ``root/agents/ppo.yml``: the tiny LQR spec, with
    ``agent`` updating its PPO entry and ``fields`` the spec. Returns the spec's path."""
    (root / "envs").mkdir(parents=True, exist_ok=True)
    (root / "agents").mkdir(exist_ok=True)
    spec = {**TINY_LQR, **fields}
    (root / "agents" / "ppo.yml").write_text(yaml.safe_dump({spec["name"]: {**TINY_PPO, **(agent or {})}}))
    path = root / "envs" / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (restored after): small tensors gain nothing from threads,
    and the test machine is shared. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_lqr_spec(tmp_path: Path) -> Callable[..., Path]:
    """``make_lqr_spec(agent=None, **fields) -> path``: :func:`write_lqr_spec` into ``tmp_path``."""
    return lambda agent=None, **fields: write_lqr_spec(tmp_path, agent, **fields)


@pytest.fixture(scope="session")
def trained_lqr(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(spec path, run root) of the tiny LQR task with its three anchors trained once per session."""
    from hti_rl.spec.load import load_task
    from hti_rl.training.anchors import train_anchors

    root = tmp_path_factory.mktemp("trained_lqr")
    path = write_lqr_spec(root)
    train_anchors(load_task(path), run_root=root / "runs", progress=False)
    return path, root / "runs"


@pytest.fixture
def lqr_run(trained_lqr: tuple[Path, Path], tmp_path: Path) -> tuple[Any, Path]:
    """(spec, run root): a private copy of the trained tiny LQR anchors, free to write into."""
    from hti_rl.spec.load import load_task

    path, runs = trained_lqr
    shutil.copytree(runs, tmp_path / "runs", ignore=shutil.ignore_patterns(".lock", "tb"))
    return load_task(path), tmp_path / "runs"


def save_lqr_anchor(spec: Any, weight: float, run_root: Path, exact: bool = True, log_std: float = -2.0, gain_scale: float = 1.0) -> None:
    """Write an anchor through the training layout without training: a linear PPO policy u = −K(λ) x
    with the exact (undiscounted) Riccati gain when ``exact`` (times ``gain_scale``: ≠ 1 gives a
    deliberately wrong gain), else a freshly initialised, untrained PPO policy (u ≈ 0). ``log_std``
    sets the Gaussian's spread."""
    import torch
    from stable_baselines3 import PPO

    from hti_rl.io import write_json
    from hti_rl.runs import RunDir

    env = spec.make_env(weight)
    model = PPO("MlpPolicy", env, seed=0, device="cpu", n_steps=64, batch_size=64,
                policy_kwargs=dict(net_arch=[] if exact else [8], log_std_init=log_std))
    if exact:
        with torch.no_grad():
            model.policy.action_net.weight.copy_(-gain_scale * torch.as_tensor(env.unwrapped.optimal_gain(weight), dtype=torch.float32))
            model.policy.action_net.bias.zero_()
    directory = RunDir.of(spec, run_root).anchor(weight)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.zip")
    write_json(directory / "meta.json", {"task": spec.name, "task_fingerprint": spec.fingerprint(), "weight": weight, "algo": "ppo", "exact": exact})


def synthetic_surrogate(obs_dim: int, act_dim: int, algo: str = "ppo", steps: int = 20, mode: str = "endpoint",
                        normalize: bool = False, states: int = 64, **clot: Any) -> Any:
    """A SurrogatePolicy on untrained SB3 anchors (weights 0.1, 1, 10, log scale) without any training:
    each anchor's action samples at random states, then a short CLOT fit on them. ``algo`` "ppo"
    (Gaussian, clipped) or "sac" (tanh-squashed); ``normalize`` gives the anchors VecNormalize statistics."""
    import gymnasium as gym
    import numpy as np
    import torch
    from gymnasium import spaces
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from hti_rl.clot import CLOTData, fit_clot
    from hti_rl.methods.base import standardiser
    from hti_rl.methods.surrogate import SurrogatePolicy, clot_config
    from hti_rl.sb3io.actor import actor_from_sb3

    class Env(gym.Env):
        observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        action_space = spaces.Box(-np.linspace(1, 2, act_dim, dtype=np.float32), np.linspace(1, 2, act_dim, dtype=np.float32))

        def reset(self, seed=None, options=None):
            return np.zeros(obs_dim, np.float32), {}

        def step(self, action):
            return np.zeros(obs_dim, np.float32), 0.0, False, False, {}

    rng = np.random.default_rng(0)
    actors = []
    for i in range(3):
        cls = PPO if algo == "ppo" else SAC
        kwargs = dict(n_steps=64, batch_size=64) if algo == "ppo" else dict(learning_starts=10**9)
        model = cls("MlpPolicy", Env(), seed=i, device="cpu", policy_kwargs=dict(net_arch=[16]), **kwargs)
        norm = None
        if normalize:
            norm = VecNormalize(DummyVecEnv([Env]), norm_reward=False)
            norm.obs_rms.mean = rng.normal(size=obs_dim)
            norm.obs_rms.var = rng.uniform(0.5, 2.0, size=obs_dim)
        actors.append(actor_from_sb3(model, norm))
    obs = rng.normal(size=(states, obs_dim)).astype(np.float32)
    with torch.no_grad():
        draws = []
        for actor in actors:
            mean, log_std = actor.distribution(torch.from_numpy(obs))
            draws.append(mean[:, None] + log_std.exp()[:, None] * torch.randn(states, 4, act_dim, generator=torch.Generator().manual_seed(1)))
    x_mean, x_std = standardiser(obs)
    data = CLOTData(x=torch.from_numpy((obs - x_mean) / x_std), times=torch.tensor(np.log([0.1, 1.0, 10.0]), dtype=torch.float32),
                    y=torch.stack(draws))  # the policy's times: the log of its weights
    model = fit_clot(data, clot_config({"steps": steps, "mode": mode, **clot}), progress=False)
    return SurrogatePolicy(Env.observation_space, Env.action_space, actors, [0.1, 1.0, 10.0], "log", x_mean, x_std,
                           header={"task": "synthetic", "task_fingerprint": "synthetic", "seed": 0}, clot=model)
