"""Fuzz suite (issue 18, point 10): generated specs, surrogate headers, meta files and pickles.

Every example asserts three things: the call returns normally or raises an :class:`~hti_rl.errors.HTIError`
(any other exception fails), no file appears outside the example's run root (a sibling ``canary/`` folder
and the parent folder are snapshotted before and after; the working directory is the example's folder, so a
relative write is seen too), and memory stays bounded (the peak RSS of the process grows by under 500 MB over
a test). A crafted pickle's side effect (``os.system('touch canary/pwned')`` and the like) must not happen.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import resource
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_LQR, TINY_PPO
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_reliability import build_tiny_surrogate

from hti_rl.errors import HTIError
from hti_rl.runs import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

FUZZ = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
MEMORY_LIMIT_MB = 500

# ------------------------------------------------------------------ generated values
_STRINGS = st.one_of(
    st.sampled_from(["..", ".", "../x", "../../etc", "/", "/etc/passwd", "a/b", "", " ", "os:system", "builtins:eval",
                     "dict(net_arch=[-5])", "dict(net_arch=[30000, 30000])", "nan", "inf", "1e400", "\x00", "w=1", "log", "linear",
                     "ppo", "hti_rl/LQR1D-v0", "reward_state", "*", "{}", "[]"]),
    st.text(max_size=10),
)
_SCALARS = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70), st.integers(0, 20), st.floats(0.01, 100.0),  # plausible ones reach deeper checks
    st.sampled_from([10**400, -(10**400), 2**63, 2**63 - 1, -1, 0, 1, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True),
    _STRINGS,
)
VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_STRINGS, inner, max_size=3), max_leaves=8)


def _paths(value: Any, prefix: tuple = (), depth: int = 3) -> list[tuple]:
    """Every key path into nested dicts and (the first few entries of) lists of ``value``."""
    out: list[tuple] = []
    if depth == 0:
        return out
    items = value.items() if isinstance(value, dict) else enumerate(value[:4]) if isinstance(value, list) else ()
    for key, child in items:
        out.append(prefix + (key,))
        out.extend(_paths(child, prefix + (key,), depth - 1))
    return out


def _mutate(base: Any, data: st.DataObject, extra_keys: tuple = ("unknown", "env_kwargs", "seed")) -> Any:
    """A deep copy of ``base`` with 1-3 entries deleted, replaced by generated values, or added."""
    doc = json.loads(json.dumps(base))
    for _ in range(data.draw(st.sampled_from([1, 1, 1, 2, 3]), label="mutations")):
        paths = _paths(doc) + [(k,) for k in extra_keys]
        path = data.draw(st.sampled_from(paths), label="path")
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(parent, (dict, list)) or (isinstance(parent, list) and path[-1] >= len(parent)):
            continue
        if data.draw(st.booleans(), label="delete") and (isinstance(parent, dict) and path[-1] in parent):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(VALUES, label="value")
    return doc


# ------------------------------------------------------------------ the three checks
def _tree(root: Path, skip: Path) -> set[str]:
    """Relative paths of everything under ``root``, ``skip``'s subtree left out."""
    found = set()
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        if here == skip or skip in here.parents:
            dirs[:] = []
            continue
        found.update(str((here / n).relative_to(root)) for n in dirs + files if here / n != skip)
    return found


class Sandbox:
    """``base/case/{canary/, work/, work/runs/}``: an example works in ``work`` with run root ``work/runs``;
    nothing may appear in ``base`` or ``case`` outside the run root."""

    def __init__(self, base: Path):
        self.base = base
        self.case = Path(tempfile.mkdtemp(prefix="case", dir=base))
        self.canary = self.case / "canary"
        self.work = self.case / "work"
        self.runs = self.work / "runs"
        for d in (self.canary, self.runs):
            d.mkdir(parents=True)

    @contextlib.contextmanager
    def guard(self) -> Iterator["Sandbox"]:
        before = _tree(self.base, self.runs)
        cwd = os.getcwd()
        os.chdir(self.work)
        try:
            yield self
        finally:
            os.chdir(cwd)
        after = _tree(self.base, self.runs)
        assert after <= before, f"written outside the run root: {sorted(after - before)}"
        assert not any(self.canary.iterdir()), f"a payload ran: {list(self.canary.iterdir())}"

    def close(self) -> None:
        shutil.rmtree(self.case, ignore_errors=True)


