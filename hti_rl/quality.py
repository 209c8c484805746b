"""Anchor quality: every anchor evaluated at every anchor weight, and the warnings a surrogate needs.

A surrogate can only be as good as its anchors. After training, each anchor is rolled out once
(``max(spec.eval_episodes, 10)`` deterministic episodes, the same reset seeds for every anchor) and
its per-episode *unweighted* component sums are re-weighed at every anchor weight
(:func:`hti_rl.evaluate.returns_at`): a K×K matrix for K rollout sets. Two checks read it. Because
every anchor starts from the same reset seeds, both compare two anchors *episode by episode* and flag a
pair when the 95% Student-t confidence interval of the mean per-episode difference excludes zero (the
start-state luck that dominates a single anchor's interval cancels in the difference):

- **beaten at its own weight**: anchor j's return at λ_i is above anchor i's own return at λ_i.
  Anchor i was trained to maximise exactly that return, so it failed to learn (or was unlucky).
- **not monotone** (``monotone_weighted_component: true`` in the spec, the default): for i < j, the
  per-episode sum of the weighted component of anchor j (trained at the higher weight) is below
  anchor i's. For optimal policies of ``r₀ + λ·c`` the expected sum of c never decreases as λ grows
  (compare each policy's objective at the other's weight); with a cost (c ≤ 0) it means a higher
  weight spends less of it. Undiscounted sums of discounted-objective policies can break this
  legitimately: turn the check off per task where they do.

Files (``runs/<task>/anchors/``): ``cross_eval.json`` (the matrix, the raw sums, the warnings, and
a hash of every anchor's ``meta.json``, so that a changed anchor makes it stale) and
``cross_eval.png`` (a heat map); TensorBoard logs go to ``runs/<task>/tb/cross_eval``.
:func:`require_good_anchors` is the gate ``hti-rl fit`` passes through.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.cross_eval import CrossEval, cross_evaluate, stale_reason
from hti_rl.errors import AnchorError
from hti_rl.io import RunLock, atomic_write
from hti_rl.runs import DEFAULT_ROOT, RunDir
from hti_rl.spec.task import TaskSpec

logger = logging.getLogger(__name__)


def check_anchors(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT, force: bool = False, log_warnings: bool = True) -> CrossEval:
    """Cross-evaluate the anchors (unless ``cross_eval.json`` is up to date) and write the results.

    Writes ``cross_eval.json`` and ``cross_eval.png`` atomically and logs the matrix to TensorBoard
    (``runs/<task>/tb/cross_eval``), holding the anchors' run lock while it evaluates.

    :param spec: the task spec; all its anchors must be trained.
    :param run_root: root of the run directories.
    :param force: evaluate again even when the file is up to date.
    :param log_warnings: log each failed check (``logging`` warning of ``hti_rl.quality``).
    :return: the cross-evaluation, checked with the spec's ``monotone_weighted_component``.
    :raises AnchorError: an anchor is missing or belongs to another version of the spec.
    :raises RunLockedError: anchors of this task are being trained or recorded.
    """
    path = RunDir.of(spec, run_root).cross_eval
    if force or stale_reason(spec, run_root) is not None:
        with RunLock(RunDir.of(spec, run_root).anchors, "hti-rl check-anchors"):
            cross = cross_evaluate(spec, run_root)
            cross.save(path)
            figure = heatmap(cross)
            with atomic_write(path.with_suffix(".png")) as f:
                figure.savefig(f, format="png", dpi=120)
            _log_tensorboard(cross, RunDir.of(spec, run_root).tb("cross_eval"), figure)
    else:
        cross = dataclasses.replace(CrossEval.load(path), monotone=spec.monotone_weighted_component)
    if log_warnings:
        for message in cross.warnings:
            logger.warning("anchor check: %s", message)
    return cross


def require_good_anchors(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT, accept: bool = False) -> CrossEval:
    """The gate before a surrogate is fitted: anchors that fail the check are refused.

    Reuses ``cross_eval.json`` when it is up to date, else runs :func:`check_anchors`.

    :param spec: the task spec.
    :param run_root: root of the run directories.
    :param accept: on failed checks, log a warning and go on (``hti-rl fit --accept-anchors``).
    :return: the cross-evaluation.
    :raises AnchorError: a check failed and ``accept`` is false; the message lists the failures and the fixes.
    """
    cross = check_anchors(spec, run_root, log_warnings=False)
    if not cross.warnings:
        return cross
    listed = "\n".join(f"  - {message}" for message in cross.warnings)
    if accept:
        logger.warning("anchors of task %r failed the quality check, used anyway (--accept-anchors):\n%s", spec.name, listed)
        return cross
    where = getattr(spec, "path", None) or "envs/<task>.yaml"
    raise AnchorError(
        f"the anchors of task {spec.name!r} failed the quality check ({RunDir.of(spec, run_root).cross_eval}):\n{listed}\n"
        f"Fix: retrain them with more steps (n_timesteps) or more seeds per anchor (e.g. seeds_per_anchor: 3) in {where} "
        f"and run `hti-rl train-anchors {where} --force`; or pass --accept-anchors to fit on them anyway."
    )


def heatmap(cross: CrossEval) -> Any:
    """A matplotlib figure of the matrix: colour = return relative to the column's best and worst
    anchor (columns differ in scale), text = mean ± CI, own-weight cells outlined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    mean, ci = cross.matrix()
    spread = mean.max(axis=0) - mean.min(axis=0)
    relative = (mean - mean.min(axis=0)) / np.where(spread > 0, spread, 1.0)
    k = len(cross.weights)
    figure = Figure(figsize=(1.6 * k + 2.0, 1.0 * k + 1.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(relative, cmap="RdYlGn", vmin=0.0, vmax=1.0)
    labels = [f"{w:g}" for w in cross.weights]
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("evaluated at weight λ")
    ax.set_ylabel("anchor trained at weight")
    ax.set_title(f"{cross.task}: return, mean ± 95% CI ({cross.episodes} episodes)", fontsize=9)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{mean[i, j]:.4g}\n± {ci[i, j]:.2g}", ha="center", va="center", fontsize=7)
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, linewidth=2))
    figure.colorbar(image, ax=ax, label="worst → best anchor in the column")
    figure.tight_layout()
    return figure


