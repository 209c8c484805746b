"""Reliability, round two (issue 18): what 200 bad inputs and faults broke, each with a test that fails without its fix.

Sections follow the issue's points: (3) the surrogate header under the checksum, (4) no code named by a data
file, (2) no file outside hti-rl's own, (6) anchor folders that cannot collide, (5) stale inputs, (8) errors
at the boundary, (7) bounded sizes, (1) Ctrl-C and a killed parent, (9) messages that name the real cause.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from test_reliability import build_tiny_surrogate

from hti_rl.cli import main
from hti_rl.errors import FileFormatError
from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.policy_file import FILE_VERSION, header_checksum, read_policy_file
from hti_rl.methods.surrogate import SurrogatePolicy
from hti_rl.runs import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(spec, run root) of a fitted 2-D LQR surrogate with exact-gain anchors, built once."""
    torch.set_num_threads(1)
    return build_tiny_surrogate(tmp_path_factory.mktemp("tiny2"))


@pytest.fixture
def tiny_copy(tiny, tmp_path):
    spec, runs = tiny
    shutil.copytree(runs, tmp_path / "runs", ignore=shutil.ignore_patterns(".lock", "tb"))
    return spec, tmp_path / "runs"


def rewrite(source: Path, target: Path, edit=None, checksum: bool = True, header_text: str | None = None) -> None:
    """Copy a surrogate file with its header edited; ``checksum`` recomputes the header's checksum
    (a crafted file, consistent with itself), else the edit is left uncovered (a tampered file)."""
    with zipfile.ZipFile(source) as zf:
        header, blob = json.loads(zf.read("header.json")), zf.read("payload.pt")
    if edit is not None:
        edit(header)
    if checksum:
        header["checksum"] = header_checksum(header, blob)
    with zipfile.ZipFile(target, "w") as zf:
        zf.writestr("header.json", header_text if header_text is not None else json.dumps(header))
        zf.writestr("payload.pt", blob)


# ------------------------------------------------------------------ (3) the header is covered and checked
@pytest.mark.parametrize("edit", [
    lambda h: h.update(weights=[0.1, 2.0, 10.0]),
    lambda h: h.update(weight_scale="linear"),
    lambda h: h["action_space"].update(high=[1.0, 1.0]),
    lambda h: h.update(seed=h["seed"] + 1),
])
def test_edited_header_gives_checksum_mismatch(tiny, tmp_path, edit):
    spec, runs = tiny
    path = tmp_path / "surrogate.zip"
    rewrite(RunDir.of(spec, runs).surrogate, path, edit, checksum=False)
    with pytest.raises(FileFormatError, match="checksum mismatch of its header or payload"):
        SurrogatePolicy.load(path)


@pytest.mark.parametrize("field, value, allowed", [
    ("weight_scale", "cubic", "one of linear, log"),
    ("weights", [0.1, 10.0, 1.0], "strictly increasing"),
    ("weights", [0.1, "1", 10.0], "strictly increasing finite numbers"),
    ("seed", -1, r"an integer in \[0, 2\^63\)"),
    ("seed", 10**30, r"an integer in \[0, 2\^63\)"),
    ("task", "../../etc", "a task name"),
    ("task", "..", "a task name"),
    ("shared_start", "yes", "null or {weight, base_steps, finetune_steps}"),
    ("policy_class", ["SurrogatePolicy"], "a class name"),
    ("observation_space", {"low": [0], "high": [1], "shape": [10**9], "dtype": "float32"}, "over the limit of 65536"),
    ("action_space", {"low": [0, 0], "high": [1, 1], "shape": [2], "dtype": "object"}, "not float32 or float64"),
    ("action_space", {"low": [2, 2], "high": [1, 1], "shape": [2], "dtype": "float32"}, "low exceeds high"),
    ("weights", None, "is missing"),
])
def test_every_header_field_is_checked_on_load(tiny, tmp_path, field, value, allowed):
    spec, runs = tiny
    path = tmp_path / "surrogate.zip"
    rewrite(RunDir.of(spec, runs).surrogate, path, lambda h: h.pop(field) if value is None else h.update({field: value}))
    with pytest.raises(FileFormatError, match=f"`{field}`.*{allowed}"):
        AnchoredPolicy.load(path)


