"""hti-rl refine and suggest on 1-D LQR: anchors 0.1 exact, 1 and 10 with zero gain (poor), so that what is
deployed at λ = 3 is far from the Riccati gain there; refining moves it closer, installs a new anchor, grows the
dataset without re-recording the others, refits and recalibrates; a SIGKILL mid-refine resumes; bad input
gets one clear error."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import save_lqr_anchor, write_lqr_spec

from hti_rl.cli import main
from hti_rl.dataset import PolicyDataset, record
from hti_rl.deploy.calibrate import calibrate
from hti_rl.errors import HTIError, SpecError
from hti_rl.methods.surrogate import SurrogatePolicy, clot_config, fit
from hti_rl.refine.run import check_refine, refine
from hti_rl.refine.start import training_spec
from hti_rl.refine.suggest import suggest
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task
from hti_rl.training.store import load_anchor_actor, with_refined_anchors

pytestmark = pytest.mark.usefixtures("one_thread")
AT = 3.0


def _setup(root):
    """A calibrated tiny LQR run: anchor 0.1 exact, anchors 1 and 10 with zero gain."""
    spec = load_task(write_lqr_spec(root, record={"episodes": 2, "samples": 4, "max_states": 100}))
    runs = root / "runs"
    for w in spec.anchors:
        save_lqr_anchor(spec, w, runs, gain_scale=1.0 if w == 0.1 else 0.0)
    record(spec, runs, progress=False)
    fit(spec, runs, clot_config({"steps": 10}, seed=0), progress=False)
    calibrate(spec, runs, per_interval=1, episodes=12, progress=False)
    return spec, runs


def _gain(model_or_actor) -> float:
    if hasattr(model_or_actor, "policy"):
        return -float(model_or_actor.policy.action_net.weight.item())
    return -float(model_or_actor.distribution(torch.tensor([[1.0]]))[0].item())


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("refine")
    spec, runs = _setup(root)
    old = PolicyDataset.load(RunDir.of(spec, runs).dataset)
    done = refine(spec, AT, 1.0, runs, progress=False)
    return spec, runs, old, done


def test_refining_moves_the_gain_towards_the_riccati_gain(refined):
    from stable_baselines3 import PPO

    spec, runs, _, done = refined
    optimum = float(spec.make_env(AT).unwrapped.optimal_gain(AT, 0.95)[0, 0])  # what PPO's discounted objective converges to
    start = _gain(PPO.load(done.start.model, device="cpu"))
    after = _gain(load_anchor_actor(done.spec, AT, runs))
    assert abs(after - optimum) < abs(start - optimum), (start, after, optimum)
    assert done.steps == 6000 and done.start.candidate in ("surrogate", "anchor:0.1")


def test_the_new_anchor_is_installed_the_dataset_grown_and_the_surrogate_refitted(refined):
    spec, runs, old, done = refined
    run = RunDir.of(spec, runs)
    assert json.loads(run.refined_file.read_text()) == {"weights": [AT]}
    grown = with_refined_anchors(spec, runs)
    assert grown.anchors == (0.1, 1.0, AT, 10.0) and grown.fingerprint() == spec.fingerprint()
    meta = json.loads((run.anchor(AT) / "meta.json").read_text())
    assert meta["refined"]["budget_factor"] == 1.0 and meta["refined"]["budget_steps"] == 6000
    assert meta["refined"]["start"] == done.start.candidate and meta["weight"] == AT
    data = PolicyDataset.load(run.dataset, spec=grown)  # valid for the grown anchor set
    n = len(old.obs)
    assert data.weights.tolist() == list(grown.anchors) and len(data.obs) > n
    np.testing.assert_array_equal(data.obs[:n], old.obs)  # the old anchors were not recorded again
    for i_old, i_new in ((0, 0), (1, 1), (2, 3)):
        np.testing.assert_array_equal(data.samples[i_new, :n], old.samples[i_old])
    policy = SurrogatePolicy.load(run.surrogate, expect_fingerprint=spec.fingerprint())
    assert policy.weights == list(grown.anchors) and policy.calibration.anchors == grown.anchors
    obs = np.linspace(-1, 1, 9, dtype=np.float32)[:, None]
    refined_action = load_anchor_actor(grown, AT, runs).predict(obs, deterministic=True)[0]
    policy.use_calibration = False
    policy.set_weight(AT)
    np.testing.assert_allclose(policy.predict(obs, deterministic=True)[0], refined_action, atol=1e-6)
    policy.use_calibration = True
    policy.set_weight(AT)
    assert policy.deployment().anchors["anchor:3"] == done.after


def test_suggest_ranks_grid_weights_by_the_gap(refined):
    spec, runs, _, _ = refined
    policy = SurrogatePolicy.load(RunDir.of(spec, runs).surrogate)
    ranking = suggest(policy.calibration)
    assert ranking and all(s.weight not in policy.weights for s in ranking)
    assert [s.gap for s in ranking] == sorted((s.gap for s in ranking), reverse=True)
    assert all(s.gap == pytest.approx(s.interpolated - s.deployed) for s in ranking)


def test_bad_refine_input_gets_a_clear_error(refined, tmp_path, capsys):
    spec, runs, _, _ = refined
    grown = with_refined_anchors(spec, runs)
    for weight, factor, match in ((20.0, 0.25, "outside the anchor range"), (0.1, 0.25, "at its end"), (1.0, 0.25, "already an anchor"),
                                  (AT, 0.25, "already an anchor"), (2.0, 0.0, "--budget"), (2.0, -1.0, "--budget"),
                                  (2.0, 1e9, "--budget"), (2.0, float("nan"), "--budget")):
        with pytest.raises(HTIError, match=match):
            check_refine(grown, weight, factor, runs, force=False)
    for args in (["--weight", "20"], ["--weight", "x"], ["--budget", "0", "--weight", "2"]):
        code = main(["refine", str(spec.path), "--run-root", str(runs), *args])
        assert code == 2 and capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SpecError, match="no hyperparameters for sac"):
        training_spec(spec, "sac")


def test_refine_before_calibrating_names_the_command_to_run(tmp_path, capsys):
    spec = load_task(write_lqr_spec(tmp_path, record={"episodes": 2, "samples": 4, "max_states": 60}))
    runs = tmp_path / "runs"
    for w in spec.anchors:
        save_lqr_anchor(spec, w, runs)
    assert main(["refine", str(spec.path), "--run-root", str(runs), "--weight", "3"]) == 2
    assert "hti-rl fit" in capsys.readouterr().err
    record(spec, runs, progress=False)
    fit(spec, runs, clot_config({"steps": 5}, seed=0), progress=False)
    assert main(["refine", str(spec.path), "--run-root", str(runs), "--weight", "3"]) == 2
    assert "hti-rl calibrate" in capsys.readouterr().err
    assert main(["suggest", str(spec.path), "--run-root", str(runs)]) == 2
    assert "hti-rl calibrate" in capsys.readouterr().err


@pytest.mark.long  # ~25 s: a real SIGKILL mid-refine, then the resumed command (CI runs it: `pytest -m long`)
def test_refine_resumes_after_sigkill(tmp_path):
    spec, runs = _setup(tmp_path)
    cli = [sys.executable, "-m", "hti_rl.cli", "refine", str(spec.path), "--run-root", str(runs), "--weight", "3", "--budget", "4"]
    first = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = RunDir.of(spec, runs).refine(AT, "f=4") / "agent" / "checkpoints" / "latest.json"
    end = time.monotonic() + 120
    while not latest.exists():
        assert time.monotonic() < end and first.poll() is None
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    steps = json.loads(latest.read_text())["steps"]
    assert 0 < steps < 24000
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    meta = json.loads((RunDir.of(spec, runs).refine(AT, "f=4") / "agent" / "meta.json").read_text())
    assert meta["resumed_from"] == steps and meta["steps"] >= 24000
    assert "refined at weight 3" in done.stdout
    assert with_refined_anchors(spec, runs).anchors == (0.1, 1.0, AT, 10.0)


@pytest.mark.parametrize("content, match", [("{", "not valid JSON"), ('{"weights": "3"}', "not a list"), ('{"weights": [true]}', "not a list"),
                                            ('{"weights": [20]}', "outside the spec's anchor range"), ('[3]', "not a list")])
def test_a_damaged_refined_file_is_a_clear_error(tmp_path, content, match):
    from hti_rl.errors import AnchorError

    spec = load_task(write_lqr_spec(tmp_path))
    path = RunDir.of(spec, tmp_path / "runs").refined_file
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(AnchorError, match=match):
        with_refined_anchors(spec, tmp_path / "runs")
    assert main(["record", str(spec.path), "--run-root", str(tmp_path / "runs")]) == 2


@pytest.mark.long  # ~10 s: two refines at one weight (CI runs it: `pytest -m long`)
def test_refining_again_with_force_replaces_the_anchor_and_its_dataset_rows(tmp_path):
    spec, runs = _setup(tmp_path)
    first = refine(spec, AT, 0.2, runs, progress=False)
    run = RunDir.of(first.spec, runs)
    before = PolicyDataset.load(run.dataset, spec=first.spec)
    with pytest.raises(HTIError, match="already an anchor"):
        refine(first.spec, AT, 0.2, runs, progress=False)
    again = refine(first.spec, AT, 0.2, runs, force=True, progress=False)
    after = PolicyDataset.load(run.dataset, spec=again.spec)  # valid: the replaced anchor's rows were redone
    assert again.spec.anchors == first.spec.anchors and after.weights.tolist() == before.weights.tolist()
    assert not np.array_equal(after.mean[2], before.mean[2]) or len(after.obs) != len(before.obs)
    np.testing.assert_array_equal(after.samples[0, :len(before.obs)], before.samples[0])
