"""Property-based tests (hypothesis): SurrogatePolicy.set_weight/predict and PolicyDataset.load over
random valid and invalid input. Valid input gives actions inside the action space (or the dataset
back, unchanged); invalid input gives our errors (HTIError subclasses), never a crash from inside a
library."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_lqr_anchor, write_lqr_spec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from hti_rl.dataset import (
    ARRAYS,
    FORMAT,
    FORMAT_VERSION,
    PolicyDataset,
    checksum,
    record,
)
from hti_rl.errors import FileFormatError, ObservationError, WeightError
from hti_rl.methods.surrogate import SurrogatePolicy, clot_config, fit
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LOW, HIGH = 0.1, 10.0  # the anchors' range
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> SurrogatePolicy:
    """A SurrogatePolicy on the 2-D LQR task (exact-gain anchors 0.1, 1, 10; a short fit), loaded from its file."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("properties")
    path = write_lqr_spec(root, name="lqr2d", env_id="hti_rl/LQR2D-v0", anchors=[LOW, 1.0, HIGH], held_out=[0.3],
                          record={"episodes": 1, "samples": 4, "max_states": 60})
    spec, runs = load_task(path), root / "runs"
    for w in spec.anchors:
        save_lqr_anchor(spec, w, runs)
    record(spec, runs, progress=False)
    fit(spec, runs, clot_config({"steps": 10}, seed=0), progress=False)
    return SurrogatePolicy.load(RunDir.of(spec, runs).surrogate)


# ----------------------------------------------------------------------------------- strategies
BATCH_SHAPES = st.sampled_from([(2,), (1, 2), (3, 2), (16, 2)])
MODERATE = st.floats(-1e4, 1e4, allow_nan=False, width=32)  # far beyond the recorded states (|x| ≤ 10)
VALID_OBS = st.one_of(
    arrays(st.sampled_from([np.float32, np.float64, np.float16]), BATCH_SHAPES, elements=st.floats(-1e4, 1e4, width=16)),
    arrays(st.sampled_from([np.float32, np.float64]), BATCH_SHAPES, elements=MODERATE),
    arrays(st.sampled_from([np.int8, np.int16, np.uint8, np.bool_]), BATCH_SHAPES),
    arrays(np.int64, BATCH_SHAPES, elements=st.integers(-10_000, 10_000)),
    st.lists(MODERATE, min_size=2, max_size=2),
    st.lists(st.lists(MODERATE, min_size=2, max_size=2), min_size=1, max_size=4),
)
WRONG_SHAPE = arrays(np.float32, array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4), elements=MODERATE).filter(
    lambda a: not (a.shape == (2,) or (a.ndim == 2 and a.shape[1] == 2 and a.shape[0] > 0))
)
NON_FINITE = arrays(st.sampled_from([np.float32, np.float64]), BATCH_SHAPES, elements=st.one_of(MODERATE, st.sampled_from([np.nan, np.inf, -np.inf]))).filter(
    lambda a: not np.all(np.isfinite(a))
)
BEYOND_FLOAT32 = arrays(np.float64, BATCH_SHAPES, elements=st.one_of(MODERATE, st.floats(1e39, 1e300), st.floats(-1e300, -1e39))).filter(
    lambda a: np.abs(a).max() > np.finfo(np.float32).max
)
WRONG_TYPE = st.one_of(
    arrays(st.sampled_from([np.complex64, np.dtype("U3"), np.dtype("datetime64[s]"), np.dtype("S2")]), BATCH_SHAPES),
    st.sampled_from([None, "obs", b"ab", {}, {"obs": [1.0, 2.0]}, [[1.0, 2.0], [3.0]], [1.0, "a"], object(), (1.0, None)]),
    st.lists(st.text(max_size=3), min_size=2, max_size=2),
)
INVALID_OBS = st.one_of(WRONG_SHAPE, NON_FINITE, BEYOND_FLOAT32, WRONG_TYPE)
ANY_WEIGHT = st.one_of(
    st.floats(),
    st.floats(LOW, HIGH),
    st.integers(),
    st.booleans(),
    st.text(max_size=6),
    st.sampled_from(["3", " 0.5 ", "nan", "-inf", "1e999", None, [1.0], (2.0,), {}, np.float32(2.0), np.array([1.0, 2.0]), 1 + 2j, 10**400, -(10**400)]),
)


def _in_range(weight) -> bool:
    """Whether ``weight`` is a valid weight: a real number (not a string or a bool) that is finite and in range."""
    if isinstance(weight, (str, bool, np.bool_)):
        return False
    try:
        value = float(weight)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(value) and LOW <= value <= HIGH


# ---------------------------------------------------------------------------- SurrogatePolicy
@SETTINGS
@given(obs=VALID_OBS, weight=st.floats(LOW, HIGH), deterministic=st.booleans())
def test_valid_observation_gives_action_in_space(policy, obs, weight, deterministic):
    policy.set_weight(weight)
    action, state = policy.predict(obs, deterministic=deterministic)
    shape = np.asarray(obs).shape
    assert state is None and action.dtype == np.float32 and action.shape == shape
    for row in action.reshape(-1, 2):
        assert policy.action_space.contains(row), (obs, weight, action)


@SETTINGS
@given(obs=INVALID_OBS, weight=st.floats(LOW, HIGH), deterministic=st.booleans())
def test_invalid_observation_gives_observation_error(policy, obs, weight, deterministic):
    policy.set_weight(weight)
    with pytest.raises(ObservationError):
        policy.predict(obs, deterministic=deterministic)