def _clean_or_hti(call: Callable[[], Any], label: str = "call") -> Any:
    """``call()``'s result, or None when it raised an HTIError; any other exception fails the test."""
    try:
        result = call()
    except HTIError as exc:
        event(f"{label}: {type(exc).__name__}")
        return None
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"{type(exc).__name__} (not an HTIError): {str(exc)[:500]}")
    event(f"{label}: clean")
    return result


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def bounded_memory():
    """Peak RSS grows by under MEMORY_LIMIT_MB over the test."""
    before = _max_rss_mb()
    yield
    assert _max_rss_mb() - before < MEMORY_LIMIT_MB, f"peak RSS grew by {_max_rss_mb() - before:.0f} MB"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(spec, run root) of a fitted 2-D LQR surrogate with exact-gain anchors, built once."""
    torch.set_num_threads(1)
    return build_tiny_surrogate(tmp_path_factory.mktemp("tiny_fuzz"))


# ------------------------------------------------------------------ specs
def _write_spec(directory: Path, spec: Any, agent: Any) -> Path:
    (directory / "envs").mkdir(exist_ok=True)
    (directory / "agents").mkdir(exist_ok=True)
    (directory / "agents" / "ppo.yml").write_text(yaml.safe_dump({"lqr1d": agent}))
    path = directory / "envs" / "lqr1d.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _load_and_record(box: Sandbox, path: Path) -> None:
    from hti_rl.cli import main
    from hti_rl.spec.load import load_task

    if _clean_or_hti(lambda: load_task(path), "load_task") is not None:  # a spec that loads: the first stage that writes
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = _clean_or_hti(lambda: main(["record", str(path), "--run-root", str(box.runs)]), "record")
        assert code in (0, 2, None)


@FUZZ
@given(data=st.data())
def test_fuzzed_spec_gives_an_error_or_a_task(base, bounded_memory, data):
    """The tiny LQR spec (and its PPO entry) with fields deleted or replaced by values of any type."""
    spec = _mutate(TINY_LQR, data, ("unknown", "env_kwargs", "seed", "name", "hyperparams_file", "eval_seeds", "shared_start"))
    agent = _mutate(TINY_PPO, data, ("normalize", "policy_kwargs", "n_envs")) if data.draw(st.booleans(), label="agent") else TINY_PPO
    box = Sandbox(base)
    try:
        path = _write_spec(box.work, spec, agent)
        with box.guard():
            _load_and_record(box, path)
    finally:
        box.close()


@FUZZ
@given(content=st.one_of(st.binary(max_size=300), st.text(max_size=200).map(str.encode),
                         VALUES.map(lambda v: yaml.safe_dump(v).encode())))
def test_fuzzed_spec_file_bytes_give_an_error(base, bounded_memory, content):
    """Random bytes, text or YAML documents of any shape as the spec file."""
    box = Sandbox(base)
    try:
        path = _write_spec(box.work, TINY_LQR, TINY_PPO)
        path.write_bytes(content)
        with box.guard():
            _load_and_record(box, path)
    finally:
        box.close()


# ------------------------------------------------------------------ surrogate headers
@FUZZ
@given(data=st.data())
def test_fuzzed_surrogate_header_gives_an_error_or_a_policy(tiny, base, bounded_memory, data):
    """A real surrogate's header.json with entries deleted or replaced, its checksum recomputed
    (write_policy_file), so the field checks are reached; what loads must also act."""
    from hti_rl.methods.policy_file import read_policy_file, write_policy_file
    from hti_rl.methods.surrogate import SurrogatePolicy

    spec, runs = tiny
    header, blob = read_policy_file(RunDir.of(spec, runs).surrogate)
    header = _mutate({k: v for k, v in header.items() if k != "checksum"}, data, ("unknown", "format", "format_version"))
    box = Sandbox(base)
    try:
        with box.guard():
            path = box.runs / "surrogate.zip"
            write_policy_file(path, header, blob)
            _clean_or_hti(lambda: read_policy_file(path), "read_policy_file")
            policy = _clean_or_hti(lambda: SurrogatePolicy.load(path), "load")
            if policy is not None:
                weight = data.draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.1, 1.0, 3.0, 10.0])), label="weight")
                _clean_or_hti(lambda: policy.set_weight(weight), "set_weight")
                obs = np.zeros(policy.observation_space.shape, dtype=np.float32)
                _clean_or_hti(lambda: policy.predict(obs, deterministic=True), "predict")
    finally:
        box.close()


# ------------------------------------------------------------------ meta files
@pytest.fixture(scope="module")
def tiny_meta(tiny):
    spec, runs = tiny
    return json.loads((RunDir.of(spec, runs).anchor(1.0) / "meta.json").read_text())


def _json_content(data: st.DataObject, real: dict) -> bytes:
    kind = data.draw(st.sampled_from(["mutated", "random", "bytes"]), label="kind")
    if kind == "mutated":
        return json.dumps(_mutate(real, data, ("imported", "weight", "task_fingerprint", "shared_start"))).encode()
    if kind == "random":
        return json.dumps(data.draw(VALUES, label="json")).encode()
    return data.draw(st.binary(max_size=200), label="bytes")


@FUZZ
@given(data=st.data())
def test_fuzzed_anchor_meta_json_gives_an_error_or_an_actor(tiny, tiny_meta, base, bounded_memory, data):
    """An anchor's meta.json: the real one mutated, random JSON, or random bytes; then load_anchor_actor."""
    from hti_rl.training.store import load_anchor_actor

    spec, runs = tiny
    content = _json_content(data, tiny_meta)
    box = Sandbox(base)
    try:
        shutil.copytree(runs, box.runs, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".lock", "tb"))
        with box.guard():
            (RunDir.of(spec, box.runs).anchor(1.0) / "meta.json").write_bytes(content)
            _clean_or_hti(lambda: load_anchor_actor(spec, 1.0, box.runs), "load_anchor_actor")
    finally:
        box.close()