def test_version_1_file_is_refused_naming_fit_force(tiny, tmp_path):
    """A file of the previous format (only the payload under its checksum) names the command that re-creates it."""
    import hashlib

    spec, runs = tiny
    path = tmp_path / "surrogate.zip"

    def as_version_1(h):
        h.update(format_version=1, payload_sha256=hashlib.sha256(read_policy_file(RunDir.of(spec, runs).surrogate)[1]).hexdigest())
        h.pop("checksum")

    rewrite(RunDir.of(spec, runs).surrogate, path, as_version_1, checksum=False)
    with pytest.raises(FileFormatError, match=r"format version 1\), whose checksum does not cover the header.*`hti-rl fit <spec> --force`"):
        SurrogatePolicy.load(path)
    assert main(["deploy", str(path), "--weight", "3", "--spec", str(spec.path), "--episodes", "1"]) == 2


def test_oversized_header_is_refused_before_reading(tiny, tmp_path):
    spec, runs = tiny
    path = tmp_path / "surrogate.zip"
    rewrite(RunDir.of(spec, runs).surrogate, path, header_text=" " * (2 << 20))
    with pytest.raises(FileFormatError, match=r"header.json declares 2097152 bytes, over the limit of 1048576"):
        read_policy_file(path)


def test_saved_file_round_trips_and_keeps_its_checksum(tiny, tmp_path):
    spec, runs = tiny
    policy = SurrogatePolicy.load(RunDir.of(spec, runs).surrogate)
    policy.header["compare_key"] = "k"  # a stage that adds a field and saves again
    policy.save(tmp_path / "again.zip")
    header, blob = read_policy_file(tmp_path / "again.zip")
    assert header["format_version"] == FILE_VERSION == 2 and header["checksum"] == header_checksum(header, blob)
    assert header["compare_key"] == "k" and "payload_sha256" not in header


# ------------------------------------------------------------------ (4) no code named by a data file
def test_callable_named_in_meta_json_is_never_imported(tiny_copy, monkeypatch):
    from hti_rl.dataset import record
    from hti_rl.errors import AnchorError

    spec, runs = tiny_copy
    calls = []
    monkeypatch.setattr("os.system", lambda *a: calls.append(a) or 0)
    directory = RunDir.of(spec, runs).anchor(1.0)
    meta = json.loads((directory / "meta.json").read_text())
    meta["imported"] = {"source": "x", "callable": "os:system", "kind": "deterministic", "sha256": "0"}
    (directory / "meta.json").write_text(json.dumps(meta))
    (directory / "model.zip").unlink()
    with pytest.raises(AnchorError, match=r"is a Python callable, and .* names none at that weight; hti-rl imports only code that the task spec names"):
        record(spec, runs, progress=False)
    assert calls == []


def test_deploy_without_spec_builds_no_path_from_the_header(tiny, tmp_path, monkeypatch, capsys):
    spec, runs = tiny
    path = tmp_path / "surrogate.zip"
    rewrite(RunDir.of(spec, runs).surrogate, path, lambda h: h.update(task="../evil"))
    opened = []
    monkeypatch.setattr("hti_rl.spec.load.load_task", lambda p: opened.append(p))
    assert main(["deploy", str(path), "--weight", "3", "--episodes", "1"]) == 2
    assert "header field `task` is '../evil'" in capsys.readouterr().err and opened == []


# ------------------------------------------------------------------ (2) no file outside hti-rl's own is written
def test_run_lock_does_not_follow_a_symlinked_lock(tmp_path):
    from hti_rl.errors import HTIError
    from hti_rl.io import RunLock

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".lock").symlink_to(victim)
    with pytest.raises(HTIError, match=r"\.lock is a symbolic link; hti-rl writes only its own lock file"):
        with RunLock(tmp_path / "run"):
            pass
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("name", [".", ".."])
def test_task_named_dot_or_dot_dot_is_refused(make_lqr_spec, name):
    from hti_rl.errors import SpecError
    from hti_rl.spec.load import load_task

    path = make_lqr_spec(name=name)
    with pytest.raises(SpecError, match=f"field `name` is '{re.escape(name)}', which names the run root or its parent"):
        load_task(path)


def test_temp_files_of_killed_writers_are_swept(tmp_path):
    import fcntl
    import os
    import time

    from hti_rl.io import STALE_AFTER_S, atomic_write

    target = tmp_path / "dataset.npz"
    old = time.time() - STALE_AFTER_S - 5
    stale, fresh, live, other = (tmp_path / f".{n}.tmp" for n in ("dataset.npz.a1", "dataset.npz.b2", "dataset.npz.c3", "report.md.d4"))
    for p in (stale, fresh, live, other):
        p.write_bytes(b"half a file")
    for p in (stale, live, other):
        os.utime(p, (old, old))
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a writer still at work
    try:
        with atomic_write(target) as f:
            f.write(b"done")
    finally:
        os.close(fd)
    assert target.read_bytes() == b"done"
    assert not stale.exists() and fresh.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.glob(".dataset.npz.*.tmp")) == [fresh.name, live.name]


