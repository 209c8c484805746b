"""Reliability: bad input gets our error, writers killed mid-write leave the previous file, training
killed at several points resumes, no file runs code on load, same seed same result, full disk and
read-only directories. Each test is a row of the README's "Errors and guarantees" tables (with the rows tested elsewhere)."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_lqr_anchor, write_lqr_spec
from gymnasium import spaces

from hti_rl.cli import main
from hti_rl.clot import CLOTModel
from hti_rl.dataset import PolicyDataset, record
from hti_rl.envs.lqr import LQREnv
from hti_rl.errors import FileFormatError, HTIError, SpaceError
from hti_rl.io import atomic_write, write_json
from hti_rl.methods.base import FILE_VERSION, read_policy_file
from hti_rl.methods.surrogate import SurrogatePolicy, clot_config, fit
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task
from hti_rl.training.store import load_anchor_actor

REPO = Path(__file__).resolve().parent.parent
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
pytestmark = pytest.mark.usefixtures("one_thread")


def build_tiny_surrogate(root: Path, seed: int = 0) -> tuple[object, Path]:
    """(spec, run root) of a 2-D LQR task with exact-gain anchors (no training), recorded and fitted
    in a few seconds; the surrogate is at ``RunDir.of(spec, runs).surrogate``."""
    path = write_lqr_spec(
        root, name="lqr2d", env_id="hti_rl/LQR2D-v0", anchors=[0.1, 1.0, 10.0], held_out=[0.3, 3.0],
        record={"episodes": 1, "samples": 4, "max_states": 60},
    )
    spec, runs = load_task(path), root / "runs"
    for w in spec.anchors:
        save_lqr_anchor(spec, w, runs)
    record(spec, runs, progress=False)
    fit(spec, runs, clot_config({"steps": 10}, seed=seed), progress=False)
    return spec, runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(spec, run root) of :func:`build_tiny_surrogate`, built once; copy before writing into it."""
    torch.set_num_threads(1)
    return build_tiny_surrogate(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_copy(tiny, tmp_path):
    """A private copy of the tiny run, free to write into."""
    import shutil

    spec, runs = tiny
    shutil.copytree(runs, tmp_path / "runs", ignore=shutil.ignore_patterns(".lock", "tb"))
    return spec, tmp_path / "runs"


def _wait_for(predicate, timeout: float = 90.0, poll: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("condition not reached")
        time.sleep(poll)


def _temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


# ------------------------------------------------------------------ bad input the other tests miss
@pytest.mark.parametrize(
    "fault, message",
    [
        ("nan reward", "reward component 'ctrl' is nan at step 2"),
        ("inf reward", "reward component 'ctrl' is -inf at step 2"),
        ("text reward", "reward component 'ctrl' is 'high' at step 2 of the episode, not a number"),
        ("inf observation", "non-finite observation"),
    ],
    ids=["nan reward", "inf reward", "text reward", "inf observation"],
)
def test_non_finite_values_while_recording(tiny_copy, monkeypatch, fault, message):
    spec, runs = tiny_copy
    step = LQREnv.step

    def faulty_step(self, action):
        obs, reward, terminated, truncated, info = step(self, action)
        if self._t >= 3:
            if fault == "inf observation":
                obs = np.full_like(obs, np.inf)
            else:
                info["reward_ctrl"] = {"nan reward": np.nan, "inf reward": -np.inf, "text reward": "high"}[fault]
        return obs, reward, terminated, truncated, info

    before = RunDir.of(spec, runs).dataset.read_bytes()
    monkeypatch.setattr(LQREnv, "step", faulty_step)
    with pytest.raises(HTIError, match=re.escape(message)):
        record(spec, runs, progress=False)
    assert RunDir.of(spec, runs).dataset.read_bytes() == before


def test_policy_needs_a_box_action_space(tiny):
    spec, runs = tiny
    actors = [load_anchor_actor(spec, w, runs) for w in spec.anchors]
    box = spaces.Box(-10, 10, (2,))
    with pytest.raises(SpaceError, match="needs a Box action space, got Discrete"):
        SurrogatePolicy(box, spaces.Discrete(3), actors, clot=None, weights=spec.anchors, weight_scale="log",
                        x_mean=np.zeros(2), x_std=np.ones(2))


def _rewrite_policy(source: Path, target: Path, edit_header=None, payload: bytes | None = None, fresh_sha: bool = True) -> None:
    header, blob = read_policy_file(source)
    if payload is not None:
        blob = payload
    if edit_header is not None:
        edit_header(header)
    if fresh_sha:
        from hti_rl.methods.policy_file import header_checksum

        header["checksum"] = header_checksum(header, blob)
    with zipfile.ZipFile(target, "w") as zf:
        zf.writestr("header.json", json.dumps(header))
        zf.writestr("payload.pt", blob)


def test_surrogate_of_another_version_is_refused(tiny, tmp_path):
    spec, runs = tiny
    path = tmp_path / "surrogate.zip"
    _rewrite_policy(RunDir.of(spec, runs).surrogate, path, edit_header=lambda h: h.update(format_version=FILE_VERSION + 1))
    with pytest.raises(FileFormatError, match=f"format version {FILE_VERSION + 1}; this hti-rl .* reads version {FILE_VERSION}.*hti-rl fit"):
        SurrogatePolicy.load(path)
    _rewrite_policy(RunDir.of(spec, runs).surrogate, path, edit_header=lambda h: h.update(format="something-else"))
    with pytest.raises(FileFormatError, match="not an hti-rl surrogate file"):
        SurrogatePolicy.load(path)


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign", "empty"])
def test_damaged_clot_model_file_is_refused(tiny, tmp_path, damage):
    spec, runs = tiny
    policy = SurrogatePolicy.load(RunDir.of(spec, runs).surrogate)
    path = tmp_path / "clot.pt"
    policy.clot.save(path)
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":  # inside the zip's central directory: torch cannot find its records
        path.write_bytes(blob[:-30] + bytes(b ^ 0xFF for b in blob[-30:-20]) + blob[-20:])
    elif damage == "foreign":
        torch.save({"format": "something-else", "weights": {}}, path)
    else:
        path.write_bytes(b"")
    with pytest.raises(FileFormatError, match="CLOTModel"):
        CLOTModel.load(path)


@pytest.mark.parametrize(
    "fault, message",
    [
        ("truncated", "is truncated or not a surrogate file"),
        ("pickled payload", "refused without running it"),
        ("newer version", f"surrogate format version {FILE_VERSION + 1}"),
        ("weight out of range", "weight 20 is outside the anchor range [0.1, 10]"),
        ("weight nan", "weight must be finite, got nan"),
    ],
    ids=["truncated", "pickled payload", "newer version", "weight out of range", "weight nan"],
)
def test_cli_reports_bad_files_and_weights_without_traceback(tiny, tmp_path, capsys, fault, message):
    spec, runs = tiny
    source, path = RunDir.of(spec, runs).surrogate, tmp_path / "surrogate.zip"
    weight = {"weight out of range": "20", "weight nan": "nan"}.get(fault, "3")
    if fault == "truncated":
        path.write_bytes(source.read_bytes()[:1000])
    elif fault == "pickled payload":
        buf = io.BytesIO()
        torch.save(_Payload(tmp_path / "ran"), buf)
        _rewrite_policy(source, path, payload=buf.getvalue())
    elif fault == "newer version":
        _rewrite_policy(source, path, edit_header=lambda h: h.update(format_version=FILE_VERSION + 1))
    else:
        path.write_bytes(source.read_bytes())
    assert main(["deploy", str(path), "--weight", weight, "--spec", str(spec.path), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "ran").exists()


# ---------------------------------------------------------------- no half-written file (SIGKILL)
WRITER = """
import itertools, json, sys
import numpy as np
from hti_rl.dataset import FORMAT, FORMAT_VERSION, PolicyDataset
from hti_rl.io import atomic_write

path, kind = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
samples = rng.normal(size=(2, 4000, 256, 4)).astype(np.float32)  # 33 MB: a write takes a while
for version in itertools.count(1):
    if kind == "dataset":
        mean = samples[:, :, 0]
        PolicyDataset(obs=mean[0].copy(), weights=np.array([1.0, 2.0]), mean=mean, log_std=mean - 1, samples=samples,
                      header={"format": FORMAT, "format_version": FORMAT_VERSION, "version": version}).save(path)
    else:
        with atomic_write(path, "w") as f:
            f.write(json.dumps({"version": version}) + "\\n")
            for row in range(200000):
                f.write(f"| {version} | {row} | a row of a long report |\\n")
"""


def _small_dataset(version: int) -> PolicyDataset:
    rng = np.random.default_rng(version)
    mean = rng.normal(size=(2, 5, 1)).astype(np.float32)
    from hti_rl.dataset import FORMAT, FORMAT_VERSION

    return PolicyDataset(obs=mean[0].copy(), weights=np.array([1.0, 2.0]), mean=mean, log_std=mean - 1, samples=mean[:, :, None].copy(),
                         header={"format": FORMAT, "format_version": FORMAT_VERSION, "version": version})


def _read_version(path: Path, kind: str) -> int:
    """The version of the complete file at ``path`` (loading it checks that it is complete)."""
    if kind == "dataset":
        return PolicyDataset.load(path).header["version"]
    first, *rows = path.read_text().splitlines()
    version = json.loads(first)["version"]
    assert len(rows) == (200000 if version else 0)
    assert not rows or rows[-1] == f"| {version} | 199999 | a row of a long report |"
    return version


def _writing(directory: Path) -> bool:
    """A temp file of an atomic write in ``directory`` has bytes in it."""
    for p in _temp_files(directory):
        try:
            if p.stat().st_size > 0:
                return True
        except FileNotFoundError:  # renamed over its target meanwhile
            pass
    return False


@pytest.mark.long  # ~6 s each: writers SIGKILLed mid-write three times (CI runs it: `pytest -m long`)
@pytest.mark.parametrize("kind", ["dataset", "report"])
def test_writer_killed_mid_write_leaves_previous_file(tmp_path, kind):
    path = tmp_path / ("dataset.npz" if kind == "dataset" else "report.md")
    if kind == "dataset":
        _small_dataset(0).save(path)
    else:
        with atomic_write(path, "w") as f:
            f.write(json.dumps({"version": 0}) + "\n")
    rng, mid_write = random.Random(0), 0
    for _ in range(10):  # until three kills have landed mid-write
        before = _read_version(path, kind)
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), kind], env=CHILD_ENV)
        try:
            # wait until a write is under way (its temp file has bytes), then a random moment more
            _wait_for(lambda: child.poll() is not None or _writing(tmp_path), poll=0.005)
            time.sleep(rng.uniform(0.0, 0.02))
            assert child.poll() is None, "the writer ended by itself"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        after = _read_version(path, kind)  # loads: intact, the previous file or a complete newer one
        assert after >= before
        left = _temp_files(tmp_path)  # a writer killed mid-write leaves its hidden temp file, never the target
        mid_write += bool(left)
        for p in left:
            p.unlink()
        if mid_write == 3:
            break
    assert mid_write == 3, "the kills did not land during writes"