LATEST = {"steps": 100, "model": "model_100.zip", "vecnormalize": None, "wall_time_s": 1.0, "task_fingerprint": "x"}


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoint_latest_json_gives_an_error_or_steps(base, bounded_memory, data):
    """A checkpoint's latest.json: a valid record mutated, random JSON, or random bytes; then checkpoint_steps."""
    from conftest import write_lqr_spec

    from hti_rl.spec.load import load_task
    from hti_rl.training.jobs import AnchorJob, checkpoint_steps

    box = Sandbox(base)
    try:
        spec = load_task(write_lqr_spec(box.work))
        latest = {**LATEST, "task_fingerprint": spec.fingerprint()}
        content = _json_content(data, latest)
        with box.guard():
            job = AnchorJob(spec=spec, index=0, run_root=str(box.runs), checkpoint_every=100)
            (job.directory / "checkpoints").mkdir(parents=True)
            (job.directory / "checkpoints" / "latest.json").write_bytes(content)
            steps = _clean_or_hti(lambda: checkpoint_steps(job), "checkpoint_steps")
            assert steps is None or (isinstance(steps, int) and 0 <= steps < 2**63)
    finally:
        box.close()


# ------------------------------------------------------------------ pickles
class _Call:
    """Pickles as ``fn(*args)``: a REDUCE payload."""

    def __init__(self, fn: Any, *args: Any):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _payloads(canary: Path) -> list[bytes]:
    """Crafted pickles whose side effect would create a file in ``canary`` or allocate gigabytes."""
    import builtins
    import subprocess

    touch = f"touch {canary / 'pwned'}"
    calls = [
        _Call(os.system, touch),
        _Call(builtins.eval, f"open({str(canary / 'pwned')!r}, 'w')"),
        _Call(builtins.exec, f"open({str(canary / 'pwned')!r}, 'w')"),
        _Call(builtins.open, str(canary / "pwned"), "w"),
        _Call(subprocess.Popen, ["touch", str(canary / "pwned")]),
        _Call(shutil.copy, __file__, str(canary / "pwned")),
    ]
    out = []
    for call in calls:
        for protocol in (2, 4, 5):
            out.append(pickle.dumps(call, protocol=protocol))
            out.append(pickle.dumps({"obs_rms": call, "norm_obs": True}, protocol=protocol))
    cmd = touch.encode()
    out += [
        b"cos\nsystem\n(S'" + cmd + b"'\ntR.",  # protocol 0 GLOBAL os system + REDUCE
        b"cposix\nsystem\n(S'" + cmd + b"'\ntR.",
        b"cbuiltins\neval\n(S'__import__(\"os\").system(\"" + cmd + b"\")'\ntR.",
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c" + bytes([len(cmd)]) + cmd + b"\x94\x85\x94R\x94.",
        b"cstable_baselines3.common.vec_env.vec_normalize\nVecNormalize\n)\x81}(S'obs_rms'\ncos\nsystem\n(S'" + cmd + b"'\ntRub.",
        # allocation bombs (issue 18, point 7)
        b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x18\x0d\x8f\x00\x85R.",
        b"\x80\x03cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85C\x01d\x87R.",
        b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85R.",
        b"\x80\x02cbuiltins\nbytes\n\x8a\x05\x00\x18\x0d\x8f\x00\x85R.",
        b"\x80\x02cnumpy\nzeros\n\x8a\x05\x00\x18\x0d\x8f\x00\x85R.",
        b"\x80\x02cbuiltins\nrange\n\x8a\x05\x00\x18\x0d\x8f\x00\x85R.",
    ]
    return out


