"""A task weighing two components through the command line (issue 22 item e): train the grid's anchors,
check them, record, fit the grid surrogate, deploy it at a weight vector; and the errors of bad weights."""

from __future__ import annotations

import pytest
import yaml
from conftest import write_lqr_spec

from hti_rl.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
VECTOR_LQR = dict(
    name="lqr2w", env_id="hti_rl/LQR2D-v0",
    reward={"components": {"state": {"info": "reward_state"}, "ctrl0": {"info": "reward_ctrl_0"}, "ctrl1": {"info": "reward_ctrl_1"}},
            "weighted": ["ctrl0", "ctrl1"]},
    anchors={"ctrl0": [0.1, 10.0], "ctrl1": [0.1, 10.0]}, held_out=[[1.0, 1.0]],
    monotone_weighted_component=False,  # 1,000-step agents: the check would (rightly) complain
)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid_cli")
    path, runs = write_lqr_spec(root, agent={"n_timesteps": 400}, **VECTOR_LQR), root / "runs"
    assert main(["train-anchors", str(path), "--run-root", str(runs), "--no-check"]) == 0
    assert main(["check-anchors", str(path), "--run-root", str(runs)]) == 0
    assert main(["record", str(path), "--run-root", str(runs)]) == 0
    assert main(["fit", str(path), "--run-root", str(runs), "--accept-anchors", "--set", "steps=10"]) == 0
    return path, runs


