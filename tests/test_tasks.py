"""TaskSpec: shipped specs load, every validation error names file and field, weights, hyperparams, fingerprint."""

from __future__ import annotations

import dataclasses
import math
import pickle
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import stable_baselines3
import torch
import yaml

from hti_rl.errors import SpecError, WeightError
from hti_rl.runs import RunDir
from hti_rl.spec.hyperparams import parse_expression
from hti_rl.spec.load import load_task
from hti_rl.spec.task import TaskSpec

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "envs").glob("*.yaml"))

BASE = {
    "name": "toy",
    "env_id": "hti_rl/LQR1D-v0",
    "reward": {"components": {"state": {"info": "reward_state"}, "ctrl": {"info": "reward_ctrl"}}, "weighted": "ctrl"},
    "weight_scale": "log",
    "anchors": [0.1, 1, 10],
    "held_out": [0.3, 3],
}
AGENT = {"n_timesteps": 1000, "policy": "MlpPolicy", "n_steps": 64, "batch_size": 32, "policy_kwargs": "dict(net_arch=[8])"}


def _write(tmp_path: Path, spec: dict, agents: dict | None = None) -> Path:
    (tmp_path / "envs").mkdir(exist_ok=True)
    (tmp_path / "agents").mkdir(exist_ok=True)
    (tmp_path / "agents" / "ppo.yml").write_text(yaml.safe_dump(agents if agents is not None else {"toy": AGENT}))
    path = tmp_path / "envs" / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _edit(**changes) -> dict:
    spec = {**BASE, **changes}
    return {k: v for k, v in spec.items() if v is not None}


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_specs_load(path):
    spec = load_task(path)
    assert spec.name == path.stem and spec.anchors == tuple(sorted(spec.anchors))
    hp = spec.hyperparams()
    assert set(hp) == {"n_timesteps", "n_envs", "normalize", "algo_kwargs"}
    assert issubclass(spec.sb3_algo(), stable_baselines3.common.base_class.BaseAlgorithm)
    assert pickle.loads(pickle.dumps(spec)) == spec


@pytest.mark.parametrize("task", ["lqr1d", "pendulum", "mo_halfcheetah"])
def test_hyperparams_build_the_sb3_model(task):
    if task == "mo_halfcheetah":
        pytest.importorskip("mo_gymnasium")
    spec = load_task(ROOT / "envs" / f"{task}.yaml")
    hp = spec.hyperparams()
    model = spec.sb3_algo()(env=gym.wrappers.FlattenObservation(spec.make_env(spec.anchors[0])), device="cpu", **hp["algo_kwargs"])
    assert model.policy is not None
    if task == "mo_halfcheetah":
        assert hp["normalize"] is True and hp["n_timesteps"] == 300_000  # a budget that learns to run on 2 cores


def test_policy_kwargs_with_an_activation_build_the_sb3_model(make_lqr_spec):
    spec = load_task(make_lqr_spec(agent={"policy_kwargs": "dict(activation_fn=nn.ReLU, net_arch=dict(pi=[16, 16], vf=[16]))"}))
    hp = spec.hyperparams()
    model = spec.sb3_algo()(env=spec.make_env(spec.anchors[0]), device="cpu", **hp["algo_kwargs"])
    assert isinstance(model.policy.mlp_extractor.policy_net[1], torch.nn.ReLU)


INVALID = [
    ("missing", _edit(name=None), "field `name` is missing"),
    ("unknown", _edit(anchor=[1, 2]), "field `anchor` is unknown (did you mean `anchors`?)"),
    ("type", _edit(anchors="0.1, 1"), "field `anchors` is '0.1, 1'; give a list of finite numbers"),
    ("type seed", _edit(seed="one"), "field `seed` is 'one'; give an integer"),
    ("not increasing", _edit(anchors=[1, 1, 10]), "field `anchors` is [1.0, 1.0, 10.0]; the weights must be strictly increasing"),
    ("one anchor", _edit(anchors=[1], held_out=[1]), "field `anchors` is [1.0]; give at least 2 weights"),
    ("held out", _edit(held_out=[0.3, 30]), "field `held_out` has [30.0] outside the anchor range [0.1, 10]"),
    ("log scale", _edit(anchors=[0, 1], held_out=[0.5]), "field `anchors` is [0.0, 1.0]; a log weight_scale needs weights > 0"),
    ("scale", _edit(weight_scale="cubic"), "field `weight_scale` is 'cubic'; choose one of linear, log"),
    ("env id", _edit(env_id="hti_rl/LQR3D-v0"), "field `env_id` is 'hti_rl/LQR3D-v0', which is not a registered Gymnasium id"),
    ("algo", _edit(algo="dqn"), "field `algo` is 'dqn'; choose one of ppo, a2c, sac, td3, ddpg"),
    ("hyperparams file", _edit(hyperparams_file="agents/none.yml"), "field `hyperparams_file` is 'agents/none.yml', but neither"),
    ("hyperparams key", _edit(hyperparams_key="other"), "field `hyperparams_key` is 'other', which is not a top-level key"),
    ("weighted", _edit(reward={**BASE["reward"], "weighted": "torque"}), "field `reward.weighted` is 'torque'; choose one of ctrl, state"),
    ("two kinds", _edit(reward={"components": {"ctrl": {"info": "reward_ctrl", "vector": 1}}, "weighted": "ctrl"}),
     "field `reward.components.ctrl` is"),
    ("vector index", _edit(reward={"components": {"ctrl": {"vector": -1}}, "weighted": "ctrl"}), "field `reward.components.ctrl.vector` is -1"),
    ("function", _edit(reward={"components": {"ctrl": {"function": "hti_rl.components:nothing"}}, "weighted": "ctrl"}),
     "field `reward.components.ctrl.function` is 'hti_rl.components:nothing', which does not import"),
    ("fixed name", _edit(reward={**BASE["reward"], "fixed": {"ctrl": 2}}), "field `reward.fixed.ctrl` names no unweighted component"),
    ("fixed value", _edit(reward={**BASE["reward"], "fixed": {"state": ".5"}}), "field `reward.fixed.state` is '.5'; give a finite number"),
    ("record", _edit(record={"episodes": 0}), "field `record.episodes` is 0; give an integer ≥ 1"),
    ("record unknown", _edit(record={"states": 10}), "field `record.states` is unknown"),
    ("name", _edit(name="a/b"), "field `name` is 'a/b'; use letters"),
    ("monotone", _edit(monotone_weighted_component="yes"), "field `monotone_weighted_component` is 'yes'; give true or false"),
]


