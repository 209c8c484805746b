"""The refining rows of ``hti-rl compare`` (experiment field ``refine``: budget factors, e.g. ``[0.1, 0.25]``).

At every held-out weight λ, with F the largest factor and B an anchor's budget:

- ``refined@<f>``: ``hti-rl refine``'s start (the candidate ``deployed`` deploys at λ: an anchor continued, or
  the surrogate distilled into the nearest anchor's model) trained at λ for f × B steps;
- ``nearest-finetune@<F>``: the nearest anchor continued at λ for F × B steps (the naive warm start);
- ``scratch@<F>``: a fresh agent trained at λ for F × B steps.

None is installed as an anchor: each is a fixed policy at its own weight (:class:`PerWeight`), evaluated on the
comparison's episodes like every method. Files: ``runs/<task>/refine/w=<λ>/compare-<row>/``. The report gains
a table of return, steps and wall time per row (:func:`refine_section`) and a figure of training return
against steps (:func:`curves_figure`, from the runs' TensorBoard logs, beside the retrained agents').
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.compare.report import markdown_table
from hti_rl.evaluate import Predictor
from hti_rl.refine.run import choose_start
from hti_rl.refine.start import anchor_start, nearest_anchor
from hti_rl.runs import RunDir, read_meta
from hti_rl.seeds import refine_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.store import load_agent_actor
from hti_rl.training.warm_start import WarmStartJob, train_warm_starts, warm_start_job
from hti_rl.weights import exact

CURVE_TAG = "rollout/ep_rew_mean"  # SB3's mean training-episode return (the Monitor's, at the run's weight)


class PerWeight:
    """One fixed policy per weight, chosen by ``set_weight`` (a row trained separately at every held-out weight)."""

    def __init__(self, policies: dict[float, Predictor]):
        self.policies = policies
        self.current = next(iter(policies.values()))

    def set_weight(self, weight: float) -> None:
        self.current = self.policies[float(weight)]

    @property
    def generator(self) -> Any:
        """The current policy's sampling generator (created when missing), so that a comparison can re-seed it."""
        if getattr(self.current, "generator", None) is None and callable(getattr(self.current, "seed", None)):
            self.current.seed(0)
        return getattr(self.current, "generator", None)

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = False):
        return self.current.predict(observation, state, episode_start, deterministic)


def row_names(factors: tuple[float, ...]) -> list[str]:
    """The rows for budget factors ``factors``: ``refined@f`` each, then the naive warm start and scratch at the largest."""
    top = max(factors)
    return [f"refined@{f:g}" for f in factors] + [f"nearest-finetune@{top:g}", f"scratch@{top:g}"]


def refine_jobs(spec: TaskSpec, factors: tuple[float, ...], deployed: Any, run_root: str | Path) -> dict[str, dict[float, WarmStartJob]]:
    """Every row's job at every held-out weight (finished ones included)."""
    run = RunDir.of(spec, run_root)
    budget = int(spec.hyperparams()["n_timesteps"])
    top = max(factors)
    jobs: dict[str, dict[float, WarmStartJob]] = {}
    for w in spec.held_out:
        deployed_start = choose_start(spec, w, deployed, run.refine(w, "compare-start"), run_root)
        near = anchor_start(spec, nearest_anchor(spec, w, run_root), run_root)
        starts = {**{f"refined@{f:g}": (deployed_start, f, 0) for f in factors}, f"nearest-finetune@{top:g}": (near, top, 1),
                  f"scratch@{top:g}": (None, top, 2)}
        for name, (start, factor, role) in starts.items():
            provenance = {**(start.provenance() if start else {"start": "scratch"}), "budget_factor": factor}
            jobs.setdefault(name, {})[w] = warm_start_job(
                spec=spec if start is None else start.spec, at_weight=w, steps=max(1, round(factor * budget)),
                out=run.refine(w, f"compare-{name}"), name=f"compare_{name}_w={exact(w)}", run_root=run_root,
                seed=refine_seed(spec, w, role) + int(round(factor * 1000)), provenance=provenance,
                start_model=None if start is None else start.model, start_vecnormalize=None if start is None else start.vecnormalize)
    return jobs


