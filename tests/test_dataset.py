"""PolicyDataset: save/load round trip, every kind of corruption refused, recording reproducible."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from hti_rl.dataset import (
    ARRAYS,
    FORMAT,
    FORMAT_VERSION,
    PolicyDataset,
    checksum,
    record,
)
from hti_rl.errors import FileFormatError, ObservationError
from hti_rl.runs import RunDir


def _synthetic(k: int = 3, n: int = 50, m: int = 4, d: int = 2, c: int = 3, fingerprint: str = "abc") -> PolicyDataset:
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(k, n, d)).astype(np.float32)
    log_std = rng.normal(-1, 0.1, size=(k, n, d)).astype(np.float32)
    return PolicyDataset(
        obs=rng.normal(size=(n, c)).astype(np.float32),
        weights=np.linspace(0.1, 1.0, k),
        mean=mean,
        log_std=log_std,
        samples=(mean[:, :, None] + np.exp(log_std)[:, :, None] * rng.normal(size=(k, n, m, d))).astype(np.float32),
        header={"format": FORMAT, "format_version": FORMAT_VERSION, "task": "toy", "task_fingerprint": fingerprint},
    )


def _resave(path, edit) -> None:
    """Rewrite ``path`` after ``edit(arrays, header)``, with a freshly computed checksum."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "header"}
        header = json.loads(str(z["header"]))
    edit(arrays, header)
    if set(ARRAYS) <= set(arrays):
        header["checksum"] = checksum(arrays)
    np.savez(path, header=np.array(json.dumps(header)), **arrays)


class _Spec:
    path = "envs/toy.yaml"

    def __init__(self, fingerprint: str):
        self._fingerprint = fingerprint

    def fingerprint(self) -> str:
        return self._fingerprint


def test_round_trip(tmp_path):
    data = _synthetic()
    data.save(tmp_path / "d.npz")
    loaded = PolicyDataset.load(tmp_path / "d.npz", spec=_Spec("abc"))
    for name, array in data.arrays.items():
        np.testing.assert_array_equal(getattr(loaded, name), array)
        assert getattr(loaded, name).dtype == array.dtype
    assert loaded.header["task"] == "toy" and loaded.header["checksum"] == checksum(data.arrays)


def test_truncated_file_refused(tmp_path):
    path = tmp_path / "d.npz"
    _synthetic().save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FileFormatError, match="truncated or corrupt.*hti-rl record"):
        PolicyDataset.load(path)


def test_flipped_byte_refused(tmp_path):
    path = tmp_path / "d.npz"
    _synthetic().save(path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("samples.npy")
    raw[info.header_offset + 200 + info.file_size // 2] ^= 0xFF  # inside the samples array's data
    path.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match=str(path)):
        PolicyDataset.load(path)


def test_edited_array_fails_checksum(tmp_path):
    path = tmp_path / "d.npz"
    _synthetic().save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["mean"][0, 0, 0] += 1.0
    np.savez(path, **arrays)  # a valid zip whose header checksum no longer matches
    with pytest.raises(FileFormatError, match="checksum"):
        PolicyDataset.load(path)


def test_nan_refused_even_with_fresh_checksum(tmp_path):
    path = tmp_path / "d.npz"
    _synthetic().save(path)
    _resave(path, lambda arrays, header: arrays["samples"].__setitem__((1, 2, 0, 1), np.nan))
    with pytest.raises(FileFormatError, match="'samples' contains NaN"):
        PolicyDataset.load(path)


def test_wrong_task_refused(tmp_path):
    path = tmp_path / "d.npz"
    _synthetic(fingerprint="abc").save(path)
    with pytest.raises(FileFormatError, match="another spec.*hti-rl record envs/toy.yaml --force"):
        PolicyDataset.load(path, spec=_Spec("xyz"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a, h: a.__setitem__("mean", a["mean"][:, :-1]), "'mean' has shape"),
        (lambda a, h: a.__setitem__("obs", a["obs"].astype(np.float64)), "'obs' is float64"),
        (lambda a, h: a.pop("log_std"), r"missing arrays \['log_std'\]"),
        (lambda a, h: h.__setitem__("format_version", 99), "format version 99"),
        (lambda a, h: h.__setitem__("format", "other"), "not an hti-rl dataset"),
    ],
)
def test_inconsistent_file_refused(tmp_path, edit, message):
    path = tmp_path / "d.npz"
    _synthetic().save(path)
    _resave(path, edit)
    with pytest.raises(FileFormatError, match=message):
        PolicyDataset.load(path)


def test_missing_file_refused(tmp_path):
    with pytest.raises(FileFormatError, match="does not exist"):
        PolicyDataset.load(tmp_path / "none.npz")


# ----------------------------------------------------------------------------- recording
def test_record_shapes_and_round_trip(lqr_run):
    spec, runs = lqr_run
    data = record(spec, run_root=runs, progress=False)
    k, n, m, d = data.samples.shape
    assert (k, m, d) == (3, spec.record.samples, 1) and 0 < n <= spec.record.max_states
    assert data.obs.shape == (n, 1) and data.header["states_visited"] >= n
    assert data.header["actor_kinds"] == ["gaussian"] * 3 and data.header["action_low"] == [-5.0]
    np.testing.assert_array_equal(data.weights, spec.anchors)
    loaded = PolicyDataset.load(RunDir.of(spec, runs).dataset, spec=spec)
    for name, array in data.arrays.items():
        np.testing.assert_array_equal(getattr(loaded, name), array)
    # the LQR gain falls with the weight, so the mean action at x > 0 rises (towards 0) with it
    positive = data.obs[:, 0] > 0.5
    mean_action = data.mean[:, positive, 0].mean(axis=1)
    assert mean_action[0] < mean_action[1] < mean_action[2]


def test_same_seed_same_dataset(lqr_run):
    spec, runs = lqr_run
    first = record(spec, run_root=runs, seed=3, progress=False)
    second = record(spec, run_root=runs, seed=3, progress=False)
    other = record(spec, run_root=runs, seed=4, progress=False)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert checksum(first.arrays) == checksum(second.arrays) != checksum(other.arrays)


def test_non_box_action_space_refused(make_lqr_spec, tmp_path):
    from hti_rl.errors import SpecError
    from hti_rl.spec.load import load_task

    path = make_lqr_spec(env_id="CartPole-v1", reward={"components": {"up": {"function": "hti_rl.components:pendulum_angle"}}, "weighted": "up"})
    with pytest.raises(SpecError, match=r"field `env_id` is 'CartPole-v1', whose action space is Discrete\(2\); hti-rl needs a Box"):
        load_task(path)  # at the boundary, before any anchor trains


def test_non_finite_observation_refused(lqr_run, monkeypatch):
    import gymnasium as gym

    from hti_rl.spec.task import TaskSpec

    spec, runs = lqr_run
    make_env = TaskSpec.make_env

    def nan_env(self, weight, seed=None):
        env = make_env(self, weight, seed=seed)
        return gym.wrappers.TransformObservation(env, lambda o: o * np.nan, env.observation_space)

    monkeypatch.setattr(TaskSpec, "make_env", nan_env)
    with pytest.raises(ObservationError, match="non-finite observation.*anchor w=0.1"):
        record(spec, run_root=runs, progress=False)
