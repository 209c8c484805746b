"""Agents retrained from scratch at held-out weights: the ground truth of ``hti-rl compare``
(``runs/<task>/retrained/w=<λ>/seed=<i>/``), trained with the anchors' job machinery."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hti_rl.io import RunLock
from hti_rl.runs import DEFAULT_ROOT, RunDir, weight_label
from hti_rl.seeds import retrain_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.anchors import anchor_jobs, keep_best_seed
from hti_rl.training.jobs import CHECKPOINTS_PER_RUN, AnchorJob, checkpoint_steps
from hti_rl.training.runner import run_jobs


@dataclass(frozen=True, kw_only=True)
class RetrainJob(AnchorJob):
    """An agent trained from scratch at held-out weight ``retrain_weight``, as an anchor would be (same
    algorithm, budget, hyperparameters, checkpoints and resume), in ``RunDir.retrained``.

    :param retrain_weight: the held-out weight.
    :param retrain_seed: which of the experiment's retrained seeds.
    """

    retrain_weight: float = 0.0
    retrain_seed: int = 0

    @property
    def weight(self) -> float:
        return self.retrain_weight

    @property
    def key(self) -> tuple[Any, ...]:
        return ("retrained", self.retrain_weight, self.retrain_seed)

    @property
    def seed(self) -> int:
        index = list(self.spec.held_out).index(self.retrain_weight)
        return retrain_seed(self.spec, index, self.retrain_seed)

    @property
    def directory(self) -> Path:
        return RunDir.of(self.spec, self.run_root).retrained(self.retrain_weight, self.retrain_seed)

    @property
    def tb_name(self) -> str:
        return f"retrained_w={weight_label(self.retrain_weight)}_seed{self.retrain_seed}"


def retrain_jobs(spec: TaskSpec, seeds: int, run_root: str | Path) -> list[RetrainJob]:
    """One job per held-out weight and retrained seed (finished ones included), in that order."""
    every = max(int(spec.hyperparams()["n_timesteps"]) // CHECKPOINTS_PER_RUN, 1)
    return [RetrainJob(spec=spec, index=0, run_root=str(run_root), checkpoint_every=every, retrain_weight=w, retrain_seed=i)
            for w in spec.held_out for i in range(seeds)]


def train_all(spec: TaskSpec, retrained_seeds: int, run_root: str | Path = DEFAULT_ROOT, workers: int = 1, progress: bool = True,
              backend: str = "local") -> None:
    """Anchors and retrained agents as one pool of jobs over ``workers`` processes or Ray tasks (``backend``;
    in this process when 1).

    One pool, not two running side by side: two trainings in one process share the global RNGs that SB3
    seeds and samples from, so their results would depend on how the threads interleave (measured: two
    runs of ``hti-rl compare experiments/lqr2d.yaml`` with --workers 2 gave other anchors each time).
    """
    total = int(spec.hyperparams()["n_timesteps"])
    run = RunDir.of(spec, run_root)
    with RunLock(run.anchors, "hti-rl train-anchors"), RunLock(run.retrained_root, "hti-rl compare (retrained agents)"):
        anchors, choose = anchor_jobs(spec, run_root)
        retrained = [job for job in retrain_jobs(spec, retrained_seeds, run_root) if not (job.directory / "meta.json").exists()]
        todo = anchors + retrained
        run_jobs(todo, workers, total * len(todo), progress, description="train anchors + retrained",
                 start={job.key: checkpoint_steps(job) for job in todo}, backend=backend)
        for index in choose:
            keep_best_seed(spec, index, run_root)