def _log_tensorboard(cross: CrossEval, log_dir: Path, figure: Any) -> None:
    """Each anchor's return against the weight index, the heat map and the warnings."""
    from torch.utils.tensorboard import SummaryWriter

    mean, _ = cross.matrix()
    writer = SummaryWriter(str(log_dir))
    try:
        for i, weight in enumerate(cross.weights):
            for j in range(len(cross.weights)):
                writer.add_scalar(f"cross_eval/anchor_w={weight:g}", mean[i, j], global_step=j)
        writer.add_figure("cross_eval/heatmap", figure, close=False)
        writer.add_text("cross_eval/warnings", "\n".join(f"- {m}" for m in cross.warnings) or "none")
    finally:
        writer.close()


def print_report(cross: CrossEval, console: Any = None) -> None:
    """Print the matrix as a rich table (own-weight cells bold, red where beaten; the best anchor
    of each column green) followed by the warnings.

    :param console: a ``rich.console.Console``; a new one on stdout when ``None``.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    mean, ci = cross.matrix()
    wmean, wci = cross.weighted_sums()
    table = Table(title=f"{cross.task}: anchors (rows) at anchor weights (columns), return mean ± 95% CI, {cross.episodes} episodes")
    table.add_column("anchor w")
    for w in cross.weights:
        table.add_column(f"at λ={w:g}", justify="right")
    table.add_column(f"Σ {cross.weighted} / episode", justify="right")
    best = mean.argmax(axis=0)
    beaten = {i for i, *_ in cross.beaten()}
    for i, w in enumerate(cross.weights):
        cells = []
        for j in range(len(cross.weights)):
            style = "green" if best[j] == i else ""
            if i == j:
                style = "bold red" if i in beaten else f"bold {style}".strip()
            text = f"{mean[i, j]:.4g} ± {ci[i, j]:.2g}"
            cells.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(f"{w:g}", *cells, f"{wmean[i]:.4g} ± {wci[i]:.2g}")
    console.print(table)
    for message in cross.warnings:
        console.print(f"[bold red]warning:[/] {escape(message)}", highlight=False)
    if not cross.warnings:
        console.print("anchor check passed: no anchor is beaten at its own weight" + (", weighted component monotone" if cross.monotone else ""))
