"""``hti-rl compare``: the surrogate against retrained agents and baselines at held-out weights.

An experiment (``experiments/<name>.yaml``, :class:`hti_rl.compare.experiment.Experiment`) names a task spec, how many agents
to retrain from scratch at every held-out weight (the ground truth, same budget and hyperparameters
as an anchor; two or more, so the seed-to-seed spread is measured), the evaluation episodes and
seeds, the methods, and the CLOT variants (named config overrides: the ablations).

:func:`run_compare` does every stage, skipping what is already on disk (phases 1-3 in
:mod:`hti_rl.compare.fitting`, 4 in :mod:`hti_rl.compare.evaluation`, 5 in :mod:`hti_rl.compare.report`):

1. train the anchors (:func:`hti_rl.training.anchors.train_anchors`) and the retrained agents with the same
   job machinery (:class:`RetrainJob`, ``runs/<task>/retrained/w=<λ>/seed=<i>/``), all at once
   over ``workers`` processes; then the weight-conditioned peers the experiment lists
   (:func:`hti_rl.training.conditioned.train_conditioned`, ``runs/<task>/conditioned/f=<F>/``);
   with ``shared_start`` methods, also the shared-start anchors and the base fine-tuned at every
   held-out weight (:mod:`hti_rl.training.shared_start`, ``runs/<task>/shared/``);
2. cross-evaluate the anchors (:func:`hti_rl.quality.check_anchors`), record the dataset (and the
   shared-start anchors' own dataset);
3. fit every method (CLOT variants and the trainable baselines) to ``runs/<task>/compare/<method>.zip``,
   and every shared-start method on the shared-start anchors (rows ``shared/<method>``,
   ``runs/<task>/shared/compare/``);
4. evaluate: every anchor, retrained agent and the random policy once (their returns at any weight
   follow from one rollout set: evaluate once, weigh many), every method at every held-out weight;
   per-state W2 of every method's action distribution to each retrained agent's on a shared state set
   (the dataset's states, subsampled), beside the retrained agents' seed-to-seed W2 (the floor);
5. write ``experiments/<name>/report.md`` and ``returns.png`` (:mod:`hti_rl.compare.report`) and log to
   TensorBoard (``runs/<task>/tb/compare``).

On a task that weighs several components the same phases run with weight vectors; phase 4 is
:func:`hti_rl.compare.grid.evaluate_grid`, and the figure is the weight plane's heat maps
(:mod:`hti_rl.compare.grid_report`, ``plane.png``) in place of ``returns.png``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hti_rl.compare.evaluation import evaluate
from hti_rl.compare.experiment import Experiment
from hti_rl.compare.fitting import fit_methods, train_agents
from hti_rl.compare.grid import evaluate_grid
from hti_rl.compare.grid_report import FIGURE, plane_section, write_plane_figure
from hti_rl.compare.report import write_report
from hti_rl.io import write_json
from hti_rl.runs import DEFAULT_ROOT, RunDir, weight_label
from hti_rl.spec.load import load_task
from hti_rl.spec.task import TaskSpec


class Timings:
    """Wall time of each stage, kept in ``runs/<task>/compare/timings.json`` across runs."""

    def __init__(self, path: Path, log: Callable[[str], None]):
        self.path, self.log = path, log
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` as the stage ``name``: announce it, time it, save the time."""
        started = time.perf_counter()
        self.log(f"== {name}")
        out = fn()
        self.record({name: time.perf_counter() - started})
        return out

    def record(self, seconds: dict[str, float]) -> None:
        self.seconds.update({name: round(s, 2) for name, s in seconds.items()})
        write_json(self.path, self.seconds)


