"""Anchor training: layout, learned LQR gains ordered by weight, skip, resume after SIGKILL, run lock."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hti_rl.envs.lqr import optimal_gain
from hti_rl.errors import AnchorError, HTIError
from hti_rl.runs import RunDir
from hti_rl.seeds import anchor_seed
from hti_rl.spec.load import load_task
from hti_rl.training.anchors import train_anchors
from hti_rl.training.jobs import own_weight_return
from hti_rl.training.store import load_anchor, load_anchor_actor


def _cli(*args: str, run_root: Path) -> list[str]:
    return [sys.executable, "-m", "hti_rl.cli", *args, "--run-root", str(run_root)]


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.1)


def _gain(spec, weight: float, run_root: Path) -> float:
    """The deterministic policy's slope −du/dx over states in [−1, 1] (the LQR optimum is u = −K x)."""
    actor = load_anchor_actor(spec, weight, run_root)
    x = torch.linspace(-1, 1, 21)[:, None]
    with torch.no_grad():
        u = actor.to_env_action(actor.distribution(x)[0])[:, 0].numpy()
    return -np.polyfit(x[:, 0].numpy(), u, 1)[0]


def test_layout_meta_and_gain_order(trained_lqr):
    path, runs = trained_lqr
    spec = load_task(path)
    gains = [_gain(spec, w, runs) for w in spec.anchors]
    exact = [optimal_gain([[1.0]], [[1.0]], [[1.0]], [[1.0]], w).item() for w in spec.anchors]
    assert exact[0] > exact[1] > exact[2]
    assert gains[0] > gains[1] > gains[2] > 0, (gains, exact)
    for index, weight in enumerate(spec.anchors):
        directory = RunDir.of(spec, runs).anchor(weight)
        assert directory.name == f"w={weight:g}"
        assert (directory / "model.zip").is_file() and not (directory / "checkpoints").exists()
        assert not (directory / "seeds").exists()
        meta = json.loads((directory / "meta.json").read_text())
        assert meta["steps"] >= 6000 and meta["seed"] == anchor_seed(spec, index) and meta["resumed_from"] is None
        assert meta["task_fingerprint"] == spec.fingerprint() and meta["algo"] == "ppo" and meta["versions"]["hti_rl"]
        assert "seeds" not in meta and "selection" not in meta
        assert (runs / "lqr1d" / "tb" / f"anchor_w={weight:g}_1").is_dir()


def test_finished_anchors_are_skipped(lqr_run):
    spec, runs = lqr_run
    model = RunDir.of(spec, runs).anchor(1.0) / "model.zip"
    before = model.stat().st_mtime_ns
    metas = train_anchors(spec, run_root=runs, progress=False)
    assert [m["weight"] for m in metas] == list(spec.anchors)
    assert model.stat().st_mtime_ns == before


def test_vecnormalize_saved_and_loaded(make_lqr_spec, tmp_path):
    spec = load_task(make_lqr_spec(agent={"n_timesteps": 400, "normalize": True}, anchors=[0.1, 10.0], held_out=[1.0]))
    train_anchors(spec, run_root=tmp_path / "runs", progress=False)
    model, vecnormalize = load_anchor(spec, 0.1, tmp_path / "runs")
    assert (RunDir.of(spec, tmp_path / "runs").anchor(0.1) / "vecnormalize.pkl").is_file()
    assert vecnormalize is not None and not vecnormalize.training
    actor = load_anchor_actor(spec, 0.1, tmp_path / "runs")
    obs = np.linspace(-2, 2, 9, dtype=np.float32)[:, None]
    with torch.no_grad():
        action = actor.to_env_action(actor.distribution(torch.as_tensor(obs))[0]).numpy()
    np.testing.assert_allclose(action, model.predict(vecnormalize.normalize_obs(obs), deterministic=True)[0], atol=1e-5)


def test_seeds_reproducible_and_distinct(make_lqr_spec):
    spec = load_task(make_lqr_spec())
    seeds = [anchor_seed(spec, i) for i in range(3)]
    assert len(set(seeds)) == 3 and seeds == [anchor_seed(spec, i) for i in range(3)]
    assert anchor_seed(load_task(make_lqr_spec(seed=1)), 0) != seeds[0]
    assert anchor_seed(spec, 1, 0) == seeds[1] and len({anchor_seed(spec, 1, i) for i in range(3)} | set(seeds)) == 5