def test_run_root_that_is_a_file_gives_an_error_line(make_lqr_spec, tmp_path, capsys):
    spec = make_lqr_spec()
    (tmp_path / "afile").write_text("x")
    assert main(["train-anchors", str(spec), "--run-root", str(tmp_path / "afile"), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{tmp_path / 'afile'} is a file, not a directory" in err


# ------------------------------------------------------------------ (6) anchor folders cannot collide
def test_close_weights_get_distinct_folders(make_lqr_spec, tmp_path):
    from hti_rl.runs import weight_label
    from hti_rl.spec.load import load_task

    spec = load_task(make_lqr_spec(anchors=[1.0, 1.000001, 10.0], held_out=[]))
    run = RunDir.of(spec, tmp_path / "runs")
    assert [run.anchor(w).name for w in spec.anchors] == ["w=1", "w=1.000001", "w=10"]
    assert weight_label(0.1) == "0.1" and weight_label(1 / 3) == "0.3333333333333333" and weight_label(1e-7) == "1e-07"


def test_anchor_folder_of_another_weight_is_refused(tiny_copy):
    from hti_rl.errors import AnchorError
    from hti_rl.training.store import load_anchor_actor

    spec, runs = tiny_copy
    meta_path = RunDir.of(spec, runs).anchor(1.0) / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "weight": 1.000001}))
    with pytest.raises(AnchorError, match=r"holds the anchor of weight 1.000001, not 1.0 .*train-anchors .* --force"):
        load_anchor_actor(spec, 1.0, runs)


def test_run_folders_named_by_an_earlier_version_stay_loadable(make_lqr_spec, tmp_path):
    """An earlier hti-rl named the anchor at 1/3 ``w=0.333333``; it is still found (its meta.json says 1/3)."""
    from conftest import save_lqr_anchor

    from hti_rl.spec.load import load_task
    from hti_rl.training.store import load_anchor_actor

    spec = load_task(make_lqr_spec(anchors=[0.1, 1 / 3, 10.0], held_out=[]))
    runs = tmp_path / "runs"
    save_lqr_anchor(spec, 1 / 3, runs)
    new = RunDir.of(spec, runs).anchor(1 / 3)
    assert new.name == "w=0.3333333333333333"
    new.rename(new.with_name("w=0.333333"))  # as the earlier version wrote it
    assert RunDir.of(spec, runs).anchor(1 / 3).name == "w=0.333333"
    assert load_anchor_actor(spec, 1 / 3, runs).action_dim == 1


# ------------------------------------------------------------------ (5) stale inputs are refused
def test_dataset_of_replaced_anchors_is_refused_by_fit(tiny_copy, capsys):
    from conftest import save_lqr_anchor

    from hti_rl.methods.surrogate import clot_config, fit

    spec, runs = tiny_copy
    save_lqr_anchor(spec, 1.0, runs, log_std=-1.0)  # import-anchors --force or train-anchors --force did this
    with pytest.raises(FileFormatError, match=r"recorded from other anchors than those now in .*changed since: w=1\).*hti-rl record .* --force"):
        fit(spec, runs, clot_config({"steps": 2}), progress=False)
    # the CLI records again rather than saying "exists, skipped", and fit then refits the stale surrogate
    assert main(["record", str(spec.path), "--run-root", str(runs)]) == 0
    assert "recording again: " in capsys.readouterr().out
    assert main(["fit", str(spec.path), "--run-root", str(runs), "--set", "steps=2", "--accept-anchors"]) == 0
    assert "fitting again: " in capsys.readouterr().out
    assert main(["fit", str(spec.path), "--run-root", str(runs)]) == 0
    assert "exists, skipped" in capsys.readouterr().out


def test_dataset_recorded_again_during_fit_is_not_fitted_on(tiny_copy, monkeypatch):
    import hti_rl.methods.surrogate as surrogate
    from hti_rl.dataset import record

    spec, runs = tiny_copy
    before = RunDir.of(spec, runs).surrogate.read_bytes()
    original = surrogate.fit_policy

    def fit_while_recording(*args, **kwargs):
        record(spec, runs, seed=7, progress=False)  # `hti-rl record --force` in another terminal
        return original(*args, **kwargs)

    monkeypatch.setattr(surrogate, "fit_policy", fit_while_recording)
    with pytest.raises(FileFormatError, match=r"recorded again while this fit ran; the surrogate was not saved.*fit .* --force"):
        surrogate.fit(spec, runs, surrogate.clot_config({"steps": 2}), progress=False)
    assert RunDir.of(spec, runs).surrogate.read_bytes() == before


