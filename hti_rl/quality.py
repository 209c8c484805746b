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

from hti_rl.cross_eval import MIN_EPISODES, CrossEval, cross_evaluate, stale_reason
from hti_rl.errors import AnchorError
from hti_rl.io import RunLock, atomic_write
from hti_rl.quality_report import heatmap, log_tensorboard
from hti_rl.runs import DEFAULT_ROOT, RunDir, read_meta
from hti_rl.seeds import cross_eval_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage

logger = logging.getLogger(__name__)


@stage
def check_anchors(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT, force: bool = False, log_warnings: bool = True,
                  episodes: int | None = None, seed: int | None = None) -> CrossEval:
    """Cross-evaluate the anchors (unless ``cross_eval.json`` is up to date) and write the results.

    Writes ``cross_eval.json`` and ``cross_eval.png`` atomically and logs the matrix to TensorBoard
    (``runs/<task>/tb/cross_eval``), holding the anchors' run lock while it evaluates. With other
    ``episodes`` or ``seed`` than the defaults the anchors are evaluated on those episodes and nothing is
    written: ``cross_eval.json`` (the gate of ``hti-rl fit``) keeps the default start states.

    :param spec: the task spec; all its anchors must be trained.
    :param run_root: root of the run directories.
    :param force: evaluate again even when the file is up to date.
    :param log_warnings: log each failed check (``logging`` warning of ``hti_rl.quality``).
    :param episodes: episodes per anchor (default ``max(spec.eval_episodes, 10)``).
    :param seed: reset seed of the first episode (default :func:`hti_rl.seeds.cross_eval_seed`).
    :return: the cross-evaluation, checked with the spec's ``monotone_weighted_component``.
    :raises AnchorError: an anchor is missing or belongs to another version of the spec.
    :raises RunLockedError: anchors of this task are being trained or recorded.
    """
    path = RunDir.of(spec, run_root).cross_eval
    if not is_default(spec, episodes, seed):
        with RunLock(RunDir.of(spec, run_root).anchors, "hti-rl check-anchors"):
            cross = cross_evaluate(spec, run_root, episodes, seed)
    elif force or stale_reason(spec, run_root) is not None:
        with RunLock(RunDir.of(spec, run_root).anchors, "hti-rl check-anchors"):
            cross = cross_evaluate(spec, run_root)
            cross.save(path)
            figure = heatmap(cross)
            with atomic_write(path.with_suffix(".png")) as f:
                figure.savefig(f, format="png", dpi=120)
            log_tensorboard(cross, RunDir.of(spec, run_root).tb("cross_eval"), figure)
    else:
        cross = dataclasses.replace(CrossEval.load(path), monotone=spec.monotone_weighted_component)
    if log_warnings:
        for message in cross.warnings:
            logger.warning("anchor check: %s", message)
    return cross


def is_default(spec: TaskSpec, episodes: int | None, seed: int | None) -> bool:
    """Whether ``episodes`` and ``seed`` are the cross-evaluation's defaults (``None`` stands for the default)."""
    return episodes in (None, max(spec.eval_episodes, MIN_EPISODES)) and seed in (None, cross_eval_seed(spec))


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
    imported = [w for w in spec.anchors if (read_meta(RunDir.of(spec, run_root).anchor(w)) or {}).get("imported")]
    if imported:  # train-anchors --force would replace the user's own agents
        weights = ", ".join(f"{w:g}" for w in imported)
        fix = (f"Fix: import better agents for the anchors named above (`hti-rl import-anchors {where} --anchor W=PATH --force`; "
               f"w={weights} {'is' if len(imported) == 1 else 'are'} your own imported agents, which "
               f"`hti-rl train-anchors --force` would replace with agents trained here); or pass --accept-anchors to fit on them anyway.")
    else:
        fix = (f"Fix: retrain them with more steps (n_timesteps) or more seeds per anchor (e.g. seeds_per_anchor: 3) in {where} "
               f"and run `hti-rl train-anchors {where} --force`; or pass --accept-anchors to fit on them anyway.")
    raise AnchorError(f"the anchors of task {spec.name!r} failed the quality check ({RunDir.of(spec, run_root).cross_eval}):\n{listed}\n{fix}")
