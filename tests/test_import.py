"""Importing existing agents as anchors: every supported SB3 policy (with VecNormalize), rl-zoo3 folders,
spec entries, callables, the restricted VecNormalize unpickler, and the errors users meet."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import save_lqr_anchor, write_lqr_spec
from gymnasium import spaces
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from hti_rl.cli import main
from hti_rl.errors import AnchorError, FileFormatError, SpaceError, SpecError
from hti_rl.runs import RunDir
from hti_rl.sb3io.safe_pickle import (
    UnsafePickleError,
    read_norm_stats,
    read_vecnormalize,
)
from hti_rl.spec.load import load_task
from hti_rl.training.callables import CallableActor
from hti_rl.training.importing import check_spaces, import_anchors
from hti_rl.training.store import load_anchor, load_anchor_actor

torch.set_num_threads(1)

# name -> (algorithm, constructor arguments); each is trained for a few hundred steps only: the tests
# compare the imported anchor with the model itself, not with a good policy.
ALGOS: dict[str, tuple[type, dict[str, Any]]] = {
    "ppo": (PPO, dict(n_steps=64, batch_size=64, n_epochs=2)),
    "ppo_sde": (PPO, dict(n_steps=64, batch_size=64, n_epochs=2, use_sde=True)),
    "a2c": (A2C, dict(n_steps=8)),
    "a2c_sde": (A2C, dict(n_steps=8, use_sde=True)),
    "sac": (SAC, dict(learning_starts=64, batch_size=32)),
    "td3": (TD3, dict(learning_starts=64, batch_size=32)),
    "ddpg": (DDPG, dict(learning_starts=64, batch_size=32)),
}
WEIGHTS = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]  # one anchor per algorithm: a surrogate mixing all of them


def lqr2d_spec(root: Path, **fields: Any) -> Path:
    fields = {"name": "lqr2d", "env_id": "hti_rl/LQR2D-v0", "anchors": [0.1, 10.0], "held_out": [1.0], **fields}
    return write_lqr_spec(root, **fields)


def train_tiny(spec: Any, weight: float, name: str, folder: Path, zoo: bool = False) -> tuple[Any, VecNormalize, Path]:
    """Train ``name`` for 200 steps at ``weight`` under VecNormalize; save it as ``folder/model.zip`` +
    ``folder/vecnormalize.pkl``, or in rl-zoo3's layout (``LQR.zip``, ``LQR/vecnormalize.pkl``)."""
    cls, kwargs = ALGOS[name]
    venv = VecNormalize(DummyVecEnv([lambda: spec.make_env(weight)]))
    model = cls("MlpPolicy", venv, seed=1, device="cpu", policy_kwargs=dict(net_arch=[8]), **kwargs)
    model.learn(200)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / ("LQR.zip" if zoo else "model.zip"))
    (folder / "LQR").mkdir(exist_ok=True)
    norm = folder / "LQR" / "vecnormalize.pkl" if zoo else folder / "vecnormalize.pkl"
    venv.save(str(norm))
    venv.training = False
    return model, venv, norm


