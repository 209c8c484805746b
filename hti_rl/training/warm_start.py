"""A training run at one weight that starts from a given SB3 model (a warm start), or from scratch.

``hti-rl refine`` (:mod:`hti_rl.refine`) and the refining rows of ``hti-rl compare`` train such runs:
the deployed candidate or the nearest anchor continued at a new weight, or a short run from scratch for
the same budget. :class:`WarmStartJob` reuses the anchor job machinery (:func:`hti_rl.training.jobs.train_anchor`:
checkpoints, resume after SIGKILL, TensorBoard, ``meta.json`` written last); only where it starts, how
long it trains and where it writes differ.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hti_rl.errors import HTIError
from hti_rl.io import RunLock
from hti_rl.sb3io.safe_pickle import load_vecnormalize
from hti_rl.sb3io.safe_sb3 import load_sb3
from hti_rl.training.jobs import CHECKPOINTS_PER_RUN, AnchorJob, checkpoint_steps
from hti_rl.training.runner import run_jobs

MAX_BUDGET_FACTOR = 20.0  # a refine of over 20 anchor budgets is a typo, not a refine


@dataclass(frozen=True, kw_only=True)
class WarmStartJob(AnchorJob):
    """Train at ``at_weight`` for ``steps`` environment steps into ``out``, from ``start_model`` (its
    policy, value function and optimiser state; its VecNormalize statistics ``start_vecnormalize``, kept
    updating) or, when ``start_model`` is ``None``, from scratch.

    :param at_weight: the reward weight trained at.
    :param steps: the run's budget (environment steps, counted from the start).
    :param out: the run's directory.
    :param name: the run's name (its progress key and TensorBoard run).
    :param job_seed: the run's seed.
    :param start_model: an SB3 ``model.zip`` to start from, or ``None``.
    :param start_vecnormalize: its ``vecnormalize.pkl``/``.json``, or ``None``.
    :param provenance: what ``meta.json`` says of the run (``meta["warm_start"]``).
    """

    at_weight: float
    steps: int
    out: str
    name: str
    job_seed: int
    start_model: str | None = None
    start_vecnormalize: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def weight(self) -> float:
        return self.at_weight

    @property
    def key(self) -> tuple[Any, ...]:
        return ("warm", self.name)

    @property
    def seed(self) -> int:
        return self.job_seed

    @property
    def directory(self) -> Path:
        return Path(self.out)

    @property
    def tb_name(self) -> str:
        return self.name

    def budget(self, hp: dict[str, Any]) -> int:
        return self.steps

    def extra_meta(self) -> dict[str, Any]:
        return {"warm_start": {**self.provenance, "budget_steps": self.steps, "start_model": self.start_model is not None}}

    def create_model(self, venv: Any, hp: dict[str, Any], tensorboard_log: str) -> Any:
        if self.start_model is None:
            return super().create_model(venv, hp, tensorboard_log)
        if self.start_vecnormalize is not None:
            venv = load_vecnormalize(self.start_vecnormalize, venv, training=True)
        model = load_sb3(self.spec.sb3_algo(), self.start_model, venv, hp, env=venv, device="cpu", tensorboard_log=tensorboard_log)
        model.num_timesteps = 0  # the run's own budget counts from here
        model.set_random_seed(self.seed)
        return model


def warm_start_job(*, spec: Any, at_weight: float, steps: int, out: Path, name: str, seed: int, run_root: str | Path,
                   start_model: Path | None = None, start_vecnormalize: Path | None = None,
                   provenance: dict[str, Any] | None = None) -> WarmStartJob:
    """A :class:`WarmStartJob` checkpointing ten times over its budget.

    :raises HTIError: ``steps`` is not positive.
    """
    if int(steps) < 1:
        raise HTIError(f"a warm-start run needs a positive budget, got {steps} steps.")
    return WarmStartJob(spec=spec, index=0, run_root=str(run_root), checkpoint_every=max(int(steps) // CHECKPOINTS_PER_RUN, 1),
                        at_weight=float(at_weight), steps=int(steps), out=str(out), name=name, job_seed=int(seed),
                        start_model=None if start_model is None else str(start_model),
                        start_vecnormalize=None if start_vecnormalize is None else str(start_vecnormalize),
                        provenance=dict(provenance or {}))


def train_warm_starts(jobs: list[WarmStartJob], workers: int = 1, progress: bool = True, description: str = "refine") -> None:
    """Train (or resume) every unfinished job, ``workers`` at once; finished ones (``meta.json``) are skipped."""
    todo = [job for job in jobs if not (job.directory / "meta.json").exists()]
    if not todo:
        return
    with ExitStack() as locks:
        for job in todo:
            locks.enter_context(RunLock(job.directory, f"hti-rl {description}"))
        run_jobs(todo, workers, sum(job.steps for job in todo), progress, description=description,
                 start={job.key: checkpoint_steps(job) for job in todo})