@pytest.mark.parametrize("spec, message", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_spec_names_file_and_field(tmp_path, spec, message):
    path = _write(tmp_path, spec)
    with pytest.raises(SpecError) as err:
        load_task(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


@pytest.mark.parametrize(
    "agent, message",
    [
        ({**AGENT, "n_step": 64}, "field `n_step` is not a PPO argument"),
        ({**AGENT, "policy_kwargs": "dict(net_arch=__import__('os').system('true'))"}, "field `policy_kwargs`"),
        ({**AGENT, "n_envs": 0}, "field `n_envs` is 0; give an integer ≥ 1"),
        ({k: v for k, v in AGENT.items() if k != "n_timesteps"}, "field `n_timesteps` is missing"),
        ({**AGENT, "normalize": "yes"}, "field `normalize`"),
    ],
)
def test_invalid_hyperparams_name_file_and_field(tmp_path, agent, message):
    path = _write(tmp_path, BASE, {"toy": agent})
    with pytest.raises(SpecError) as err:
        load_task(path)
    assert str(err.value).startswith(f"{tmp_path / 'agents' / 'ppo.yml'}: ") and "entry `toy`" in str(err.value)
    assert message in str(err.value)


def test_missing_spec_file_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_task(tmp_path / "nothing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_task(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="the spec must be a mapping"):
        load_task(tmp_path / "list.yaml")


def test_defaults_and_overrides(tmp_path):
    spec = load_task(_write(tmp_path, _edit(n_timesteps=500, max_episode_steps=7)))
    assert spec.hyperparams_key == "toy" and spec.algo == "ppo" and spec.hyperparams_file.name == "ppo.yml"
    assert spec.reward.fixed == {"state": 1.0}
    assert spec.record.episodes == 5 and spec.seeds_per_anchor == 1 and spec.eval_episodes == 10
    assert spec.monotone_weighted_component is True
    assert load_task(_write(tmp_path, _edit(monotone_weighted_component=False))).monotone_weighted_component is False
    assert spec.hyperparams()["n_timesteps"] == 500
    env = spec.make_env(1.0, seed=0)
    steps = 0
    while not env.step(env.action_space.sample())[3]:
        steps += 1
    assert steps + 1 == 7  # the TimeLimit of max_episode_steps, before the env's own horizon of 50


def test_hyperparams_parsing(tmp_path):
    agent = {**AGENT, "learning_rate": "lin_1e-3", "normalize": "dict(norm_obs=True, norm_reward=False)", "n_timesteps": 2e3}
    hp = load_task(_write(tmp_path, BASE, {"toy": agent})).hyperparams()
    schedule = hp["algo_kwargs"]["learning_rate"]
    assert schedule(1.0) == pytest.approx(1e-3) and schedule(0.25) == pytest.approx(2.5e-4)
    assert hp["normalize"] == {"norm_obs": True, "norm_reward": False}
    assert hp["n_timesteps"] == 2000 and hp["n_envs"] == 1
    assert hp["algo_kwargs"]["policy_kwargs"] == {"net_arch": [8]}


def test_parse_expression():
    zoo = "dict(log_std_init=-2, ortho_init=False, activation_fn=nn.ReLU, net_arch=dict(pi=[256, 256], vf=[256, 256]))"
    assert parse_expression(zoo) == {
        "log_std_init": -2, "ortho_init": False, "activation_fn": torch.nn.ReLU, "net_arch": {"pi": [256, 256], "vf": [256, 256]},
    }
    assert parse_expression("dict(a=th.nn.Tanh, b=torch.optim.Adam, c=(1, -0.5), d={'x': None})") == {
        "a": torch.nn.Tanh, "b": torch.optim.Adam, "c": (1, -0.5), "d": {"x": None},
    }
    for bad in ["os.system('true')", "nn.Linear", "dict(**x)", "[i for i in range(3)]", "1 + 2", "dict("]:
        with pytest.raises(ValueError):
            parse_expression(bad)


def test_axis_coordinate_and_local_time():
    spec = load_task(ROOT / "envs" / "lqr1d.yaml")  # log scale, anchors 0.1, 1, 10
    axis = spec.axis
    assert axis.coord(10.0) == pytest.approx(math.log(10))
    assert axis.local_time(0.1) == (0, 0.0)
    assert axis.local_time(1.0) == (1, 0.0)
    assert axis.local_time(10.0) == (1, 1.0)
    k, s = axis.local_time(3.0)
    assert k == 1 and s == pytest.approx(math.log10(3))
    linear = dataclasses.replace(spec, weight_scale="linear").axis
    assert linear.coord(3.0) == 3.0 and linear.local_time(3.0) == (1, pytest.approx(2 / 9))


def test_axis_grid_holds_anchors_held_out_and_points_between():
    axis = load_task(ROOT / "envs" / "lqr1d.yaml").axis
    grid = axis.grid(per_interval=3, include=(0.3, 3.0))
    assert set(axis.anchors) <= set(grid) and {0.3, 3.0} <= set(grid) and list(grid) == sorted(set(grid))
    assert len(grid) == 3 + 2 * 3 + 2
    assert grid[1] == pytest.approx(10 ** -0.75)  # evenly spaced in log λ inside [0.1, 1]
    with pytest.raises(WeightError, match="outside the anchor range"):
        axis.grid(include=(20.0,))


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), 0.05, 11.0, -1.0])
def test_bad_weight_names_the_range(weight):
    spec = load_task(ROOT / "envs" / "lqr1d.yaml")
    with pytest.raises(WeightError, match=r"\[0.1, 10\]|> 0"):
        spec.axis.local_time(weight)
    assert issubclass(WeightError, ValueError)