def reset_states(spec: Any, n: int = 16) -> np.ndarray:
    env = spec.make_env(1.0)
    return np.stack([env.reset(seed=100 + i)[0] for i in range(n)])


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Seven tiny agents (every supported policy) imported at seven weights of one task, recorded,
    fitted, and the surrogate reloaded from its file."""
    from hti_rl.dataset import record
    from hti_rl.methods.surrogate import SurrogatePolicy, clot_config, fit

    root = tmp_path_factory.mktemp("mixed")
    path = lqr2d_spec(root, anchors=WEIGHTS, held_out=[0.3])
    spec = load_task(path)
    agents, args = {}, []
    for i, (name, weight) in enumerate(zip(ALGOS, WEIGHTS)):
        zoo = i % 2 == 0  # half in rl-zoo3's run-folder layout (vecnormalize found inside), half as files
        folder = root / "agents" / name
        model, venv, norm = train_tiny(spec, weight, name, folder, zoo=zoo)
        agents[name] = (weight, model, venv)
        args += ["--anchor", f"{weight:g}={folder}"] if zoo else ["--anchor", f"{weight:g}={folder / 'model.zip'}", "--vecnormalize", f"{weight:g}={norm}"]
    runs = root / "runs"
    assert main(["import-anchors", str(path), "--run-root", str(runs), *args]) == 0
    record(spec, runs, progress=False)
    fit(spec, runs, clot_config({"steps": 10}), progress=False)
    policy = SurrogatePolicy.load(runs / "lqr2d" / "surrogate.zip", expect_fingerprint=spec.fingerprint())
    return {"spec": spec, "runs": runs, "agents": agents, "policy": policy, "path": path}


@pytest.mark.parametrize("name", list(ALGOS))
def test_surrogate_at_anchor_weight_equals_imported_model(mixed: dict[str, Any], name: str) -> None:
    weight, model, venv = mixed["agents"][name]
    obs = reset_states(mixed["spec"])
    expected, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
    policy = mixed["policy"]
    policy.set_weight(weight)
    actions, _ = policy.predict(obs, deterministic=True)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)
    meta = mixed["runs"] / "lqr2d" / "anchors" / f"w={weight:g}" / "meta.json"
    assert f'"algo": "{name.split("_")[0]}"' in meta.read_text()


def test_mixed_algorithms_between_anchors_and_stages(mixed: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    policy, spec = mixed["policy"], mixed["spec"]
    obs = reset_states(spec)
    for weight in (0.15, 1.5, 3.0, 7.0):  # PPO→PPO-gSDE, A2C-gSDE→SAC, SAC→TD3, TD3→DDPG
        policy.set_weight(weight)
        actions, _ = policy.predict(obs, deterministic=True)
        assert np.all(np.isfinite(actions)) and np.all(np.abs(actions) <= spec.make_env(1.0).action_space.high)
    model, norm = load_anchor(spec, 2.0, mixed["runs"])  # the copied SAC zip and the JSON statistics
    assert isinstance(model, SAC) and norm is not None and not norm.training
    assert (RunDir.of(spec, mixed["runs"]).anchor(2.0) / "vecnormalize.json").exists()
    assert main(["check-anchors", str(mixed["path"]), "--run-root", str(mixed["runs"])]) == 0
    # importing the same files again is a no-op; another agent needs --force
    args = ["import-anchors", str(mixed["path"]), "--run-root", str(mixed["runs"])]
    assert main([*args, "--anchor", f"0.1={mixed['runs'].parent / 'agents' / 'ppo'}"]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert main([*args, "--anchor", f"0.1={mixed['runs'].parent / 'agents' / 'td3' / 'model.zip'}"]) == 2
    err = capsys.readouterr().err
    assert "anchor w=0.1 of task 'lqr2d' already holds" in err and "--force" in err


def test_spec_entries_and_stable_fingerprint(tmp_path: Path) -> None:
    spec = load_task(lqr2d_spec(tmp_path))
    model, venv, norm = train_tiny(spec, 0.1, "td3", tmp_path / "models" / "td3")
    save_lqr_anchor(spec, 10.0, tmp_path / "runs")  # the other anchor as if trained here
    entries = [{"weight": 0.1, "model": "models/td3/model.zip", "vecnormalize": "models/td3/vecnormalize.pkl"}, 10.0]
    with_files = load_task(lqr2d_spec(tmp_path, anchors=entries))
    assert with_files.anchors == (0.1, 10.0) and with_files.fingerprint() == spec.fingerprint()
    [result] = import_anchors(with_files, run_root=tmp_path / "runs")
    assert result.status == "imported" and result.meta["imported"]["vecnormalize"].endswith("vecnormalize.pkl")
    obs = reset_states(spec)
    actor = load_anchor_actor(spec, 0.1, tmp_path / "runs")
    np.testing.assert_allclose(actor.predict(obs)[0], model.predict(venv.normalize_obs(obs), deterministic=True)[0], rtol=1e-5, atol=1e-5)
    typo = lqr2d_spec(tmp_path, anchors=[{"weight": 0.1, "modle": "x.zip"}, 10.0])
    with pytest.raises(SpecError, match="field `anchors\\[0\\].modle` is unknown \\(did you mean `model`"):
        load_task(typo)


def policy_of_other_library(obs: np.ndarray) -> np.ndarray:
    """A deterministic policy from "another RL library": obs [C] -> action [D]."""
    return -0.5 * obs


def test_callable_anchors(tmp_path: Path) -> None:
    from hti_rl.dataset import record
    from hti_rl.methods.surrogate import SurrogatePolicy, clot_config, fit

    # code is imported only where the spec names it
    spec = load_task(lqr2d_spec(tmp_path, anchors=[0.1, {"weight": 10.0, "callable": "test_import:policy_of_other_library"}]))
    runs = tmp_path / "runs"
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with pytest.raises(AnchorError, match=r"later stages import code only where the task spec names it.*weight: 0.1, callable"):
        import_anchors(spec, {0.1: policy_of_other_library}, run_root=runs)
    import_anchors(spec, {0.1: net, 10.0: policy_of_other_library}, run_root=runs)
    obs = reset_states(spec)
    with torch.no_grad():
        expected = net(torch.as_tensor(obs, dtype=torch.float32)).clamp(-5, 5).numpy()
    np.testing.assert_allclose(load_anchor_actor(spec, 0.1, runs).predict(obs)[0], expected, rtol=1e-6, atol=1e-6)
    function_actor = load_anchor_actor(spec, 10.0, runs)  # re-imported by its path test_import:policy_of_other_library
    assert isinstance(function_actor, CallableActor)
    np.testing.assert_allclose(function_actor.predict(obs)[0], np.clip(-0.5 * obs, -5, 5), rtol=1e-6)
    with pytest.raises(AnchorError, match="SB3 model"):
        load_anchor(spec, 10.0, runs)
    record(spec, runs, progress=False)  # a callable anchor is recorded ...
    with pytest.raises(AnchorError, match="tensors only"):  # ... but a surrogate file cannot hold code
        fit(spec, runs, clot_config({"steps": 2}), progress=False)
    with pytest.raises(AnchorError, match="cannot be stored"):
        import_anchors(spec, {10.0: lambda o: o}, run_root=runs, force=True)
    # an nn.Sequential at both ends: deployable, and the surrogate file keeps it
    import_anchors(spec, {10.0: torch.nn.Sequential(torch.nn.Linear(2, 2))}, run_root=runs, force=True)
    record(spec, runs, progress=False)
    fit(spec, runs, clot_config({"steps": 2}), progress=False)
    policy = SurrogatePolicy.load(runs / "lqr2d" / "surrogate.zip")
    policy.set_weight(0.1)
    np.testing.assert_allclose(policy.predict(obs, deterministic=True)[0], expected, rtol=1e-6, atol=1e-6)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_crafted_vecnormalize_is_refused(tmp_path: Path) -> None:
    spec = load_task(lqr2d_spec(tmp_path))
    venv = VecNormalize(DummyVecEnv([lambda: spec.make_env(0.1)]))
    venv.reset()
    marker = tmp_path / "pwned"
    venv.payload = _Payload(marker)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump(venv, f)
    with pytest.raises(UnsafePickleError, match="system.*Nothing in the file was run"):
        read_vecnormalize(tmp_path / "evil.pkl")
    save_lqr_anchor(spec, 0.1, tmp_path / "runs")  # a trained-layout anchor with a tampered vecnormalize.pkl
    (RunDir.of(spec, tmp_path / "runs").anchor(0.1) / "vecnormalize.pkl").write_bytes((tmp_path / "evil.pkl").read_bytes())
    with pytest.raises(UnsafePickleError):
        load_anchor_actor(spec, 0.1, tmp_path / "runs")
    model = PPO("MlpPolicy", spec.make_env(0.1), device="cpu", n_steps=64, batch_size=64)
    model.save(tmp_path / "m.zip")
    with pytest.raises(UnsafePickleError, match="anchor w=0.1"):
        import_anchors(spec, {0.1: tmp_path / "m.zip"}, {0.1: tmp_path / "evil.pkl"}, run_root=tmp_path / "runs2")
    assert not marker.exists()
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(FileFormatError, match="not a readable VecNormalize"):
        read_vecnormalize(tmp_path / "bad.pkl")


def test_safe_statistics_match_sb3(tmp_path: Path) -> None:
    spec = load_task(lqr2d_spec(tmp_path))
    _, venv, norm = train_tiny(spec, 0.1, "ppo", tmp_path / "a")
    obs = reset_states(spec)
    stats = read_vecnormalize(norm)
    np.testing.assert_array_equal(stats.normalize(obs), VecNormalize.load(str(norm), DummyVecEnv([lambda: spec.make_env(0.1)])).normalize_obs(obs))
    np.testing.assert_array_equal(stats.wrap(DummyVecEnv([lambda: spec.make_env(0.1)])).normalize_obs(obs), venv.normalize_obs(obs))
    import_anchors(spec, {0.1: tmp_path / "a" / "model.zip"}, {0.1: norm}, run_root=tmp_path / "runs")
    assert read_norm_stats(RunDir.of(spec, tmp_path / "runs").anchor(0.1) / "vecnormalize.json") == stats


def test_errors_name_anchor_file_and_fix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import gymnasium as gym

    path = lqr2d_spec(tmp_path)
    spec = load_task(path)
    runs = tmp_path / "runs"
    one_d = PPO("MlpPolicy", load_task(write_lqr_spec(tmp_path / "one")).make_env(1.0), device="cpu", n_steps=64, batch_size=64)
    one_d.save(tmp_path / "lqr1d.zip")
    with pytest.raises(SpaceError, match=r"anchor w=0.1 \(.*lqr1d.zip\).*observation space.*does not match.*import a model trained on this env"):
        import_anchors(spec, {0.1: tmp_path / "lqr1d.zip"}, run_root=runs)
    PPO("MlpPolicy", gym.make("CartPole-v1"), device="cpu", n_steps=64, batch_size=64).save(tmp_path / "cartpole.zip")
    with pytest.raises(SpaceError, match="Discrete action space cannot be an anchor"):
        import_anchors(spec, {0.1: tmp_path / "cartpole.zip"}, run_root=runs)
    with pytest.raises(SpaceError, match="Dict observation space"):
        check_spaces(spaces.Dict({"x": spaces.Box(-1, 1, (2,))}), spaces.Box(-5, 5, (2,)), spec.make_env(1.0), spec, "anchor w=0.1")
    DQN("MlpPolicy", gym.make("CartPole-v1"), device="cpu", learning_starts=0).save(tmp_path / "dqn.zip")
    with pytest.raises(AnchorError, match="DQN model.*PPO, A2C, SAC, TD3 and DDPG"):
        import_anchors(spec, {0.1: tmp_path / "dqn.zip"}, run_root=runs)
    with pytest.raises(AnchorError, match="anchor w=0.1: .*missing.zip does not exist"):
        import_anchors(spec, {0.1: tmp_path / "missing.zip"}, run_root=runs)
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(AnchorError, match="broken.zip is not a readable SB3 model zip"):
        import_anchors(spec, {0.1: tmp_path / "broken.zip"}, run_root=runs)
    with pytest.raises(AnchorError, match="weight 0.3 is not an anchor weight.*0.1, 10.*add 0.3 to `anchors`"):
        import_anchors(spec, {0.3: tmp_path / "lqr1d.zip"}, run_root=runs)
    assert main(["import-anchors", str(path), "--run-root", str(runs), "--anchor", "0.1=a.zip", "--anchor", "1e-1=b.zip"]) == 2
    assert "two agents for anchor w=0.1" in capsys.readouterr().err
    assert main(["import-anchors", str(path), "--run-root", str(runs), "--anchor", "0.1"]) == 2
    assert "WEIGHT=PATH" in capsys.readouterr().err
    assert not (runs / "lqr2d" / "anchors" / "w=0.1" / "meta.json").exists()
    assert yaml.safe_load(path.read_text())["anchors"] == [0.1, 10.0]
