"""Anchor quality: cross-evaluation of exact-gain LQR anchors passes; an untrained anchor is flagged and refused."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import save_lqr_anchor
from rich.console import Console

from hti_rl.cli import main
from hti_rl.cross_eval import CrossEval, cross_evaluate, stale_reason
from hti_rl.errors import AnchorError
from hti_rl.evaluate import returns_at, rollout_components
from hti_rl.quality import check_anchors, require_good_anchors
from hti_rl.quality_report import print_report
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task
from hti_rl.training.store import load_anchor_actor


@pytest.fixture
def exact_anchors(make_lqr_spec, tmp_path):
    """(spec path, run root) with the three LQR anchors at their exact optimal gains."""
    path = make_lqr_spec()
    spec, runs = load_task(path), tmp_path / "runs"
    for weight in spec.anchors:
        save_lqr_anchor(spec, weight, runs, exact=True)
    return path, runs


def test_exact_anchors_pass(exact_anchors):
    path, runs = exact_anchors
    spec = load_task(path)
    cross = check_anchors(spec, runs)
    assert cross.warnings == [] and cross.episodes == 10
    mean, ci = cross.matrix()
    assert np.all(np.argmax(mean, axis=0) == np.arange(3)), mean  # each optimum is best at its own weight
    wmean, _ = cross.weighted_sums()
    assert wmean[0] < wmean[1] < wmean[2] < 0  # a higher control cost spends less control
    assert require_good_anchors(spec, runs).warnings == []
    files = RunDir.of(spec, runs).cross_eval
    assert files.is_file() and files.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert any((runs / "lqr1d" / "tb" / "cross_eval").iterdir())
    written = json.loads(files.read_text())
    np.testing.assert_allclose(written["return_mean"], mean)
    assert written["warnings"] == [] and set(written["anchors"]) == {"w=0.1", "w=1", "w=10"}


def test_matrix_reweighs_one_rollout_set(exact_anchors):
    """Column j of the matrix is what a rollout at weight j would give: the same episodes, weighed again."""
    path, runs = exact_anchors
    spec = load_task(path)
    cross = cross_evaluate(spec, runs)
    actor_returns = rollout_components(load_anchor_actor(spec, 1.0, runs), lambda: spec.make_env(10.0), cross.episodes, cross.seed)
    np.testing.assert_allclose(cross.returns(1, 10.0), returns_at(actor_returns, "ctrl", {"state": 1.0}, 10.0))
    assert cross.matrix()[0][1, 2] == pytest.approx(cross.returns(1, 10.0).mean())


def test_untrained_anchor_warns_and_is_refused(exact_anchors, caplog):
    path, runs = exact_anchors
    spec = load_task(path)
    save_lqr_anchor(spec, 0.1, runs, exact=False)  # u ≈ 0: the state drifts, and no control is spent
    with caplog.at_level(logging.WARNING, logger="hti_rl.quality"):
        cross = check_anchors(spec, runs)
    beaten = [w for w in cross.warnings if w.startswith("anchor w=0.1 is beaten at its own weight λ=0.1 by anchor w=")]
    monotone = [w for w in cross.warnings if "`ctrl` is not monotone" in w]
    assert beaten and monotone and len(beaten) + len(monotone) == len(cross.warnings), cross.warnings
    assert "anchor w=1 sums" in monotone[0] and "below anchor w=0.1's" in monotone[0]
    assert sum("anchor check:" in r.getMessage() for r in caplog.records) == len(cross.warnings)

    with pytest.raises(AnchorError) as err:
        require_good_anchors(spec, runs)
    message = str(err.value)
    assert "--accept-anchors" in message and "seeds_per_anchor" in message and beaten[0] in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hti_rl.quality"):
        assert require_good_anchors(spec, runs, accept=True).warnings == cross.warnings
    assert "--accept-anchors" in caplog.text and beaten[0] in caplog.text


def test_monotone_check_is_switchable(exact_anchors, make_lqr_spec):
    path, runs = exact_anchors
    spec = load_task(path)
    save_lqr_anchor(spec, 0.1, runs, exact=False)
    check_anchors(spec, runs)
    relaxed = load_task(make_lqr_spec(monotone_weighted_component=False))  # same fingerprint: anchors stay valid
    assert stale_reason(relaxed, runs) is None
    warnings = check_anchors(relaxed, runs).warnings
    assert warnings and all("beaten" in w for w in warnings)


def test_stale_when_an_anchor_changes(exact_anchors):
    path, runs = exact_anchors
    spec = load_task(path)
    check_anchors(spec, runs)
    file = RunDir.of(spec, runs).cross_eval
    before = file.stat().st_mtime_ns
    assert stale_reason(spec, runs) is None
    require_good_anchors(spec, runs)
    assert file.stat().st_mtime_ns == before  # up to date: reused, not evaluated again
    save_lqr_anchor(spec, 0.1, runs, exact=False)
    assert "anchors w=0.1 changed" in stale_reason(spec, runs)
    with pytest.raises(AnchorError, match="w=0.1 is beaten"):
        require_good_anchors(spec, runs)
    assert file.stat().st_mtime_ns != before and stale_reason(spec, runs) is None


def test_file_round_trip_and_report(exact_anchors):
    path, runs = exact_anchors
    spec = load_task(path)
    cross = check_anchors(spec, runs)
    loaded = CrossEval.load(RunDir.of(spec, runs).cross_eval)
    np.testing.assert_array_equal(loaded.sums, cross.sums)
    assert loaded.weights == cross.weights and loaded.anchors == cross.anchors
    console = Console(record=True, width=200)
    print_report(cross, console)
    text = console.export_text()
    assert "at λ=10" in text and "anchor check passed" in text


def test_check_anchors_command(exact_anchors, capsys):
    path, runs = exact_anchors
    assert main(["check-anchors", str(path), "--run-root", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "at λ=0.1" in out and "anchor check passed" in out and "cross_eval.json" in out
    save_lqr_anchor(load_task(path), 0.1, runs, exact=False)
    assert main(["check-anchors", str(path), "--run-root", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "warning: anchor w=0.1 is beaten" in out


def test_check_anchors_takes_episodes_and_seed_and_names_the_start_states(exact_anchors, capsys):
    path, runs = exact_anchors
    spec = load_task(path)
    assert main(["check-anchors", str(path), "--run-root", str(runs), "--episodes", "3", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "3 episodes" in out and "reset seeds 5…7" in out and "not saved" in out
    assert not RunDir.of(spec, runs).cross_eval.exists()  # the gate's file keeps the default episodes
    cross = cross_evaluate(spec, runs, episodes=3, seed=5)
    assert cross.seed == 5 and cross.episodes == 3
    np.testing.assert_array_equal(check_anchors(spec, runs, episodes=3, seed=5).sums, cross.sums)
    assert main(["check-anchors", str(path), "--run-root", str(runs)]) == 0
    default = check_anchors(spec, runs)
    assert f"reset seeds {default.seed}…{default.seed + 9}" in capsys.readouterr().out


@pytest.mark.parametrize("mean, ci, text", [
    (4257.3, 1003.2, "4257 ± 1003"), (-4.6312, 0.5213, "-4.63 ± 0.52"), (-241.2, 12.3, "-241 ± 12"),
    (-0.004567, 0.00012, "-0.00457 ± 0.00012"), (-5.13, 0.0, "-5.130 ± 0"),
])
def test_mean_and_ci_print_without_exponents(mean, ci, text):
    from hti_rl.evaluate import format_mean_ci

    assert format_mean_ci(mean, ci) == text


def test_report_of_large_returns_has_no_exponent_notation():
    rng = np.random.default_rng(0)
    sums = np.stack([np.stack([rng.normal(4000 + 1000 * i, 2500, 10), rng.normal(-100, 5, 10)], axis=-1) for i in range(2)])
    cross = CrossEval("cheetah", "f", (0.1, 1.0), ("ctrl", "forward"), "ctrl", {"forward": 1.0}, sums, 7, {})
    console = Console(record=True, width=250)
    print_report(cross, console)
    text = console.export_text()
    assert "e+" not in text and " ± " in text and "reset seeds 7…16" in text
    assert all("e+" not in w for w in cross.warnings)


def test_refusal_of_imported_anchors_suggests_importing_better_ones(exact_anchors, tmp_path):
    from hti_rl.training.importing import import_anchors

    path, runs = exact_anchors
    spec = load_task(path)
    save_lqr_anchor(spec, 0.1, tmp_path / "elsewhere", exact=False)  # the user's own, untrained agent
    import_anchors(spec, {0.1: RunDir.of(spec, tmp_path / "elsewhere").anchor(0.1) / "model.zip"}, run_root=runs, force=True)
    with pytest.raises(AnchorError) as err:
        require_good_anchors(spec, runs)
    message = str(err.value)
    assert "hti-rl import-anchors" in message and "--accept-anchors" in message and "w=0.1 is your own imported agent" in message
    assert "run `hti-rl train-anchors" not in message