def test_log_scale_refuses_non_positive_weight():
    with pytest.raises(WeightError, match="> 0"):
        load_task(ROOT / "envs" / "lqr1d.yaml").axis.coord(0.0)


def test_run_dir():
    spec = load_task(ROOT / "envs" / "lqr1d.yaml")
    assert RunDir.of(spec).path == Path("runs/lqr1d") and RunDir.of(spec, "/tmp/x").path == Path("/tmp/x/lqr1d")


def test_fingerprint(tmp_path):
    original = load_task(ROOT / "envs" / "lqr1d.yaml")
    shutil.copytree(ROOT / "envs", tmp_path / "envs")
    shutil.copytree(ROOT / "agents", tmp_path / "agents")
    copy = tmp_path / "envs" / "lqr1d.yaml"
    assert load_task(copy).fingerprint() == original.fingerprint()  # content, not location
    raw = yaml.safe_load(copy.read_text())
    copy.write_text(yaml.safe_dump({**raw, "held_out": [2.0], "eval_episodes": 3, "monotone_weighted_component": False}))
    assert load_task(copy).fingerprint() == original.fingerprint()  # evaluation-only fields
    copy.write_text(yaml.safe_dump({**raw, "anchors": [0.1, 10]}))
    assert load_task(copy).fingerprint() != original.fingerprint()
    copy.write_text(yaml.safe_dump(raw))
    agents = yaml.safe_load((tmp_path / "agents" / "ppo.yml").read_text())
    agents["lqr1d"]["n_epochs"] = 3
    (tmp_path / "agents" / "ppo.yml").write_text(yaml.safe_dump(agents))
    assert load_task(copy).fingerprint() != original.fingerprint()  # the hyperparameters shape the anchors


def test_make_env_is_seeded():
    spec = load_task(ROOT / "envs" / "lqr2d.yaml")
    a, b = spec.make_env(1.0, seed=5), spec.make_env(1.0, seed=5)
    np.testing.assert_array_equal(a.action_space.sample(), b.action_space.sample())
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])
    assert isinstance(spec, TaskSpec)


def test_weight_env_kwarg_is_read_and_leaves_the_fingerprint_alone(make_lqr_spec):
    plain = load_task(make_lqr_spec())
    named = load_task(make_lqr_spec(weight_env_kwarg="control_weight"))
    assert plain.weight_env_kwarg is None and named.weight_env_kwarg == "control_weight"
    assert named.fingerprint() == plain.fingerprint()  # trained anchors stay valid
    with pytest.raises(SpecError, match="weight_env_kwarg"):
        load_task(make_lqr_spec(weight_env_kwarg=3))
    assert load_task(Path(__file__).resolve().parent.parent / "envs" / "reacher.yaml").weight_env_kwarg == "reward_control_weight"