def _lqr_env():
    from hti_rl.envs.lqr import LQREnv

    return LQREnv(A=[[1.0]], B=[[1.0]])


def _real_vecnormalize(path: Path) -> None:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([_lqr_env]))
    venv.reset()
    for _ in range(5):
        venv.step(np.zeros((1, *venv.action_space.shape), dtype=np.float32))
    venv.save(str(path))


@pytest.fixture(scope="module")
def real_pickle(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("vecnorm") / "vecnormalize.pkl"
    _real_vecnormalize(path)
    return path.read_bytes()


_PICKLABLE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=8), st.binary(max_size=8)),
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=3).map(tuple) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    | st.builds(lambda d: {"obs_rms": d, "ret_rms": d, "norm_obs": True, "norm_reward": False}, inner),
    max_leaves=10,
)


def _read_both(path: Path) -> None:
    """read_vecnormalize, and (when that reads) load_vecnormalize onto a real env."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from hti_rl.sb3io.safe_pickle import load_vecnormalize, read_vecnormalize

    if _clean_or_hti(lambda: read_vecnormalize(path), "read_vecnormalize") is not None:
        _clean_or_hti(lambda: load_vecnormalize(path, DummyVecEnv([_lqr_env])), "load_vecnormalize")


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_fuzzed_vecnormalize_pickle_runs_nothing(real_pickle, base, bounded_memory, data):
    """vecnormalize.pkl: hypothesis-built objects pickled with protocols 2-5, a real VecNormalize pickle
    with bytes flipped or cut, and crafted REDUCE payloads (os.system, builtins.eval, ... and allocation bombs)."""
    box = Sandbox(base)
    try:
        kind = data.draw(st.sampled_from(["object", "flipped", "crafted"]), label="kind")
        if kind == "object":
            content = pickle.dumps(data.draw(_PICKLABLE, label="object"), protocol=data.draw(st.integers(2, 5), label="protocol"))
        elif kind == "flipped":
            content = bytearray(real_pickle)
            for _ in range(data.draw(st.integers(1, 4), label="flips")):
                content[data.draw(st.integers(0, len(content) - 1), label="at")] = data.draw(st.integers(0, 255), label="byte")
            content = bytes(content[: data.draw(st.integers(1, len(content)), label="cut")])
        else:
            content = data.draw(st.sampled_from(_payloads(box.canary)), label="payload")
        with box.guard():
            path = box.runs / "vecnormalize.pkl"
            path.write_bytes(content)
            _read_both(path)
    finally:
        box.close()


def test_every_crafted_pickle_payload_is_refused(base, bounded_memory):
    """Each crafted payload (not only those hypothesis drew) raises an HTIError and has no side effect."""
    from hti_rl.sb3io.safe_pickle import read_vecnormalize

    box = Sandbox(base)
    try:
        with box.guard():
            for content in _payloads(box.canary):
                path = box.runs / "vecnormalize.pkl"
                path.write_bytes(content)
                with pytest.raises(HTIError):
                    read_vecnormalize(path)
    finally:
        box.close()


def test_real_vecnormalize_pickle_reads_cleanly(real_pickle, tmp_path):
    """The control: an unmodified VecNormalize.save file reads (the fuzzed ones start from it)."""
    from hti_rl.sb3io.safe_pickle import read_vecnormalize

    (tmp_path / "vecnormalize.pkl").write_bytes(real_pickle)
    assert read_vecnormalize(tmp_path / "vecnormalize.pkl") is not None


# ------------------------------------------------------------------ what the fuzzing found (each failed before its fix)
@pytest.mark.parametrize("field, value, message", [
    ("algo", [], r"names the algorithm \[\], not one of"),
    ("algo", "nope", r"names the algorithm 'nope', not one of"),
    ("imported", [None], r"field `imported` is \[None\], not an object or null"),
    ("shared_start", 1, r"field `shared_start` is 1, not an object or null"),
    ("shared_start", {"role": "finetune"}, r"a fine-tuned anchor whose `shared_start` names no base_sha256"),
])
def test_meta_json_fields_of_the_wrong_type_are_anchor_errors(tiny, tiny_meta, tmp_path, field, value, message):
    """Found by test_fuzzed_anchor_meta_json_gives_an_error_or_an_actor: these gave TypeError, KeyError, AttributeError."""
    from hti_rl.errors import AnchorError
    from hti_rl.training.store import load_anchor_actor

    spec, runs = tiny
    shutil.copytree(runs, tmp_path / "runs", ignore=shutil.ignore_patterns(".lock", "tb"))
    (RunDir.of(spec, tmp_path / "runs").anchor(1.0) / "meta.json").write_text(json.dumps({**tiny_meta, field: value}))
    with pytest.raises(AnchorError, match=message):
        load_anchor_actor(spec, 1.0, tmp_path / "runs")


def test_import_over_a_meta_json_that_is_not_an_object(tiny, tmp_path, capsys):
    """import-anchors read the old meta.json with .get(): a list there gave AttributeError; now it counts as absent."""
    from hti_rl.cli import main

    spec, runs = tiny
    shutil.copytree(runs, tmp_path / "runs", ignore=shutil.ignore_patterns(".lock", "tb"))
    directory = RunDir.of(spec, tmp_path / "runs").anchor(1.0)
    shutil.copy(directory / "model.zip", tmp_path / "model.zip")
    (directory / "meta.json").write_text("[1]")
    code = main(["import-anchors", str(spec.path), "--run-root", str(tmp_path / "runs"), "--anchor", f"1={tmp_path / 'model.zip'}"])
    assert code in (0, 2) and "Traceback" not in capsys.readouterr().err