# ------------------------------------------------------------------ (7) small inputs cannot exhaust memory or time
def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_yaml_alias_bomb_is_refused_at_once(make_lqr_spec):
    import time

    from hti_rl.errors import SpecError
    from hti_rl.spec.load import load_task

    path = make_lqr_spec()
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = "env_kwargs:\n  bomb:\n" + "".join(f"    {line}\n" for line in levels)  # 9^9 = 387M values in 700 bytes
    path.write_text(path.read_text() + bomb)
    started = time.perf_counter()
    with pytest.raises(SpecError, match=r"expands to over 100000 values once its aliases"):
        load_task(path)
    assert time.perf_counter() - started < 2.0


def test_latin_1_spec_is_an_error_not_a_traceback(make_lqr_spec, capsys):
    path = make_lqr_spec()
    path.write_bytes(path.read_bytes() + "# caf\xe9\n".encode("latin-1"))
    assert main(["record", str(path)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize("payload, what", [
    (b"\x80\x02cbuiltins\nbytearray\n\x8a\x05\x00\x18\x0d\x8f\x00\x85R.", "bytearray for 2400000000 elements"),
    (b"\x80\x03cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85C\x01d\x87R.", "an array for 8000000000"),
    (b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a\x3b\x85R.", "calls numpy.ndarray directly"),
])
def test_crafted_vecnormalize_cannot_allocate(tmp_path, payload, what):
    from hti_rl.sb3io.safe_pickle import UnsafePickleError, read_vecnormalize

    path = tmp_path / "vecnormalize.pkl"
    path.write_bytes(payload)
    before = _max_rss_mb()
    with pytest.raises(UnsafePickleError, match=re.escape(what)):
        read_vecnormalize(path)
    assert _max_rss_mb() - before < 200


def test_crafted_actor_architecture_is_refused_before_building():
    from hti_rl.actors import AnchorActor

    arch = {"kind": "gaussian", "obs_dim": 30000, "action_dim": 2, "trunk": [{"type": "Linear", "in": 30000, "out": 30000, "bias": True}],
            "mean": [{"type": "Linear", "in": 30000, "out": 2, "bias": True}], "std": {"type": "param"}, "obs_norm": None}
    before = _max_rss_mb()
    with pytest.raises(FileFormatError, match=r"asks for 900090002 weights, over the limit of 67108864; nothing was built"):
        AnchorActor(arch)
    assert _max_rss_mb() - before < 200


@pytest.mark.parametrize("policy_kwargs, message", [
    ("dict(net_arch=[-5])", r"has net_arch \[-5\]; give lists of at most 64 layer widths, each an integer in \[1, 16384\]"),
    ("dict(net_arch=[60000, 60000])", r"has net_arch \[60000, 60000\]; give lists"),
    ([1, 2], "is a list; give a mapping"),
])
def test_policy_kwargs_are_checked_at_load(make_lqr_spec, policy_kwargs, message):
    from hti_rl.errors import SpecError
    from hti_rl.spec.load import load_task

    with pytest.raises(SpecError, match=f"field `policy_kwargs` {message}"):
        load_task(make_lqr_spec(agent={"policy_kwargs": policy_kwargs}))


def test_anchor_from_a_device_file_is_refused(make_lqr_spec, tmp_path, capsys):
    spec = make_lqr_spec()
    assert main(["import-anchors", str(spec), "--run-root", str(tmp_path / "runs"), "--anchor", "1=/dev/zero"]) == 2
    assert "/dev/zero is not a regular file or a folder" in capsys.readouterr().err
    assert main(["import-anchors", str(spec), "--run-root", str(tmp_path / "runs"), "--anchor", "1=/dev/zero.json"]) == 2


def test_record_size_is_bounded_at_load(make_lqr_spec):
    from hti_rl.errors import SpecError
    from hti_rl.spec.load import load_task

    with pytest.raises(SpecError, match=r"asks for a dataset of .* GiB .*over the limit of 8 GiB"):
        load_task(make_lqr_spec(record={"samples": 65536, "max_states": 10**7}))