def test_train_record_fit_deploy_at_a_vector(fitted, capsys):
    path, runs = fitted
    assert sorted(p.name for p in (runs / "lqr2w" / "anchors").glob("w=*")) == ["w=0.1,0.1", "w=0.1,10", "w=10,0.1", "w=10,10"]
    capsys.readouterr()
    surrogate = str(runs / "lqr2w" / "surrogate.zip")
    assert main(["deploy", surrogate, "--spec", str(path), "--weight", "1,3", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "deployed at weight 1,3: surrogate (uncalibrated" in out and "lqr2w at weight 1,3: return" in out
    # Without --spec: the spec the fit recorded is read only inside the run root or envs/ (methods/origin.py).
    assert main(["deploy", surrogate, "--weight", "1,3", "--episodes", "1"]) == 2
    assert "Pass the spec with --spec" in capsys.readouterr().err


@pytest.mark.parametrize("weight, words", [
    ("1", "not the scalar 1"),
    ("1,2,3", "has 3 entries"),
    ("1,30", "weight of ctrl1: weight 30 is outside the anchor range [0.1, 10]"),
    ("1;3", "not a number or comma-separated numbers"),
])
def test_bad_weight_vectors_are_one_error_line(fitted, capsys, weight, words):
    path, runs = fitted
    code = main(["deploy", str(runs / "lqr2w" / "surrogate.zip"), "--spec", str(path), "--weight", weight, "--episodes", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and words in err and "Traceback" not in err and err.count("\n") == 1


def test_a_vector_for_a_scalar_surrogate_is_refused(capsys, tmp_path):
    from hti_rl.cli.run import scalar_weight
    from hti_rl.errors import WeightError

    with pytest.raises(WeightError, match="a vector of 2 numbers.*give one number"):
        scalar_weight("0.1,0.5", {"task": "lqr1d", "weights": [0.1, 10]})
    assert scalar_weight("3", {"weights": [0.1, 10]}) == 3.0


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_at_a_vector(fitted, tmp_path, fmt):
    import numpy as np

    from hti_rl.methods.base import AnchoredPolicy
    from hti_rl.methods.grid_surrogate import GridSurrogatePolicy  # noqa: F401  (registers the class)

    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    _, runs = fitted
    surrogate = runs / "lqr2w" / "surrogate.zip"
    out = tmp_path / f"policy.{fmt}"
    assert main(["export", str(surrogate), "--weight", "0.3,3", "--format", fmt, "-o", str(out)]) == 0
    obs = np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32)
    policy = AnchoredPolicy.load(surrogate, weight=(0.3, 3.0))
    expected = policy.predict(obs, deterministic=True)[0]
    if fmt == "onnx":
        import onnxruntime

        action = onnxruntime.InferenceSession(str(out)).run(None, {"obs": obs})[0]
    else:
        import torch

        action = torch.jit.load(str(out))(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(action, expected, atol=1e-5)
    assert main(["export", str(surrogate), "--weight", "0.3", "-o", str(out)]) == 2


def test_conditioned_peer_sees_the_weight_vector(fitted, tmp_path):
    import numpy as np

    from hti_rl.methods.base import AnchoredPolicy
    from hti_rl.methods.conditioned import GridConditionedPolicy, load_conditioned_policy
    from hti_rl.spec.load import load_task
    from hti_rl.training.conditioned import make_conditioned_env, train_conditioned

    path, runs = fitted
    spec = load_task(path)
    env = make_conditioned_env(spec, seed=0)
    obs, info = env.reset(seed=3)
    weight = info["hti_rl/weight"]
    assert len(obs) == 4 and np.allclose(obs[-2:], np.log(weight)) and all(0.1 <= w <= 10 for w in weight)
    assert main(["train-conditioned", str(path), "--run-root", str(runs), "--budget-factor", "0.25"]) == 0
    policy = load_conditioned_policy(spec, 0.25, runs, weight=(0.3, 3.0))
    assert isinstance(policy, GridConditionedPolicy)
    fixed = make_conditioned_env(spec, weight=(0.3, 3.0))
    o, _ = fixed.reset(seed=0)
    expected = policy.actors[0].predict(o[None], deterministic=True)[0]
    np.testing.assert_allclose(policy.predict(o[None, :2], deterministic=True)[0], expected, atol=1e-6)
    policy.save(tmp_path / "c.zip")
    assert AnchoredPolicy.load(tmp_path / "c.zip", weight=(0.3, 3.0)).predict(o[:2], deterministic=True)[0].shape == (2,)


@pytest.mark.parametrize("argv, words", [
    (["import-anchors", "{spec}", "--anchor", "0.1=x.zip"], "import-anchors takes scalar anchor weights only so far"),
    (["train-anchors", "{spec}", "--shared-start"], "shared-start anchors are not supported yet"),
])
def test_stages_without_vectors_say_so_in_one_line(tmp_path, capsys, argv, words):
    path = write_lqr_spec(tmp_path, **VECTOR_LQR)
    assert main([a.format(spec=path) for a in argv] + ["--run-root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


@pytest.mark.parametrize("fields, words", [
    ({"methods": ["surrogate", "cfm"]}, "cannot run: it weighs several components"),
    ({"shared_start": ["param_interp"]}, "shared-start anchors on a weight grid is not built yet"),
    ({"methods": ["deployed"], "refine": [0.25]}, "refining on a weight grid is not built yet"),
    ({"calibration": {"per_interval": 0}}, "calibration.per_interval"),
    ({"calibration": {"episodes": 3, "grid": 2}}, "calibration"),
])
def test_grid_experiment_fields_are_checked(tmp_path, fields, words):
    from hti_rl.compare.experiment import load_experiment
    from hti_rl.errors import SpecError

    path = write_lqr_spec(tmp_path, **VECTOR_LQR)
    (tmp_path / "experiments").mkdir()
    experiment = tmp_path / "experiments" / "x.yaml"
    experiment.write_text(yaml.safe_dump({"task": str(path), **fields}))
    with pytest.raises(SpecError, match=words):
        load_experiment(experiment)


def test_calibrate_at_weight_vectors(fitted, capsys):
    """The rule of docs/method.md §10 on the product grid: every grid vector measured, the choice stored in the
    file and deployed by set_weight and `deploy`; between grid vectors, the candidate every corner chose."""
    from hti_rl.deploy.calibrate import calibration_grid
    from hti_rl.methods.base import AnchoredPolicy
    from hti_rl.methods.calibration import SURROGATE, anchor_name
    from hti_rl.spec.load import load_task

    path, runs = fitted
    assert main(["calibrate", str(path), "--run-root", str(runs), "--per-interval", "1", "--episodes", "3"]) == 0
    out = capsys.readouterr().out
    expected = calibration_grid(load_task(path), 1)  # per axis: the anchors, the log midpoint, the held-out entry
    assert f"calibrated lqr2w: {len(expected)} grid weights" in out and "λ=1,1 deployed" in out
    figure = runs / "lqr2w" / "calibration" / "surrogate" / "calibration.png"  # heat maps over the weight plane
    assert str(figure) in out and figure.stat().st_size > 10_000
    policy = AnchoredPolicy.load(runs / "lqr2w" / "surrogate.zip")
    calibration = policy.calibration
    assert [p.weight for p in calibration.points] == sorted(expected) and (1.0, 1.0) in calibration.grid
    for point in calibration.points:
        policy.set_weight(point.weight)
        assert policy.deployed == point.chosen and point.chosen in (SURROGATE, *(anchor_name(w) for w in policy.weights))
    values = sorted({p.weight[0] for p in calibration.points})
    lo, hi = values[-2], values[-1]
    corners = {p.chosen for p in calibration.points if set(p.weight) <= {lo, hi}}
    policy.set_weight(((lo * hi) ** 0.5, (lo * hi) ** 0.5))
    assert policy.deployed == (corners.pop() if len(corners) == 1 else SURROGATE)
    assert AnchoredPolicy.load(runs / "lqr2w" / "surrogate.zip", calibrated=False).calibration is None
    surrogate = str(runs / "lqr2w" / "surrogate.zip")
    assert main(["deploy", surrogate, "--spec", str(path), "--weight", "1,1", "--episodes", "1"]) == 0
    assert "estimated return" in capsys.readouterr().out
    assert main(["deploy", surrogate, "--spec", str(path), "--weight", "1,1", "--episodes", "1", "--plain"]) == 0
    assert "the plain surrogate, forced" in capsys.readouterr().out
