"""The hti-rl command: registered subcommands, skipping finished stages, user errors without tracebacks."""

from __future__ import annotations

import pytest

from hti_rl.cli import COMMANDS, build_parser, main


def test_subcommands_registered():
    assert {"train-anchors", "check-anchors", "record"} <= set(COMMANDS)
    args = build_parser().parse_args(["train-anchors", "envs/x.yaml", "--workers", "3", "--backend", "ray"])
    assert (args.spec, args.workers, args.backend, args.force, args.run_root) == ("envs/x.yaml", 3, "ray", False, "runs")


def test_user_error_exit_code_2_without_traceback(capsys, tmp_path):
    assert main(["record", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: task spec") and "does not exist" in err and "Traceback" not in err


def test_record_needs_trained_anchors(capsys, make_lqr_spec, tmp_path):
    assert main(["record", str(make_lqr_spec()), "--run-root", str(tmp_path / "runs")]) == 2
    assert "hti-rl train-anchors" in capsys.readouterr().err


def test_finished_stages_are_skipped(capsys, trained_lqr, lqr_run):
    path, _ = trained_lqr
    _, runs = lqr_run
    assert main(["train-anchors", str(path), "--run-root", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 3 and "at λ=10" in out  # the anchor check runs after training
    assert (runs / "lqr1d" / "anchors" / "cross_eval.json").is_file()
    assert main(["train-anchors", str(path), "--run-root", str(runs)]) == 0
    assert "cross_eval.json is up to date" in capsys.readouterr().out

    assert main(["record", str(path), "--run-root", str(runs)]) == 0
    assert "wrote" in capsys.readouterr().out
    dataset = runs / "lqr1d" / "dataset.npz"
    before = dataset.stat().st_mtime_ns
    assert main(["record", str(path), "--run-root", str(runs)]) == 0
    assert "skipped" in capsys.readouterr().out and dataset.stat().st_mtime_ns == before
    assert main(["record", str(path), "--run-root", str(runs), "--force"]) == 0
    assert dataset.stat().st_mtime_ns != before


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2