@SETTINGS
@given(weight=ANY_WEIGHT)
def test_any_weight_is_taken_or_refused_with_weight_error(policy, weight):
    policy.set_weight(1.0)
    if _in_range(weight):
        policy.set_weight(weight)
        assert policy.weight == float(weight)
        action, _ = policy.predict(np.ones(2, dtype=np.float32), deterministic=True)
        assert policy.action_space.contains(action)
    else:
        with pytest.raises(WeightError):
            policy.set_weight(weight)
        assert policy.weight == 1.0  # a refused weight leaves the policy as it was


# ---------------------------------------------------------------------------------- the dataset
@st.composite
def datasets(draw) -> PolicyDataset:
    k, n, m, d, c = draw(st.integers(2, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    finite = st.floats(-1e6, 1e6, width=32)
    weights = np.sort(np.asarray(draw(st.lists(st.floats(0.01, 100.0), min_size=k, max_size=k, unique=True))))
    return PolicyDataset(
        obs=draw(arrays(np.float32, (n, c), elements=finite)),
        weights=weights,
        mean=draw(arrays(np.float32, (k, n, d), elements=finite)),
        log_std=draw(arrays(np.float32, (k, n, d), elements=st.floats(-20, 2, width=32))),
        samples=draw(arrays(np.float32, (k, n, m, d), elements=finite)),
        header={"format": FORMAT, "format_version": FORMAT_VERSION, "task": "toy", "task_fingerprint": "abc"},
    )


def _assert_same(loaded: PolicyDataset, data: PolicyDataset) -> None:
    for name, array in data.arrays.items():
        np.testing.assert_array_equal(getattr(loaded, name), array)
        assert getattr(loaded, name).dtype == array.dtype


@SETTINGS
@given(data=datasets())
def test_valid_dataset_round_trips(data):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "d.npz"
        data.save(path)
        _assert_same(PolicyDataset.load(path), data)


@st.composite
def damages(draw, size: int) -> list[tuple[str, int, int]]:
    """Byte-level damage to a file of ``size`` bytes: flips, overwrites, a cut, appended bytes."""
    position = st.integers(0, size - 1)
    one = st.one_of(
        st.tuples(st.just("flip"), position, st.integers(1, 255)),
        st.tuples(st.just("set"), position, st.integers(0, 255)),
        st.tuples(st.just("cut"), position, st.just(0)),
        st.tuples(st.just("append"), st.integers(1, 64), st.integers(0, 255)),
    )
    return draw(st.lists(one, min_size=1, max_size=4))


def _damage(blob: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    raw = bytearray(blob)
    for kind, at, value in edits:
        if kind == "flip" and at < len(raw):
            raw[at] ^= value
        elif kind == "set" and at < len(raw):
            raw[at] = value
        elif kind == "cut":
            del raw[at:]
        elif kind == "append":
            raw += bytes([value]) * at
    return bytes(raw)


@SETTINGS
@given(data=datasets(), seed=st.integers(0, 2**32 - 1), edits=st.data())
def test_damaged_dataset_is_refused_or_unchanged(data, seed, edits):
    """A damaged file either fails with FileFormatError or still holds exactly the arrays written
    (damage to bytes that carry no data, such as a zip timestamp); it never loads different data."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "d.npz"
        data.save(path)
        blob = path.read_bytes()
        damaged = _damage(blob, edits.draw(damages(len(blob))))
        assume(damaged != blob)
        path.write_bytes(damaged)
        try:
            loaded = PolicyDataset.load(path)
        except FileFormatError:
            return
        _assert_same(loaded, data)


ARRAY_DTYPES = st.sampled_from([np.float32, np.float64, np.int32, np.bool_, np.float16, np.dtype("U2")])


@st.composite
def npz_contents(draw) -> dict[str, np.ndarray]:
    """Any small .npz a user might hand over: our array names or others, any dtype and rank, a header
    that is ours (with a fresh checksum), edited, or not JSON at all."""
    names = draw(st.sets(st.sampled_from([*ARRAYS, "extra"]), max_size=6))
    contents = {
        name: draw(arrays(ARRAY_DTYPES, array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3)))
        for name in names
    }
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": "toy"}
    if set(ARRAYS) <= set(contents):
        header["checksum"] = checksum(contents)
    kind = draw(st.sampled_from(["ours", "edited", "text", "array", "none"]))
    if kind == "ours":
        contents["header"] = np.array(json.dumps(header))
    elif kind == "edited":
        key = draw(st.sampled_from(["format", "format_version", "checksum", "task"]))
        value = draw(st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2)))
        contents["header"] = np.array(json.dumps({**header, key: value}))
    elif kind == "text":
        contents["header"] = np.array(draw(st.text(max_size=20)))
    elif kind == "array":
        contents["header"] = draw(arrays(ARRAY_DTYPES, array_shapes(min_dims=0, max_dims=2, max_side=3)))
    return contents


@SETTINGS
@given(contents=npz_contents())
def test_any_npz_is_refused_or_a_consistent_dataset(contents):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "d.npz"
        np.savez(path, **contents)
        try:
            data = PolicyDataset.load(path)
        except FileFormatError:
            return
    k, n, m, d = data.samples.shape  # what loads is a dataset the fit stage can trust
    assert data.obs.shape[0] == n and data.weights.shape == (k,) and data.mean.shape == data.log_std.shape == (k, n, d)
    assert k >= 2 and min(n, m, d) > 0
    assert all(getattr(data, name).dtype == dtype and np.all(np.isfinite(getattr(data, name))) for name, (dtype, _) in ARRAYS.items())