def test_best_of_two_seeds(make_lqr_spec, tmp_path):
    spec = load_task(make_lqr_spec(agent={"n_timesteps": 400}, anchors=[0.1, 10.0], held_out=[1.0], seeds_per_anchor=2))
    runs = tmp_path / "runs"
    metas = train_anchors(spec, run_root=runs, workers=2, progress=False)
    for index, (weight, meta) in enumerate(zip(spec.anchors, metas)):
        seeds = [json.loads((RunDir.of(spec, runs).seed(weight, i) / "meta.json").read_text()) for i in range(2)]
        assert [s["seed"] for s in seeds] == [anchor_seed(spec, index, 0), anchor_seed(spec, index, 1)]
        assert seeds[0]["seed"] == anchor_seed(spec, index)  # seed 0 is the single-seed anchor's run
        scores = [s["selection"]["return_mean"] for s in seeds]
        assert scores[0] != scores[1] and all(s["selection"]["episodes"] == spec.eval_episodes for s in seeds)
        best = int(np.argmax(scores))
        assert meta["seed_index"] == best and meta["seed"] == seeds[best]["seed"]
        assert [s["return_mean"] for s in meta["seeds"]] == scores and [s["seed_index"] for s in meta["seeds"]] == [0, 1]
        directory = RunDir.of(spec, runs).anchor(weight)
        assert (directory / "model.zip").read_bytes() == (RunDir.of(spec, runs).seed(weight, best) / "model.zip").read_bytes()
        actor = load_anchor_actor(spec, weight, runs)  # downstream reads the chosen seed as the anchor
        assert own_weight_return(spec, actor, weight)[0] == pytest.approx(max(scores))
        assert (runs / "lqr1d" / "tb" / f"anchor_w={weight:g}_seed1_1").is_dir()
    seed_models = [RunDir.of(spec, runs).seed(0.1, i) / "model.zip" for i in range(2)]
    before = [p.stat().st_mtime_ns for p in seed_models]
    (RunDir.of(spec, runs).anchor(0.1) / "meta.json").unlink()  # as if interrupted after both seeds finished
    assert train_anchors(spec, run_root=runs, progress=False)[0] == metas[0]  # the same choice
    assert [p.stat().st_mtime_ns for p in seed_models] == before  # without retraining a seed


def test_missing_anchor_names_the_fix(make_lqr_spec, tmp_path):
    spec = load_task(make_lqr_spec())
    with pytest.raises(AnchorError, match="hti-rl train-anchors"):
        load_anchor(spec, 1.0, tmp_path / "runs")


