"""rl-zoo3 as a real client: agents trained by rl-zoo3's own `train` entry point at two weights
(`--env-kwargs control_weight:λ`), imported from their run folders; the env kwargs rl-zoo3 records are
read as data, never executed, and a contradiction with the declared anchor weight is warned about."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hti_rl.cli import main
from hti_rl.runs import RunDir
from hti_rl.sb3io.zoo import ZooLoader, contradictions, read_zoo_run
from hti_rl.spec.load import load_task

REPO = Path(__file__).resolve().parent.parent
TINY_ZOO = {"hti_rl/LQR1D-v0": {"n_timesteps": 200, "policy": "MlpPolicy", "n_envs": 2, "n_steps": 100, "batch_size": 100,
                                "n_epochs": 2, "policy_kwargs": "dict(net_arch=dict(pi=[8], vf=[8]))"}}


def test_zoo_loader_reads_python_tags_as_data_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    text = (f"!!python/object/apply:collections.OrderedDict\n- - - env_kwargs\n    - {{control_weight: 0.1}}\n"
            f"  - - hook\n    - !!python/object/apply:os.system ['touch {marker}']\n"
            "  - - fn\n    - !!python/name:os.system ''\n  - - pair\n    - !!python/tuple [1, 2]\n")
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(text)  # why rl-zoo3's files need a loader of their own
    data = yaml.load(text, Loader=ZooLoader)  # noqa: S506
    assert data == {"env_kwargs": {"control_weight": 0.1}, "hook": [f"touch {marker}"], "fn": "", "pair": [1, 2]}
    assert not marker.exists()


def test_contradictions_name_the_kwarg_and_the_weights(tmp_path):
    from hti_rl.sb3io.zoo import ZooRun

    run = ZooRun(tmp_path, "hti_rl/LQR1D-v0", "ppo", {"control_weight": 0.1, "horizon": 20})
    assert contradictions(run, "hti_rl/LQR1D-v0", {"horizon": 20}, "control_weight", 0.1) == []
    [wrong] = contradictions(run, "hti_rl/LQR1D-v0", {"horizon": 20}, "control_weight", 10.0)
    assert "trained with control_weight=0.1" in wrong and "declared as the anchor at weight 10" in wrong
    found = contradictions(run, "hti_rl/LQR2D-v0", {"horizon": 50}, None, 0.1)
    assert any("trained on hti_rl/LQR1D-v0, the task's env is hti_rl/LQR2D-v0" in f for f in found)
    assert any("horizon=20" in f and "horizon=50" in f for f in found)
    assert any("control_weight=0.1" in f and "do not set" in f for f in found)


def _zoo_train(logs: Path, conf: Path, weight: float, seed: int) -> subprocess.Popen:
    """rl-zoo3's own training entry point, on hti-rl's registered LQR env at reward weight ``weight``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "hti_rl/LQR1D-v0", "-n", "200",
         "--gym-packages", "hti_rl.envs.lqr", "-conf", str(conf), "--env-kwargs", f"control_weight:{weight}",
         "-f", str(logs), "--seed", str(seed), "--eval-freq", "-1", "--log-interval", "-1", "--num-threads", "1", "--verbose", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_rl_zoo3_runs_import_with_their_recorded_weights(make_lqr_spec, tmp_path, caplog):
    pytest.importorskip("rl_zoo3")
    conf = tmp_path / "tiny_zoo.yml"
    conf.write_text(yaml.safe_dump(TINY_ZOO))
    jobs = [_zoo_train(tmp_path / "low", conf, 0.1, 1), _zoo_train(tmp_path / "high", conf, 10.0, 2)]  # side by side
    for job in jobs:
        job.wait(timeout=300)
        assert job.returncode == 0, job.stdout.read()
    low, high = (tmp_path / name / "ppo" / "hti_rl-LQR1D-v0_1" for name in ("low", "high"))
    assert read_zoo_run(low, "hti_rl-LQR1D-v0").env_kwargs == {"control_weight": 0.1}

    path = make_lqr_spec(anchors=[0.1, 10.0], held_out=[1.0], weight_env_kwarg="control_weight")
    spec, runs = load_task(path), tmp_path / "runs"
    with caplog.at_level(logging.WARNING, logger="hti_rl.training.importing"):
        assert main(["import-anchors", str(path), "--run-root", str(runs), "--anchor", f"0.1={low}", "--anchor", f"10={high}"]) == 0
    assert not caplog.records, caplog.text
    meta = json.loads((RunDir.of(spec, runs).anchor(0.1) / "meta.json").read_text())
    assert meta["imported"]["zoo"]["env_kwargs"] == {"control_weight": 0.1} and meta["imported"]["warnings"] == []
    assert meta["imported"]["zoo"]["env"] == "hti_rl/LQR1D-v0" and meta["algo"] == "ppo"

    # Declared the wrong way round: each import says so, naming the kwarg, the recorded and the declared weight.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hti_rl.training.importing"):
        assert main(["import-anchors", str(path), "--run-root", str(runs), "--anchor", f"0.1={high}", "--anchor", f"10={low}", "--force"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "anchor w=0.1" in messages[0] and "trained with control_weight=10.0" in messages[0] and "at weight 0.1" in messages[0]
    assert "anchor w=10" in messages[1] and "trained with control_weight=0.1" in messages[1] and "at weight 10" in messages[1]
    assert json.loads((RunDir.of(spec, runs).anchor(10.0) / "meta.json").read_text())["imported"]["warnings"] == [messages[1].split(": ", 1)[1]]
