"""`hti-rl demo` end to end, with the anchors' budget, the fit and the evaluation cut so that the test
takes seconds: every stage still runs (train, check, record, fit, retrain, deploy, report)."""

from __future__ import annotations

import json
import re
import zipfile

from hti_rl.cli import main
from hti_rl.compare import demo


def test_demo_writes_report_plot_and_tensorboard(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DEMO_PPO", demo.DEMO_PPO.replace("n_timesteps: 150000", "n_timesteps: 2000"))
    assert "n_timesteps: 2000" in demo.DEMO_PPO
    monkeypatch.setattr(demo, "DEMO_SPEC", demo.DEMO_SPEC.replace("eval_episodes: 20", "eval_episodes: 3"))
    monkeypatch.setattr(demo, "DEMO_CLOT", {"steps": 30})
    assert main(["demo", "--run-root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    report = tmp_path / "demo" / "demo" / "report.md"
    assert f"report: {report}" in out
    # The retrained agent's bar says what it trains, and its logs are under the task's one TensorBoard root.
    assert "retrain:" in captured.err
    assert (tmp_path / "demo" / "tb" / "retrained_w=3_1").is_dir() and not (tmp_path / "demo" / "retrained" / "demo" / "tb").exists()
    text = report.read_text()
    first_times = re.search(r"Stage wall times: (.*)\.", text).group(1)
    assert "earlier run" not in first_times
    assert "episodes reset with seeds 1000…1002" in text  # 3 evaluation episodes
    for weight in ("0.3 (held out)", "3 (held out)"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {weight} |"))
        assert len(re.findall(r"-?\d+\.\d+ ± \d+\.\d+", row)) == 3  # surrogate, best anchor, optimum
    assert "Retrained PPO agent at λ = 3" in text
    assert (report.with_name("demo.png")).stat().st_size > 10_000
    assert any((tmp_path / "demo" / "tb").rglob("events.out.tfevents.*"))
    assert (tmp_path / "demo" / "surrogate.zip").exists()
    assert json.loads(zipfile.ZipFile(tmp_path / "demo" / "surrogate.zip").read("header.json"))["clot_config"]["steps"] == 30

    # Deployed without --spec: the surrogate names the spec it was fitted from (inside the run root).
    assert main(["deploy", str(tmp_path / "demo" / "surrogate.zip"), "--weight", "0.5", "--episodes", "2"]) == 0
    deployed = capsys.readouterr().out
    assert "uncalibrated" in deployed and "\ndemo at weight 0.5: return " in deployed

    # A rerun reuses every stage: no empty progress bars, and the report keeps the stage times of the run that did the work.
    assert main(["demo", "--run-root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "0step" not in captured.err and "train anchors:" not in captured.err and "retrain:" not in captured.err, captured.err
    again = re.search(r"Stage wall times: (.*)\.", report.read_text()).group(1)
    for stage in ("train anchors", "check anchors", "record", "fit", "retrain one agent at λ = 3"):
        before = re.search(rf"{stage} (\d+\.\d) s", first_times).group(1)
        assert f"{stage} {before} s (earlier run)" in again, (stage, first_times, again)

    # A damaged (or older-format) surrogate is refitted by the next demo instead of stopping it.
    surrogate = tmp_path / "demo" / "surrogate.zip"
    surrogate.write_bytes(surrogate.read_bytes()[:200])
    assert main(["demo", "--run-root", str(tmp_path)]) == 0
    assert "redoing this stage" in capsys.readouterr().out
    from hti_rl.methods.surrogate import SurrogatePolicy

    SurrogatePolicy.load(surrogate)
