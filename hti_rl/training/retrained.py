"""Agents retrained from scratch at held-out weights: the ground truth of ``hti-rl compare``
(``runs/<task>/retrained/w=<λ>/seed=<i>/``), trained with the anchors' job machinery."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hti_rl.io import RunLock
from hti_rl.runs import RunDir
from hti_rl.seeds import retrain_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.anchors import train_anchors
from hti_rl.training.jobs import AnchorJob
from hti_rl.training.runner import run_jobs


@dataclass(frozen=True)
class RetrainJob(AnchorJob):
    """An agent trained from scratch at held-out weight ``retrain_weight``, as an anchor would be (same
    algorithm, budget, hyperparameters, checkpoints and resume), in :func:`retrained_dir`.

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
        return f"retrained_w={self.retrain_weight:g}_seed{self.retrain_seed}"


def train_retrained(spec: Any, seeds: int, run_root: str | Path = "runs", workers: int = 1, progress: bool = True,
                    backend: str = "local") -> list[dict]:
    """Train (or resume) ``seeds`` agents at every held-out weight; finished ones are skipped.

    :param backend: ``"local"`` (processes) or ``"ray"``, as for :func:`~hti_rl.training.anchors.train_anchors`.
    :return: every retrained agent's ``meta.json`` (held-out weight order, then seed order).
    """
    total = int(spec.hyperparams()["n_timesteps"])
    every = max(total // 10, 1)
    jobs = [RetrainJob(spec, 0, str(run_root), every, None, w, i) for w in spec.held_out for i in range(seeds)]
    with RunLock(RunDir.of(spec, run_root).retrained_root, "hti-rl compare (retrained agents)"):
        todo = [job for job in jobs if not (job.directory / "meta.json").exists()]
        run_jobs(todo, workers, total * len(todo), progress, description="retrain", backend=backend)
    return [json.loads((job.directory / "meta.json").read_text()) for job in jobs]


def train_all(spec: TaskSpec, retrained_seeds: int, run_root: str | Path = "runs", workers: int = 1, progress: bool = True,
              backend: str = "local") -> None:
    """Anchors and retrained agents at once: ``workers`` processes (or Ray tasks) shared in proportion to their jobs."""

    n_anchor = sum(not RunDir.of(spec, run_root).is_finished(w) for w in spec.anchors) * max(spec.seeds_per_anchor, 1)
    n_retrain = sum(not (RunDir.of(spec, run_root).retrained(w, i) / "meta.json").exists() for w in spec.held_out for i in range(retrained_seeds))
    if workers <= 1 or n_anchor == 0 or n_retrain == 0:
        train_anchors(spec, run_root, workers=workers, progress=progress, backend=backend)
        train_retrained(spec, retrained_seeds, run_root, workers=workers, progress=progress, backend=backend)
        return
    w_anchor = min(n_anchor, max(1, round(workers * n_anchor / (n_anchor + n_retrain))))
    w_retrain = max(1, workers - w_anchor)
    errors: list[BaseException] = []

    def anchors() -> None:
        try:
            train_anchors(spec, run_root, workers=w_anchor, progress=progress, backend=backend)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=anchors)
    thread.start()
    try:
        train_retrained(spec, retrained_seeds, run_root, workers=w_retrain, progress=progress, backend=backend)
    finally:
        thread.join()
    if errors:
        raise errors[0]
