"""Shared-start anchors and parameter interpolation on the tiny 1-D LQR task: the base and its
fine-tunes are laid out and tied together, the fine-tunes keep the base's observation normaliser,
an interrupted fine-tune resumes, and ParameterInterpolation is a valid policy at every weight in
range that equals each anchor at its own weight, while unrelated anchors are refused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hti_rl.dataset import record
from hti_rl.errors import AnchorError, SpecError
from hti_rl.evaluate import evaluate_at
from hti_rl.io import sha256_file
from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.baselines import ParameterInterpolation, fit_param_interp
from hti_rl.runs import RunDir
from hti_rl.sb3io.safe_pickle import read_vecnormalize
from hti_rl.spec.load import load_task
from hti_rl.training.anchors import train_anchors
from hti_rl.training.shared_start import total_steps
from hti_rl.training.store import load_anchor_actor

SHARED = {"base_steps": 3000, "finetune_steps": 1200}


@pytest.fixture(scope="module")
def shared_lqr(tmp_path_factory):
    """(spec, run root, dataset, actors): the tiny LQR task's anchors fine-tuned from one base at λ = 1."""
    from conftest import write_lqr_spec

    root = tmp_path_factory.mktemp("shared")
    spec = load_task(write_lqr_spec(root, shared_start=SHARED))
    runs = root / "runs"
    train_anchors(spec, run_root=runs, workers=2, progress=False)
    dataset = record(spec, runs, progress=False)
    return spec, runs, dataset, [load_anchor_actor(spec, w, runs) for w in spec.anchors]


def test_spec_field_defaults_and_errors(make_lqr_spec):
    scratch = load_task(make_lqr_spec())
    spec = load_task(make_lqr_spec(shared_start=True))
    assert (spec.shared_start.weight, spec.shared_start.base_steps, spec.shared_start.finetune_steps) == (1.0, 6000, 3000)
    assert spec == scratch.with_shared_start()  # the CLI's --shared-start on a spec without the field
    assert spec.fingerprint() != scratch.fingerprint() and RunDir.of(spec, "runs").path.as_posix() == "runs/lqr1d/shared"
    assert load_task(make_lqr_spec(shared_start=False)).fingerprint() == scratch.fingerprint()
    with pytest.raises(SpecError, match="shared_start.*outside the anchor range|outside the anchor range.*shared_start"):
        load_task(make_lqr_spec(shared_start={"weight": 50}))
    with pytest.raises(SpecError, match="seeds_per_anchor"):
        load_task(make_lqr_spec(shared_start=True, seeds_per_anchor=2))
    with pytest.raises(SpecError, match="shared_start.finetune_step"):
        load_task(make_lqr_spec(shared_start={"finetune_step": 10}))


def test_layout_ties_fine_tunes_to_their_base(shared_lqr):
    spec, runs, _, _ = shared_lqr
    base = json.loads((RunDir.of(spec, runs).base / "meta.json").read_text())
    assert base["weight"] == 1.0 and base["steps"] >= SHARED["base_steps"]
    assert base["shared_start"] == {"role": "base", "weight": 1.0, **SHARED}
    assert base["model_sha256"] == sha256_file(RunDir.of(spec, runs).base / "model.zip")
    for weight in spec.anchors:
        meta = json.loads((RunDir.of(spec, runs).anchor(weight) / "meta.json").read_text())
        assert RunDir.of(spec, runs).anchor(weight).parent.parent == runs / "lqr1d" / "shared"
        assert SHARED["finetune_steps"] <= meta["steps"] < SHARED["base_steps"]  # its own budget, counted from the base
        assert meta["shared_start"]["role"] == "finetune" and meta["shared_start"]["base_sha256"] == base["model_sha256"]
        assert (runs / "lqr1d" / "shared" / "tb" / f"finetune_w={weight:g}_1").is_dir()
    assert total_steps(spec) == 3000 + 3 * 1200


def test_fine_tunes_move_towards_their_weight(shared_lqr):
    """Fine-tuning changes each anchor's gain in the direction of its weight's optimum (higher control
    cost, smaller gain), starting from the same base."""
    spec, _, _, actors = shared_lqr
    x = torch.linspace(-1, 1, 21)[:, None]
    with torch.no_grad():
        gains = [-np.polyfit(x[:, 0].numpy(), a.distribution(x)[0][:, 0].numpy(), 1)[0] for a in actors]
    assert gains[0] > gains[2], gains


def test_interpolation_is_a_policy_at_every_weight_and_each_anchor_at_its_own(shared_lqr):
    spec, _, dataset, actors = shared_lqr
    policy = fit_param_interp(spec, dataset, actors)
    obs = dataset.obs[:64]
    for w, actor in zip(spec.anchors, actors):
        policy.set_weight(w)
        np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], actor.predict(obs)[0])
    low, high = policy.action_space.low, policy.action_space.high
    for w in np.geomspace(spec.anchors[0], spec.anchors[-1], 9):
        policy.set_weight(w)
        for deterministic in (True, False):
            actions = policy.predict(obs, deterministic=deterministic)[0]
            assert actions.shape == (64, 1) and np.all(np.isfinite(actions)) and np.all((low <= actions) & (actions <= high))
        mean, _ = evaluate_at(policy, spec, float(w), episodes=2, seed=0)
        assert np.isfinite(mean)
    # Halfway in the weight scale, every parameter is the mean of the two anchors' parameters.
    policy.set_weight(float(np.sqrt(0.1 * 1.0)))
    blended = policy.blended_actor(0, 0.5).state_dict()
    for name, tensor in actors[0].state_dict().items():
        torch.testing.assert_close(blended[name], (tensor + actors[1].state_dict()[name]) / 2)


