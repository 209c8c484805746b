"""`hti-rl deploy`: finds the spec a surrogate was fitted from (only where safe), checks the weight and
rendering before any rollout, and its help and messages say what the command line takes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import save_lqr_anchor, write_lqr_spec

from hti_rl.cli import build_parser, main
from hti_rl.dataset import record
from hti_rl.methods.policy_file import read_policy_file, write_policy_file
from hti_rl.methods.surrogate import clot_config, fit
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit_tiny(root: Path, spec_dir: Path) -> tuple[object, Path]:
    """(spec, run root ``root/runs``) of a 2-D LQR task with exact-gain anchors whose spec lies in ``spec_dir``."""
    path = write_lqr_spec(spec_dir, name="lqr2d", env_id="hti_rl/LQR2D-v0", anchors=[0.1, 1.0, 10.0], held_out=[0.3, 3.0],
                          record={"episodes": 1, "samples": 4, "max_states": 60})
    spec, runs = load_task(path), root / "runs"
    for w in spec.anchors:
        save_lqr_anchor(spec, w, runs)
    record(spec, runs, progress=False)
    fit(spec, runs, clot_config({"steps": 10}, seed=0), progress=False)
    return spec, runs


@pytest.fixture(scope="module")
def inside(tmp_path_factory):
    """A tiny surrogate whose spec lies inside its run root (as the demo's does)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("inside")
    return _fit_tiny(root, root / "runs" / "lqr2d" / "spec")


def _copy(inside, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the run root -> (run root, surrogate path)."""
    _, runs = inside
    shutil.copytree(runs, tmp_path / "runs", ignore=shutil.ignore_patterns(".lock", "tb"))
    return tmp_path / "runs", tmp_path / "runs" / "lqr2d" / "surrogate.zip"


def _set_header(path: Path, **entries) -> None:
    """Rewrite the policy file's header with a fresh checksum (as if fit had written these entries)."""
    header, blob = read_policy_file(path)
    header.update(entries)
    header = {k: v for k, v in header.items() if v is not None and k != "checksum"}
    write_policy_file(path, header, blob)


def test_fit_records_the_spec_relative_to_the_run_root(inside):
    spec, runs = inside
    header, _ = read_policy_file(RunDir.of(spec, runs).surrogate)
    assert header["spec_file"] == "lqr2d/spec/envs/lqr2d.yaml"


def test_deploy_without_spec_uses_the_spec_it_was_fitted_from(inside, tmp_path, capsys):
    _, surrogate = _copy(inside, tmp_path)
    assert main(["deploy", str(surrogate), "--weight", "0.5", "--episodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "uncalibrated" in out and "\nlqr2d at weight 0.5: return " in out


@pytest.mark.parametrize("fault, message", [
    ("outside", "lies outside the run root"),
    ("escape", "lies outside the run root"),
    ("missing", "does not exist"),
    ("code", "names code (json:dumps)"),
    ("edited", "is another version of task 'lqr2d'"),
    ("none", "its header names no spec file"),
])
def test_deploy_refuses_a_spec_it_cannot_trust_and_names_the_flag(inside, tmp_path, capsys, fault, message):
    runs, surrogate = _copy(inside, tmp_path)
    spec_file = runs / "lqr2d" / "spec" / "envs" / "lqr2d.yaml"
    outside = tmp_path / "elsewhere" / "lqr2d.yaml"
    outside.parent.mkdir()
    shutil.copy(spec_file, outside)
    shutil.copytree(runs / "lqr2d" / "spec" / "agents", tmp_path / "agents")
    if fault == "outside":  # an absolute path outside the run root, though the spec there is the right one
        _set_header(surrogate, spec_file=str(outside))
    elif fault == "escape":  # ../ out of the run root
        _set_header(surrogate, spec_file="../elsewhere/lqr2d.yaml")
    elif fault == "missing":
        spec_file.unlink()
    elif fault == "code":
        raw = yaml.safe_load(spec_file.read_text())
        raw["reward"]["components"]["extra"] = {"function": "json:dumps"}
        spec_file.write_text(yaml.safe_dump(raw))
    elif fault == "edited":
        spec_file.write_text(spec_file.read_text().replace("seed: 0", "seed: 7") if "seed:" in spec_file.read_text()
                             else spec_file.read_text() + "seed: 7\n")
    else:
        _set_header(surrogate, spec_file=None)
    assert main(["deploy", str(surrogate), "--weight", "0.5", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Pass the spec with --spec" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    # The same file deploys with the spec passed explicitly (the user's own choice may name anything).
    if fault in ("outside", "escape", "none"):
        assert main(["deploy", str(surrogate), "--weight", "0.5", "--episodes", "1", "--spec", str(outside)]) == 0


def test_out_of_range_weight_names_the_command_line_flag(inside, tmp_path, capsys):
    _, surrogate = _copy(inside, tmp_path)
    assert main(["deploy", str(surrogate), "--weight", "20", "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "weight 20 is outside the anchor range [0.1, 10]" in err and "--allow-extrapolation" in err
    assert "allow_extrapolation=True" not in err
    assert main(["deploy", str(surrogate), "--weight", "20", "--episodes", "1", "--allow-extrapolation"]) == 0


@pytest.mark.parametrize("flag", [["--render"], ["--video", "out.gif"]])
def test_render_on_a_task_that_cannot_is_refused_before_the_rollout(inside, tmp_path, capsys, monkeypatch, flag):
    import hti_rl.evaluate

    _, surrogate = _copy(inside, tmp_path)
    monkeypatch.setattr(hti_rl.evaluate, "evaluate_at", lambda *a, **k: pytest.fail("rolled out before the render check"))
    monkeypatch.chdir(tmp_path)
    assert main(["deploy", str(surrogate), "--weight", "0.5", *flag]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: task 'lqr2d' (hti_rl/LQR2D-v0) cannot render")
    assert "envs/pendulum.yaml" in captured.err and "envs/lqr2d.yaml" not in captured.err  # which tasks can
    assert "\x1b[" not in captured.err and "render_modes" not in captured.err  # no raw Gymnasium warning
    assert not (tmp_path / "out.gif").exists()


def test_help_shows_a_single_percent_sign(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["deploy", "--help"])
    out = capsys.readouterr().out
    assert "95% CI" in out and "%%" not in out
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "95% CI" in out and "%%" not in out
