"""Every Python block of the README runs, as written, on a tiny copy of the task it names."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pytest
import yaml
from conftest import save_lqr_anchor

from hti_rl.dataset import record
from hti_rl.methods.surrogate import clot_config, fit
from hti_rl.spec.load import load_task

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks(text: str) -> list[str]:
    """The README's fenced ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_blocks_are_found():
    assert python_blocks("x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = 2\n```\n") == ["a = 1\n", "b = 2\n"]


def _tiny_pendulum(root: Path) -> None:
    """``root/envs/pendulum.yaml`` (the shipped spec, recording cut down) and its surrogate in
    ``root/runs/pendulum/surrogate.zip``, fitted on untrained anchors in seconds."""
    (root / "envs").mkdir()
    shutil.copytree(REPO / "agents", root / "agents")
    raw = yaml.safe_load((REPO / "envs" / "pendulum.yaml").read_text())
    raw["record"] = {"episodes": 1, "samples": 4, "max_states": 100}
    (root / "envs" / "pendulum.yaml").write_text(yaml.safe_dump(raw))
    spec = load_task(root / "envs" / "pendulum.yaml")
    for weight in spec.anchors:
        save_lqr_anchor(spec, weight, root / "runs", exact=False)  # any SB3 PPO agent on the task's env
    record(spec, root / "runs", progress=False)
    fit(spec, root / "runs", clot_config({"steps": 5}, seed=0), progress=False)


def _user_agents(root: Path) -> None:
    """The files the README's import example names: ``envs/lqr2d.yaml``, an rl-zoo3 run folder
    (``logs/ppo/LQR2D-v0_1``), an SB3 SAC model and its VecNormalize (``models/``), all untrained."""
    import gymnasium as gym
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    shutil.copy(REPO / "envs" / "lqr2d.yaml", root / "envs" / "lqr2d.yaml")
    env = gym.make("hti_rl/LQR2D-v0")
    (root / "logs" / "ppo" / "LQR2D-v0_1").mkdir(parents=True)
    PPO("MlpPolicy", env, seed=0, device="cpu", n_steps=64, batch_size=64).save(root / "logs" / "ppo" / "LQR2D-v0_1" / "LQR2D-v0.zip")
    (root / "models").mkdir()
    SAC("MlpPolicy", env, seed=0, device="cpu", buffer_size=100).save(root / "models" / "sac_ctrl1.zip")
    VecNormalize(DummyVecEnv([lambda: gym.make("hti_rl/LQR2D-v0")])).save(str(root / "models" / "sac_ctrl1_vecnormalize.pkl"))


def test_every_readme_python_block_runs(tmp_path, monkeypatch):
    blocks = python_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 2, "the README's python blocks were not found"
    _tiny_pendulum(tmp_path)
    _user_agents(tmp_path)
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            namespace: dict = {}
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102  (the README's own code)
        assert not [w for w in caught if "Monitor" in str(w.message)], [str(w.message) for w in caught]
        if "mean_return" in namespace:  # the usage snippet
            assert namespace["action"].shape == (1,) and namespace["mean_return"] < 0
    assert (tmp_path / "runs" / "lqr2d" / "anchors" / "w=10" / "actor.pt").is_file()  # the import example ran