def test_every_writer_goes_through_atomic_write():
    """Static guard: no module writes a file in place (TensorBoard event logs excepted)."""
    in_place = re.compile(
        r"\.write_text\(|\.write_bytes\(|\bopen\([^)]*['\"][wax]b?\+?['\"]|savefig\((?!f\b)|np\.savez?(_compressed)?\((?!f\b)"
        r"|torch\.save\([^,]+,\s*+(?!f\b|buf\b)|pickle\.dump\([^,]+,\s*+(?!f\b)|\.save\((?:str\()?\w*path"
    )
    offenders = []
    for source in sorted((REPO / "hti_rl").rglob("*.py")):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if in_place.search(code) and "atomic_write" not in code:
                offenders.append(f"{source.relative_to(REPO)}:{number}: {line.strip()}")
    # the save methods of our own artefacts, themselves atomic (checked by this test where they write)
    allowed = {"policy.save(RunDir.of(spec, run_root).surrogate)", "policy.save(path)", "cross.save(path)", "dataset.save(RunDir.of(spec, run_root).dataset)"}
    offenders = [o for o in offenders if o.split(": ", 1)[1] not in allowed]
    assert not offenders, "files written without atomic_write:\n" + "\n".join(offenders)


# ------------------------------------------------------------ anchor training killed several times
@pytest.mark.long  # ~17 s: three real SIGKILLs and a resumed run (CI runs it: `pytest -m long`)
def test_training_killed_at_several_points_resumes_and_finishes(make_lqr_spec, tmp_path):
    total, every = 3000, 200
    path = make_lqr_spec(agent={"n_timesteps": total}, anchors=[0.1, 10.0], held_out=[1.0])
    spec, runs = load_task(path), tmp_path / "runs"
    command = [sys.executable, "-m", "hti_rl.cli", "train-anchors", str(path), "--run-root", str(runs),
               "--checkpoint-every", str(every), "--no-check"]
    latest = [RunDir.of(spec, runs).anchor(w) / "checkpoints" / "latest.json" for w in spec.anchors]
    meta = [RunDir.of(spec, runs).anchor(w) / "meta.json" for w in spec.anchors]

    def steps(i: int) -> int:
        try:
            return json.loads(latest[i].read_text())["steps"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return 0

    # kill points: early in anchor 0, later in anchor 0 (after resuming it), inside anchor 1
    points = [lambda: steps(0) >= 2 * every, lambda: steps(0) >= killed[0] + 2 * every, lambda: steps(1) >= every]
    rng, killed, resumed_from = random.Random(1), [], {}
    for point in points:
        child = subprocess.Popen(command, env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for(lambda: point() or child.poll() is not None, timeout=120)
            time.sleep(rng.uniform(0.0, 0.15))  # a random moment: maybe mid-checkpoint
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
        killed.append(steps(0))
        for i in range(2):
            if not meta[i].exists() and steps(i):
                resumed_from[i] = steps(i)  # where the next run must resume this anchor

    assert 0 < killed[0] < killed[1] < total and not meta[1].exists()
    done = subprocess.run(command, env=CHILD_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for i, weight in enumerate(spec.anchors):
        info = json.loads(meta[i].read_text())
        assert info["steps"] >= total and info["resumed_from"] == resumed_from.get(i), (i, info, resumed_from)
        assert not (RunDir.of(spec, runs).anchor(weight) / "checkpoints").exists()
        assert np.isfinite(load_anchor_actor(spec, weight, runs).predict(np.ones(1, dtype=np.float32))[0]).all()


# ------------------------------------------------------------------ loading never runs file code
class _Payload:
    """Unpickling this creates the file ``marker``: proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_in_dataset_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "dataset.npz"
    data = _small_dataset(0)
    arrays = {**data.arrays, "obs": np.array([_Payload(marker)], dtype=object)}
    np.savez(path, header=np.array(json.dumps({**data.header, "checksum": "x"})), **arrays)
    with pytest.raises(FileFormatError, match="pickled .*never loaded"):
        PolicyDataset.load(path)
    assert not marker.exists()
    np.save(tmp_path / "single.npy", np.array([_Payload(marker)], dtype=object))  # an .npy, renamed .npz
    (tmp_path / "single.npy").rename(path)
    with pytest.raises(FileFormatError):
        PolicyDataset.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["whole payload", "actor state", "clot state"])
def test_pickled_object_in_surrogate_is_refused(tiny, tmp_path, where):
    spec, runs = tiny
    marker, path = tmp_path / "ran", tmp_path / "surrogate.zip"
    _, blob = read_policy_file(RunDir.of(spec, runs).surrogate)
    state = torch.load(io.BytesIO(blob), weights_only=True)
    if where == "whole payload":
        state = _Payload(marker)
    elif where == "actor state":
        state["actors"][1]["arch"] = _Payload(marker)
    else:
        state["method"]["clot"]["config"] = _Payload(marker)
    buf = io.BytesIO()
    torch.save(state, buf)
    _rewrite_policy(RunDir.of(spec, runs).surrogate, path, payload=buf.getvalue())  # a valid checksum: only the loader stands in the way
    with pytest.raises(FileFormatError, match="refused without running it"):
        SurrogatePolicy.load(path)
    assert not marker.exists()


def test_pickled_object_in_clot_model_file_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "clot.pt"
    torch.save({"format": "x", "weights": _Payload(marker)}, path)
    with pytest.raises(FileFormatError, match="cannot read a CLOTModel"):
        CLOTModel.load(path)
    assert not marker.exists()


def test_pickled_object_in_anchor_model_zip_is_refused(tiny_copy):
    import base64
    import pickle

    spec, runs = tiny_copy
    marker, model = runs / "ran", RunDir.of(spec, runs).anchor(0.1) / "model.zip"
    with zipfile.ZipFile(model) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(members["data"])
    data["note"] = {":type:": "<class 'object'>", ":serialized:": base64.b64encode(pickle.dumps(_Payload(marker))).decode()}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(model, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    try:
        load_anchor_actor(spec, 0.1, runs)
    except HTIError:
        pass
    assert not marker.exists(), "loading the anchor ran code from its model.zip"


# -------------------------------------------------------------------------------- determinism
def test_same_seed_same_surrogate_actions(tiny, tmp_path):
    spec, runs = tiny
    again_spec, again_runs = build_tiny_surrogate(tmp_path / "again")  # recorded and fitted from scratch
    assert RunDir.of(spec, runs).dataset.read_bytes() == RunDir.of(again_spec, again_runs).dataset.read_bytes()
    first, second = (SurrogatePolicy.load(RunDir.of(s, r).surrogate) for s, r in ((spec, runs), (again_spec, again_runs)))
    other = build_tiny_surrogate(tmp_path / "other", seed=1)
    third = SurrogatePolicy.load(RunDir.of(*other).surrogate)
    obs = np.random.default_rng(0).uniform(-3, 3, size=(32, 2)).astype(np.float32)
    for weight in (0.3, 3.0):
        for policy in (first, second, third):
            policy.set_weight(weight)
        for deterministic in (True, False, False):  # two stochastic draws: the generators advance alike
            a = first.predict(obs, deterministic=deterministic)[0]
            np.testing.assert_array_equal(a, second.predict(obs, deterministic=deterministic)[0])
            third.predict(obs, deterministic=deterministic)
    assert not np.array_equal(first.predict(obs, deterministic=True)[0], third.predict(obs, deterministic=True)[0])


# ------------------------------------------------------------------- read-only directory, full disk
@pytest.fixture
def read_only(monkeypatch):
    """``read_only(directory)``: make ``directory`` unwritable. chmod does it for a normal user; root
    passes chmod, so then ``os.open``/``os.mkdir`` refuse creation under it as the kernel would."""
    made = []

    def deny(directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o555)
        made.append(directory)
        if os.geteuid() == 0:
            real_open, real_mkdir = os.open, os.mkdir

            def inside(p) -> bool:
                return Path(os.path.abspath(os.fsdecode(p))).is_relative_to(directory)

            def fake_open(p, flags, mode=0o777, *, dir_fd=None):
                if flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR) and inside(p):
                    raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(p))
                return real_open(p, flags, mode, dir_fd=dir_fd)

            def fake_mkdir(p, mode=0o777, *, dir_fd=None):
                if inside(p):
                    raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(p))
                return real_mkdir(p, mode, dir_fd=dir_fd)

            monkeypatch.setattr(os, "open", fake_open)
            monkeypatch.setattr(os, "mkdir", fake_mkdir)
        return directory

    yield deny
    for directory in made:
        directory.chmod(0o755)


def test_unwritable_directory_save(read_only, tmp_path):
    directory = read_only(tmp_path / "locked")
    with pytest.raises(HTIError, match=f"cannot write {re.escape(str(directory))}/sub/d.npz: no write permission on {re.escape(str(directory))} .*--run-root"):
        _small_dataset(0).save(directory / "sub" / "d.npz")


@pytest.mark.parametrize("command", ["train-anchors", "record"])
def test_unwritable_run_root_cli(read_only, tmp_path, capsys, command):
    path = write_lqr_spec(tmp_path)
    runs = read_only(tmp_path / "runs")
    assert main([command, str(path), "--run-root", str(runs)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: cannot write") and f"no write permission on {runs}" in err and "Traceback" not in err


class _FullDisk(io.FileIO):
    """A file on a disk that has ``room`` bytes left."""

    room = 2000

    def write(self, b) -> int:
        if self.tell() + len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(b)


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic_write from now on lands on a disk with 2 kB left."""
    real = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        if "w" not in mode:
            return real(fd, mode, *args, **kwargs)
        buffered = io.BufferedWriter(_FullDisk(fd, "w"))
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding="utf-8")

    monkeypatch.setattr("hti_rl.io.os.fdopen", fdopen)


@pytest.mark.parametrize("artefact", ["dataset", "surrogate", "clot model", "report"])
def test_disk_full_keeps_previous_file(tiny_copy, full_disk, artefact):
    spec, runs = tiny_copy
    policy = SurrogatePolicy.load(RunDir.of(spec, runs).surrogate)
    target = {"dataset": RunDir.of(spec, runs).dataset, "surrogate": RunDir.of(spec, runs).surrogate,
              "clot model": runs / "clot.pt", "report": runs / "report.json"}[artefact]
    if artefact == "clot model":
        torch.save(policy.clot.state(), target)
    elif artefact == "report":
        target.write_text(json.dumps({"rows": []}))
    before = target.read_bytes()
    write = {
        "dataset": lambda: PolicyDataset.load(target).save(target),
        "surrogate": lambda: policy.save(target),
        "clot model": lambda: policy.clot.save(target),
        "report": lambda: write_json(target, {"rows": list(range(5000))}),
    }[artefact]
    with pytest.raises(HTIError, match=f"disk full while writing {re.escape(str(target))}.*previous version .* is intact"):
        write()
    assert target.read_bytes() == before and not _temp_files(target.parent)


def test_disk_full_cli_message(tiny_copy, full_disk, capsys):
    spec, runs = tiny_copy
    before = RunDir.of(spec, runs).dataset.read_bytes()
    assert main(["record", str(spec.path), "--run-root", str(runs), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: disk full while writing") and "Traceback" not in err
    assert RunDir.of(spec, runs).dataset.read_bytes() == before
    PolicyDataset.load(RunDir.of(spec, runs).dataset, spec=spec)
