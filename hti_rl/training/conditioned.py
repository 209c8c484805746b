"""A peer baseline: one weight-conditioned agent, trained with the anchors' total compute.

What a user would do instead of hti-rl (docs/method.md §9.3): train a single SB3 agent (the task's
algorithm and hyperparameters) whose observation carries the reward weight
(:class:`hti_rl.envs.wrappers.WeightInObservation`: ``log λ`` on a log-scale task), the weight drawn per
episode uniformly in that coordinate over the anchor range. Its budget is what the anchors cost,
number of anchors × ``n_timesteps``, times a factor F (``conditioned`` is F = 1, ``conditioned_x2``
F = 2 in ``hti-rl compare``).

Training reuses the anchors' job machinery (:func:`hti_rl.training.jobs.train_anchor`: checkpoints, resume,
TensorBoard, ``meta.json`` written last) through :class:`ConditionedJob`, which only changes the env,
the budget, the seed and the directory. Layout of ``runs/<task>/``::

    conditioned/.lock                 held while training
    conditioned/f=<F>/model.zip       the agent (its observation: the env's + the weight coordinate)
    conditioned/f=<F>/vecnormalize.pkl
    conditioned/f=<F>/meta.json       an anchor's meta, plus budget_factor, budget, weight_range, weight_scale
    conditioned/f=<F>/checkpoints/    as an anchor's, removed when finished
    tb/conditioned_f=<F>_1/           TensorBoard

:class:`ConditionedPolicy` wraps the agent in the :class:`~hti_rl.methods.base.AnchoredPolicy` interface
(``set_weight``, ``predict`` on raw env observations, ``save``/``load``), so that ``hti-rl compare``
evaluates it like every other method; it appends the weight coordinate to each observation itself.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hti_rl.envs.wrappers import GridWeightInObservation, WeightInObservation
from hti_rl.errors import AnchorError, HTIError
from hti_rl.io import RunLock
from hti_rl.runs import DEFAULT_ROOT, RunDir
from hti_rl.seeds import conditioned_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.jobs import CHECKPOINTS_PER_RUN, AnchorJob
from hti_rl.training.runner import run_jobs


def conditioned_budget(spec: TaskSpec, factor: float) -> int:
    """Steps of the conditioned agent: number of anchors × ``n_timesteps`` × ``factor`` (rounded).

    :raises HTIError: ``factor`` is not a positive finite number.
    """
    factor = _check_factor(factor)
    return int(round(len(spec.anchors) * int(spec.hyperparams()["n_timesteps"]) * factor))


def make_conditioned_env(spec: TaskSpec, weight: Any = None, seed: int | None = None) -> WeightInObservation | GridWeightInObservation:
    """The spec's env with the weight in its observation: sampled per episode over the anchor range
    (``weight=None``: training) or fixed at ``weight`` (evaluation).

    :param seed: seeds the weight draws (a ``reset(seed=...)`` reseeds them).
    """
    if spec.is_vector:  # the weight vector in the observation, one coordinate per axis
        return GridWeightInObservation(spec.make_env(spec.anchors[0] if weight is None else weight), spec.grid, fixed=weight, seed=seed)
    return WeightInObservation(
        spec.make_env(spec.anchors[0] if weight is None else weight),
        weight_range=(spec.anchors[0], spec.anchors[-1]),
        scale=spec.weight_scale,
        fixed=weight,
        seed=seed,
    )


@dataclass(frozen=True, kw_only=True)
class ConditionedJob(AnchorJob):
    """The conditioned agent of budget factor ``factor`` as an anchor job: same algorithm,
    hyperparameters, checkpoints and resume; its own env (:func:`make_conditioned_env`), budget
    (:func:`conditioned_budget`), seed and directory (``RunDir.conditioned``).

    :param factor: the budget factor F.
    """

    factor: float = 1.0

    @property
    def weight(self) -> None:  # type: ignore[override]
        """No single weight: every episode draws its own."""
        return None

    @property
    def key(self) -> tuple[Any, ...]:
        return ("conditioned", self.factor)

    @property
    def seed(self) -> int:
        return conditioned_seed(self.spec, self.factor)

    @property
    def directory(self) -> Path:
        return RunDir.of(self.spec, self.run_root).conditioned(self.factor)

    @property
    def tb_name(self) -> str:
        return f"conditioned_f={self.factor:g}"

    def make_env(self) -> WeightInObservation | GridWeightInObservation:
        return make_conditioned_env(self.spec)

    def budget(self, hp: dict[str, Any]) -> int:
        return conditioned_budget(self.spec, self.factor)

    def extra_meta(self) -> dict[str, Any]:
        return {"budget_factor": self.factor, "budget": conditioned_budget(self.spec, self.factor),
                "weight_range": [list(self.spec.anchors[0]), list(self.spec.anchors[-1])] if self.spec.is_vector
                else [self.spec.anchors[0], self.spec.anchors[-1]],
                "weight_scale": list(self.spec.weight_scale) if self.spec.is_vector else self.spec.weight_scale}


def train_conditioned(
    spec: TaskSpec,
    factors: Sequence[float] = (1.0,),
    run_root: str | Path = DEFAULT_ROOT,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
    checkpoint_every: int | None = None,
) -> list[dict[str, Any]]:
    """Train (or resume) one conditioned agent per budget factor; finished ones are skipped unless ``force``.

    :param spec: the task spec.
    :param factors: budget factors F (budget = anchors × ``n_timesteps`` × F).
    :param run_root: root of the run directories.
    :param workers: agents trained at once (local processes, one torch thread each).
    :param force: retrain finished agents and discard checkpoints.
    :param progress: show a progress bar of steps.
    :param checkpoint_every: steps between checkpoints; a tenth of each budget when ``None``.
    :return: every agent's ``meta.json``, in the order of ``factors``.
    :raises RunLockedError: another process is training this task's conditioned agents.
    """
    factors = list(dict.fromkeys(_check_factor(f) for f in factors))
    if int(workers) < 1:
        raise HTIError(f"workers must be ≥ 1, got {workers}.")
    jobs = [ConditionedJob(spec=spec, index=0, run_root=str(run_root), factor=f,
                           checkpoint_every=int(checkpoint_every or max(conditioned_budget(spec, f) // CHECKPOINTS_PER_RUN, 1)))
            for f in factors]
    with RunLock(RunDir.of(spec, run_root).conditioned_root, "hti-rl train-conditioned"):
        if force:
            for job in jobs:
                (job.directory / "meta.json").unlink(missing_ok=True)
                shutil.rmtree(job.directory / "checkpoints", ignore_errors=True)
        for job in jobs:
            check_conditioned_meta(spec, job.directory, job.factor, missing_ok=True)
        todo = [job for job in jobs if not (job.directory / "meta.json").exists()]
        run_jobs(todo, workers, sum(conditioned_budget(spec, job.factor) for job in todo), progress,
                 description="train conditioned")
    return [json.loads((job.directory / "meta.json").read_text()) for job in jobs]


def _check_factor(factor: Any) -> float:
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise HTIError(f"budget factor {factor!r} is not a number; give a positive number (1 = the anchors' total steps).") from None
    if not np.isfinite(value) or value <= 0:
        raise HTIError(f"budget factor {factor!r} must be a positive finite number (1 = the anchors' total steps).")
    return value


def check_conditioned_meta(spec: TaskSpec, directory: Path, factor: float, missing_ok: bool = False) -> None:
    path = directory / "meta.json"
    hint = f"`hti-rl train-conditioned {spec.path} --budget-factor {factor:g}`"
    if not path.exists():
        if missing_ok:
            return
        raise AnchorError(f"the conditioned agent of task {spec.name!r} with budget factor {factor:g} is not trained ({path} is missing); run {hint}.")
    if json.loads(path.read_text()).get("task_fingerprint") != spec.fingerprint():
        raise AnchorError(f"{directory} was trained for another version of task {spec.name!r}; retrain it with {hint} --force.")