def test_interpolation_survives_save_and_load(shared_lqr, tmp_path):
    spec, _, dataset, actors = shared_lqr
    policy = fit_param_interp(spec, dataset, actors)
    policy.save(tmp_path / "p.zip")
    loaded = AnchoredPolicy.load(tmp_path / "p.zip", expect_fingerprint=spec.fingerprint())
    assert type(loaded) is ParameterInterpolation
    policy.set_weight(3.0)
    loaded.set_weight(3.0)
    np.testing.assert_array_equal(loaded.predict(dataset.obs[:16], deterministic=True)[0], policy.predict(dataset.obs[:16], deterministic=True)[0])


def test_unrelated_anchors_are_refused(shared_lqr, trained_lqr):
    spec, _, dataset, actors = shared_lqr
    path, runs = trained_lqr
    scratch = load_task(path)
    scratch_actors = [load_anchor_actor(scratch, w, runs) for w in scratch.anchors]
    with pytest.raises(AnchorError, match=r"shared start.*--shared-start"):
        fit_param_interp(scratch, dataset, scratch_actors)
    mixed = [actors[0], load_anchor_actor(spec, 1.0, shared_lqr[1]), actors[2]]
    mixed[1].arch["source"]["shared_start"] = "another base"
    with pytest.raises(AnchorError, match="different starts"):
        fit_param_interp(spec, dataset, mixed)


def test_fine_tune_of_another_base_is_refused(shared_lqr, tmp_path):
    import shutil

    spec, runs, _, _ = shared_lqr
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy, ignore=shutil.ignore_patterns(".lock", "tb"))
    meta_path = RunDir.of(spec, copy).anchor(10.0) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["shared_start"]["base_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(AnchorError, match="--shared-start --force"):
        train_anchors(spec, run_root=copy, progress=False)


def test_fine_tunes_keep_the_base_normaliser(make_lqr_spec, tmp_path):
    spec = load_task(make_lqr_spec(agent={"normalize": True}, anchors=[0.1, 10.0], held_out=[1.0],
                                   shared_start={"base_steps": 800, "finetune_steps": 400}))
    runs = tmp_path / "runs"
    train_anchors(spec, run_root=runs, progress=False)
    base = read_vecnormalize(RunDir.of(spec, runs).base / "vecnormalize.pkl")
    for weight in spec.anchors:
        stats = read_vecnormalize(RunDir.of(spec, runs).anchor(weight) / "vecnormalize.pkl")
        assert (stats.obs_mean, stats.obs_var, stats.obs_count) == (base.obs_mean, base.obs_var, base.obs_count)
        assert (stats.ret_var, stats.ret_count) == (base.ret_var, base.ret_count)
    policy = fit_param_interp(spec, record(spec, runs, progress=False), [load_anchor_actor(spec, w, runs) for w in spec.anchors])
    policy.set_weight(1.0)
    assert np.all(np.isfinite(policy.predict(np.zeros((4, 1), dtype=np.float32), deterministic=True)[0]))


@pytest.mark.long  # ~20 s: a real SIGKILL during a fine-tune (CI runs it: `pytest -m long`)
def test_interrupted_fine_tune_resumes_without_retraining_the_base(make_lqr_spec, tmp_path):
    path = make_lqr_spec()  # no shared_start field: the CLI flag turns it on (base 6000 steps, fine-tunes 3000)
    runs = tmp_path / "runs"
    spec = load_task(path).with_shared_start()
    command = [sys.executable, "-m", "hti_rl.cli", "train-anchors", str(path), "--shared-start", "--workers", "2",
               "--checkpoint-every", "400", "--no-check", "--run-root", str(runs)]
    first = subprocess.Popen(command)
    latest = [RunDir.of(spec, runs).anchor(w) / "checkpoints" / "latest.json" for w in spec.anchors]
    end = time.monotonic() + 120
    while not any(p.exists() for p in latest):
        assert time.monotonic() < end and first.poll() is None, "no fine-tune checkpoint appeared"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(1.0)  # its orphaned workers notice and exit
    base_model = RunDir.of(spec, runs).base / "model.zip"
    before = base_model.stat().st_mtime_ns
    checkpoint = {w: json.loads(p.read_text())["steps"] for w, p in zip(spec.anchors, latest) if p.exists()}
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert base_model.stat().st_mtime_ns == before
    assert "shared start: ppo at w=1" in done.stdout
    for weight in spec.anchors:
        meta = json.loads((RunDir.of(spec, runs).anchor(weight) / "meta.json").read_text())
        assert meta["resumed_from"] == checkpoint.get(weight) and meta["steps"] >= 3000


def test_cli_stages_on_shared_start_anchors(make_lqr_spec, tmp_path, capsys):
    """`--shared-start` on train-anchors, record and fit; deploy finds the shared-start settings in the file."""
    from hti_rl.cli import main

    path = make_lqr_spec(agent={"n_timesteps": 1000})
    runs = str(tmp_path / "runs")
    assert main(["train-anchors", str(path), "--shared-start", "--workers", "2", "--no-check", "--run-root", runs]) == 0
    assert main(["record", str(path), "--shared-start", "--run-root", runs]) == 0
    assert main(["fit", str(path), "--shared-start", "--set", "steps=3", "--accept-anchors", "--run-root", runs]) == 0
    surrogate = tmp_path / "runs" / "lqr1d" / "shared" / "surrogate.zip"
    assert surrogate.is_file() and not (tmp_path / "runs" / "lqr1d" / "surrogate.zip").exists()
    capsys.readouterr()
    assert main(["deploy", str(surrogate), "--spec", str(path), "--weight", "0.3", "--episodes", "2"]) == 0
    assert "lqr1d at weight 0.3: return" in capsys.readouterr().out