def train_refine_rows(spec: TaskSpec, factors: tuple[float, ...], deployed: Any, run_root: str | Path, workers: int = 1,
                      progress: bool = True) -> tuple[dict[str, PerWeight], dict[str, dict[float, dict[str, Any]]]]:
    """Train (or resume) every row's runs, then load them: -> (row -> :class:`PerWeight`, row -> λ -> meta.json)."""
    jobs = refine_jobs(spec, factors, deployed, run_root)
    train_warm_starts([job for by_weight in jobs.values() for job in by_weight.values()], workers, progress, "refine rows")
    policies, metas = {}, {}
    for name, by_weight in jobs.items():
        policies[name] = PerWeight({w: load_agent_actor(job.spec, job.directory, lambda w=w: spec.make_env(w)) for w, job in by_weight.items()})
        metas[name] = {w: read_meta(job.directory) for w, job in by_weight.items()}
    return policies, metas


def refine_section(results: dict[str, Any]) -> list[str]:
    """Return, steps and wall time of every refining row at every held-out weight, and the goal's verdict."""
    metas, rows = results["refine_metas"], results["rows"]
    top = max(float(n.split("@")[1]) for n in metas)
    lines = ["Each row is trained at the held-out weight itself (docs/method.md §11): `refined@f` starts from what `deployed` "
             "deploys there (an anchor continued with its critic and normaliser, or the surrogate distilled into the nearest "
             "anchor's model), `nearest-finetune` continues the nearest anchor, `scratch` starts afresh; f is the budget as a "
             "fraction of an anchor's. Returns on this comparison's episodes. Steps are the comparable cost: wall times "
             "depend on the machine's load when each run trained, and the rows and the retrained agents may have trained at different times.", ""]
    table = []
    for w in results["weights"]:
        retrained = results["retrained"][w]
        table.append([f"{w:g}", "retrained (pooled seeds)", f"{retrained['mean']:.4g} ± {retrained['ci']:.3g}",
                      str(int(np.mean([m.get("steps", 0) for m in results["retrained_metas"][w]]))),
                      f"{np.mean([m.get('wall_time_s', np.nan) for m in results['retrained_metas'][w]]):.4g}", "scratch, full budget"])
        for name in metas:
            meta, row = metas[name][w] or {}, rows[name][w]
            start = (meta.get("warm_start") or {}).get("start", "?")
            table.append(["", name, f"{row['mean']:.4g} ± {row['ci']:.3g}", str(meta.get("steps", "–")), f"{meta.get('wall_time_s', np.nan):.4g}", start])
    lines += [markdown_table(["λ", "row", "return", "steps", "wall time (s)", "start"], table), ""]
    goal = f"refined@{top:g}"
    verdicts = [(w, rows[goal][w]["mean"] >= results["retrained"][w]["mean"]) for w in results["weights"]]
    lines.append(f"Goal: `{goal}` at or above the retrained mean at every held-out weight: "
                 + ("**met**" if all(v for _, v in verdicts) else "**not met**") + " ("
                 + ", ".join(f"λ={w:g} {'yes' if v else 'no'}" for w, v in verdicts) + ").")
    lines += ["", "![training return vs steps](refine_curves.png)"]
    return lines


def curves_figure(results: dict[str, Any], tb_root: Path) -> Any:
    """Training return (SB3's ``rollout/ep_rew_mean``) against steps, one panel per held-out weight: every
    refining row and every retrained seed, read from their TensorBoard runs under ``tb_root``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = results["weights"]
    fig, axes = plt.subplots(1, len(weights), figsize=(5 * len(weights), 3.6), squeeze=False)
    for ax, w in zip(axes[0], weights):
        runs = {f"retrained seed {i}": f"retrained_w={w:g}_seed{i}" for i in range(len(results["retrained_metas"][w]))}
        runs.update({name: f"compare_{name}_w={exact(w)}" for name in results["refine_metas"]})
        finals = []
        for label, run in runs.items():
            steps, values = _scalars(tb_root, run)
            if len(steps):
                ax.plot(steps, values, label=label, lw=1.2, ls="--" if label.startswith("retrained") else "-")
                finals.append(abs(values[-1]))
        if finals:  # symmetric log: the first, far worse returns and the final differences both stay visible
            ax.set_yscale("symlog", linthresh=max(float(np.median(finals)), 1e-6))
        ax.set(title=f"λ = {w:g}", xlabel="environment steps of the run", ylabel="training episode return (symlog)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _scalars(tb_root: Path, run: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of :data:`CURVE_TAG` in the TensorBoard run ``tb_root/<run>_<n>`` (SB3 numbers its runs), merged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for directory in sorted(tb_root.glob(f"{run}_*")):
        if not directory.name[len(run) + 1:].isdigit():
            continue
        acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
        acc.Reload()
        if CURVE_TAG in acc.Tags().get("scalars", []):
            points.update({e.step: e.value for e in acc.Scalars(CURVE_TAG)})
    steps = np.array(sorted(points))
    return steps, np.array([points[s] for s in steps])