@pytest.mark.long  # ~20 s: a real SIGKILL mid-training, then a resumed run (CI runs it: `pytest -m long`)
def test_resume_after_sigkill(make_lqr_spec, tmp_path):
    path = make_lqr_spec(agent={"n_timesteps": 3000})
    spec, runs = load_task(path), tmp_path / "runs"
    first = subprocess.Popen(_cli("train-anchors", str(path), "--workers", "2", "--checkpoint-every", "400", run_root=runs))
    latest = [RunDir.of(spec, runs).anchor(w) / "checkpoints" / "latest.json" for w in spec.anchors]
    _wait_for(lambda: any(p.exists() for p in latest))
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(1.0)  # its orphaned workers notice and exit
    checkpoint = {w: json.loads(p.read_text())["steps"] for w, p in zip(spec.anchors, latest) if p.exists()}
    assert checkpoint and all(0 < s < 3000 for s in checkpoint.values())

    done = subprocess.run(_cli("train-anchors", str(path), "--workers", "2", run_root=runs), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for weight in spec.anchors:
        meta = json.loads((RunDir.of(spec, runs).anchor(weight) / "meta.json").read_text())
        assert meta["resumed_from"] == checkpoint.get(weight), (weight, meta, checkpoint)
        assert meta["steps"] >= 3000
    assert "resumed from step" in done.stdout


@pytest.mark.long  # ~6 s: a second training process against a locked run (CI runs it: `pytest -m long`)
def test_second_process_gets_lock_error(make_lqr_spec, tmp_path):
    path = make_lqr_spec(agent={"n_timesteps": 10**6})
    runs = tmp_path / "runs"
    lock = runs / "lqr1d" / "anchors" / ".lock"
    first = subprocess.Popen(_cli("train-anchors", str(path), run_root=runs))
    try:
        _wait_for(lambda: lock.exists() and "pid" in lock.read_text())
        second = subprocess.run(_cli("train-anchors", str(path), run_root=runs), capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run ended before the second tried the lock"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert second.returncode == 2
    assert second.stderr.startswith("error: ") and "is in use by hti-rl train-anchors" in second.stderr
    assert "Traceback" not in second.stderr


def test_bad_backend_and_workers(make_lqr_spec, tmp_path):
    spec = load_task(make_lqr_spec())
    with pytest.raises(HTIError, match="backend 'dask'"):
        train_anchors(spec, run_root=tmp_path, backend="dask")
    with pytest.raises(HTIError, match="workers must be"):
        train_anchors(spec, run_root=tmp_path, workers=0)


def _tree(run_root: Path) -> dict[str, Any]:
    """What a training run leaves: every file (TensorBoard runs by folder, since event files are named by
    host and time), each policy's parameters, and each meta.json without its wall time."""
    out: dict[str, Any] = {}
    for path in sorted(run_root.rglob("*")):
        rel = path.relative_to(run_root).as_posix()
        if "/tb/" in f"/{rel}":
            if path.is_dir():
                out[rel] = "tb run"
        elif path.name == "model.zip":
            with zipfile.ZipFile(path) as zf:
                state = torch.load(io.BytesIO(zf.read("policy.pth")), weights_only=True)
            out[rel] = {k: v.numpy().tolist() for k, v in state.items()}
        elif path.name == "meta.json":
            out[rel] = {k: v for k, v in json.loads(path.read_text()).items() if k != "wall_time_s"}
        elif path.is_file() and path.name != ".lock":
            out[rel] = "file"
    return out


def _ray_workers() -> list[int]:
    """Pids of the Ray worker processes running a training job (Ray titles them ``ray::_train_on_ray``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ray::_train_on_ray" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.mark.long  # ~45-70 s: a local Ray cluster starts in ~15 s (CI runs it: `pytest -m long`)
def test_ray_backend_trains_resumes_and_matches_the_process_backend(make_lqr_spec, tmp_path):
    """Two tiny anchors and a retrained agent through a local Ray cluster give the same files and the same
    parameters as the process backend; Ray workers killed mid-training are retried and resume from their checkpoints."""
    ray = pytest.importorskip("ray")
    from hti_rl.training.retrained import train_all

    spec = load_task(make_lqr_spec(agent={"n_timesteps": 400}, anchors=[0.1, 10.0], held_out=[1.0]))
    long = load_task(make_lqr_spec(agent={"n_timesteps": 3000}, anchors=[0.1, 10.0], held_out=[1.0]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        train_all(spec, 1, tmp_path / "ray", workers=2, progress=False, backend="ray")

        errors: list[BaseException] = []
        metas: list[Any] = []
        thread = threading.Thread(target=lambda: _catch(errors, lambda: metas.extend(
            train_anchors(long, tmp_path / "killed", workers=2, backend="ray", progress=False, checkpoint_every=300))))
        thread.start()
        latest = [RunDir.of(long, tmp_path / "killed").anchor(w) / "checkpoints" / "latest.json" for w in long.anchors]
        _wait_for(lambda: all(p.exists() for p in latest) or not thread.is_alive(), timeout=120)
        killed = _ray_workers()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        thread.join(timeout=180)
    finally:
        ray.shutdown()
    assert not errors, errors
    assert len(killed) == 2, killed
    assert [m["weight"] for m in metas] == [0.1, 10.0]
    assert all(m["resumed_from"] and 0 < m["resumed_from"] < 3000 and m["steps"] >= 3000 for m in metas), metas

    train_all(spec, 1, tmp_path / "local", workers=2, progress=False, backend="local")
    ray_tree, local_tree = _tree(tmp_path / "ray"), _tree(tmp_path / "local")
    assert sorted(ray_tree) == sorted(local_tree)
    assert {"lqr1d/anchors/w=0.1/model.zip", "lqr1d/anchors/w=10/model.zip", "lqr1d/retrained/w=1/seed=0/model.zip",
            "lqr1d/tb/retrained_w=1_seed0_1"} <= set(ray_tree)
    assert ray_tree == local_tree  # same seeds, one torch thread each: the same parameters to the last bit


def _catch(errors: list[BaseException], fn: Any) -> None:
    try:
        fn()
    except BaseException as exc:  # re-raised by the test's assertion
        errors.append(exc)


def test_ray_missing_names_the_extra(make_lqr_spec, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    spec = load_task(make_lqr_spec())
    with pytest.raises(HTIError, match=r"pip install hti-rl\[ray\]"):
        train_anchors(spec, run_root=tmp_path / "runs", backend="ray", progress=False)