def run_compare(exp: Experiment, run_root: str | Path = DEFAULT_ROOT, workers: int = 1, force: bool = False,
                progress: bool = True, train_only: bool = False, out_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every stage of the comparison (see the module docstring); returns the results written to the report.

    :param exp: the experiment.
    :param run_root: root of the run directories.
    :param workers: processes for training anchors and retrained agents.
    :param force: refit the methods and re-evaluate (training and recording are never redone here:
        use ``hti-rl train-anchors/record --force``).
    :param train_only: stop after training (for a many-core machine).
    :param out_dir: where the report goes (``experiments/<name>/`` beside the experiment file by default).
    """
    # The methods run on anchors from scratch, whatever the task spec says; `shared_start` methods on shared-start ones.
    task = load_task(exp.task)
    spec = dataclasses.replace(task, shared_start=None)
    run = RunDir.of(spec, run_root)
    timed = Timings(run.path / "compare" / "timings.json", log)
    trained = train_agents(spec, task, exp, run_root, workers, progress, timed)
    if train_only:
        return {}
    # One thread whatever --workers is: fits and rollouts reproduce to the bit only at a fixed thread count
    # (measured: the same LQR no-potential fit scored −15.9 ± 11 with 2 threads, −9.38 ± 3.1 with 1).
    torch.set_num_threads(1)
    fitted = fit_methods(spec, trained.shared_spec, exp, run_root, force, progress, timed, log, workers)
    started = time.perf_counter()
    log("== evaluate")
    results, histograms = (evaluate_grid if spec.is_vector else evaluate)(spec, exp, trained, fitted, run_root)
    timed.record({"evaluate": time.perf_counter() - started})
    results.update(
        experiment=exp, spec=spec, timings=dict(timed.seconds), cross_warnings=list(fitted.cross.warnings),
        shared=shared_results(trained.shared_spec, trained.finetuned_metas, run_root) if trained.shared_spec is not None else None,
        episodes=exp.eval_episodes * len(exp.eval_seeds), dataset_states=len(fitted.dataset.obs),
        hyperparams=spec.hyperparams(),
        calibration_cost=fitted.policies["deployed"].calibration.cost if "deployed" in fitted.policies else None,
    )
    out = Path(out_dir) if out_dir else exp.path.parent / exp.name
    if fitted.refine_metas:
        _refining_report(results, fitted.refine_metas, run, out)
    if results.get("plane"):
        write_plane_figure(results, out)
        results.setdefault("sections", []).append(("Return over the weight plane", plane_section(results)))
    report = write_report(results, out)
    log_tensorboard(results, histograms, run.tb("compare"), report)
    log(f"wrote {report} and {report.with_name(FIGURE if spec.is_vector else 'returns.png')}; TensorBoard: {run.tb('compare')}")
    return results


def _refining_report(results: dict[str, Any], metas: dict[str, Any], run: RunDir, out: Path) -> None:
    """The refining rows' section of the report and their training curves (``out/refine_curves.png``)."""
    import matplotlib.pyplot as plt

    from hti_rl.compare.refining import curves_figure, refine_section
    from hti_rl.io import atomic_write

    results["refine_metas"] = metas
    results.setdefault("sections", []).append(("Refining at the held-out weights", refine_section(results)))
    fig = curves_figure(results, run.tb())
    with atomic_write(out / "refine_curves.png") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def shared_results(shared_spec: TaskSpec, finetuned_metas: dict[float, Any], run_root: str | Path) -> dict[str, Any]:
    """What the report says of the shared-start anchors: settings, the base's and the anchors' meta data."""
    from hti_rl.training.shared_start import (
        load_base_meta,
        shared_settings,
        total_steps,
    )

    return {
        "settings": shared_settings(shared_spec),
        "base_meta": load_base_meta(shared_spec, run_root),
        "anchor_metas": [json.loads((RunDir.of(shared_spec, run_root).anchor(w) / "meta.json").read_text()) for w in shared_spec.anchors],
        "finetuned_metas": finetuned_metas,
        "total_steps": total_steps(shared_spec),
    }


def log_tensorboard(results: dict[str, Any], histograms: dict[float, dict[str, np.ndarray]], log_dir: Path, report: Path) -> None:
    """Scalars per method and held-out weight (step = the weight's index), action histograms per weight, the report."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    names = results["spec"].grid.names if results["spec"].is_vector else ("",)
    for i, w in enumerate(results["weights"]):
        for name, entry in zip(names, w if isinstance(w, tuple) else (w,)):
            writer.add_scalar(f"weight/{name}" if name else "weight", entry, i)
        writer.add_scalar("return/retrained", results["retrained"][w]["mean"], i)
        writer.add_scalar("w2/retrained seed-to-seed (floor)", results["floor"][w], i)
        for name, rows in results["rows"].items():
            row = rows[w]
            writer.add_scalar(f"return/{name}", row["mean"], i)
            writer.add_scalar(f"regret/{name}", row["regret"], i)
            writer.add_scalar(f"w2/{name}", row["w2"], i)
        for name, samples in histograms[w].items():
            writer.add_histogram(f"actions_w={weight_label(w)}/{name}", samples.reshape(-1), 0)
    writer.add_text("report", report.read_text())
    writer.close()
