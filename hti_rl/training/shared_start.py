"""Shared-start anchors: one base agent, fine-tuned at each anchor weight ("rewarded soups").

Rewarded soups (Ramé et al., NeurIPS 2023) train the anchors as fine-tunes of one shared starting
policy; such fine-tunes stay linearly connected in parameter space, so their weights can be averaged
(:class:`hti_rl.methods.baselines.ParameterInterpolation`). A spec with ``shared_start`` (or
``hti-rl train-anchors --shared-start``) trains its anchors that way:

1. the base: the task's algorithm and hyperparameters at ``shared_start.weight`` for
   ``shared_start.base_steps`` steps (:class:`BaseJob`);
2. each anchor: a copy of the base (policy, value function, optimiser state) trained at its own weight
   for ``shared_start.finetune_steps`` steps (:class:`FinetuneJob`). The base's VecNormalize statistics
   are frozen for the fine-tunes (observations and rewards scaled as for the base), so every anchor sees
   the same inputs: their networks are comparable parameter by parameter.

Both steps reuse the anchor job machinery (:func:`hti_rl.training.jobs.train_anchor`: checkpoints, resume,
TensorBoard, ``meta.json`` written last). Layout of ``runs/<task>/shared/`` (the shared-start spec's
``RunDir``; the dataset, surrogate and TensorBoard logs sit beside the anchors as for any task)::

    anchors/.lock
    anchors/base/model.zip            the base (+ vecnormalize.pkl, checkpoints/ while training)
    anchors/base/meta.json            an anchor's meta, plus shared_start: {role: base, weight, budgets}
    anchors/w=<λ>/model.zip           the fine-tune at λ (+ vecnormalize.pkl: the base's statistics)
    anchors/w=<λ>/meta.json           plus shared_start: {role: finetune, base weight, budgets, base_sha256}
    tb/shared_base_w=<λ>_1/, tb/finetune_w=<λ>_1/

``base_sha256`` (the SHA-256 of the base's ``model.zip``) ties each fine-tune to its base: a fine-tune
of another base is refused, and :func:`hti_rl.training.store.load_anchor_actor` stamps it on the anchor actor
(``actor.arch["source"]["shared_start"]``) so that a policy can tell fine-tunes of one start apart
from unrelated networks.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.errors import AnchorError, HTIError
from hti_rl.io import RunLock, sha256_file
from hti_rl.runs import DEFAULT_ROOT, RunDir, read_meta
from hti_rl.sb3io.safe_pickle import load_vecnormalize
from hti_rl.sb3io.safe_sb3 import load_sb3
from hti_rl.seeds import base_seed, finetune_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.jobs import CHECKPOINTS_PER_RUN, AnchorJob, checkpoint_steps
from hti_rl.training.runner import run_jobs


def shared_settings(spec: TaskSpec) -> dict[str, Any]:
    """The spec's shared start as plain data: ``{weight, base_steps, finetune_steps}``."""
    shared = _require_shared(spec)
    return {"weight": shared.weight, "base_steps": shared.base_steps, "finetune_steps": shared.finetune_steps}


def total_steps(spec: TaskSpec) -> int:
    """Environment steps of all shared-start anchors: the base's plus every fine-tune's."""
    shared = _require_shared(spec)
    return shared.base_steps + len(spec.anchors) * shared.finetune_steps


@dataclass(frozen=True, kw_only=True)
class BaseJob(AnchorJob):
    """The shared start: the task's agent trained at ``shared_start.weight`` for ``base_steps``."""

    @property
    def weight(self) -> float:
        return self.spec.shared_start.weight

    @property
    def key(self) -> tuple[Any, ...]:
        return ("base",)

    @property
    def seed(self) -> int:
        return base_seed(self.spec)

    @property
    def directory(self) -> Path:
        return RunDir.of(self.spec, self.run_root).base

    @property
    def tb_name(self) -> str:
        return f"shared_base_w={self.weight:g}"

    def budget(self, hp: dict[str, Any]) -> int:
        return self.spec.shared_start.base_steps

    def extra_meta(self) -> dict[str, Any]:
        return {"shared_start": {"role": "base", **shared_settings(self.spec)},
                "model_sha256": sha256_file(self.directory / "model.zip")}


@dataclass(frozen=True, kw_only=True)
class FinetuneJob(AnchorJob):
    """Anchor ``index`` as a fine-tune of the finished base: ``finetune_steps`` at the anchor's weight,
    starting from the base's model and optimiser, with the base's VecNormalize statistics frozen.

    :param at_weight: fine-tune at this weight instead, into ``runs/<task>/shared/finetuned/w=<λ>/``
        (a held-out weight: the agent a comparison measures shared-start methods against).
    """

    at_weight: float | None = None

    @property
    def weight(self) -> float:
        return self.spec.anchors[self.index] if self.at_weight is None else self.at_weight

    @property
    def key(self) -> tuple[Any, ...]:
        return ("finetune", self.weight)

    @property
    def seed(self) -> int:
        if self.at_weight is None:
            return super().seed
        bits = int(np.float64(self.at_weight).view(np.uint64) % 2**32)
        return finetune_seed(self.spec, bits)

    @property
    def directory(self) -> Path:
        return super().directory if self.at_weight is None else RunDir.of(self.spec, self.run_root).finetuned(self.at_weight)

    @property
    def tb_name(self) -> str:
        return f"finetune_w={self.weight:g}"

    @property
    def updates_normalizer(self) -> bool:
        return False

    def budget(self, hp: dict[str, Any]) -> int:
        return self.spec.shared_start.finetune_steps

    def create_model(self, venv: Any, hp: dict[str, Any], tensorboard_log: str) -> Any:
        base = RunDir.of(self.spec, self.run_root).base
        if (base / "vecnormalize.pkl").exists():
            venv = load_vecnormalize(base / "vecnormalize.pkl", venv, training=False)
        model = load_sb3(self.spec.sb3_algo(), base / "model.zip", venv, hp, env=venv, device="cpu", tensorboard_log=tensorboard_log)
        model.num_timesteps = 0  # the fine-tune's own budget counts from here
        model.set_random_seed(self.seed)
        return model

    def extra_meta(self) -> dict[str, Any]:
        base = read_meta(RunDir.of(self.spec, self.run_root).base) or {}
        return {"shared_start": {"role": "finetune", **shared_settings(self.spec), "base_sha256": base.get("model_sha256"),
                                 "base_seed": base.get("seed")}}


def train_shared_anchors(
    spec: TaskSpec,
    run_root: str | Path = DEFAULT_ROOT,
    workers: int = 1,
    backend: str = "local",
    force: bool = False,
    progress: bool = True,
    checkpoint_every: int | None = None,
) -> list[dict[str, Any]]:
    """Train (or resume) the base, then fine-tune it at every anchor weight (``workers`` at once).

    Called by :func:`hti_rl.training.anchors.train_anchors` for a spec with ``shared_start``; the arguments are
    that function's. Finished stages are skipped unless ``force``.

    :return: every anchor's ``meta.json``, in weight order.
    :raises AnchorError: a finished fine-tune descends from another base than the one on disk.
    :raises RunLockedError: another process is training this task's shared-start anchors.
    """
    shared = _require_shared(spec)
    if int(workers) < 1:
        raise HTIError(f"workers must be ≥ 1, got {workers}.")
    base = BaseJob(spec=spec, index=0, run_root=str(run_root), checkpoint_every=int(checkpoint_every or max(shared.base_steps // CHECKPOINTS_PER_RUN, 1)))
    finetunes = [FinetuneJob(spec=spec, index=i, run_root=str(run_root), checkpoint_every=int(checkpoint_every or max(shared.finetune_steps // CHECKPOINTS_PER_RUN, 1)))
                 for i in range(len(spec.anchors))]
    with RunLock(RunDir.of(spec, run_root).anchors, "hti-rl train-anchors --shared-start"):
        if force:
            for job in (base, *finetunes):
                (job.directory / "meta.json").unlink(missing_ok=True)
                shutil.rmtree(job.directory / "checkpoints", ignore_errors=True)
        if not (base.directory / "meta.json").exists():
            run_jobs([base], 1, shared.base_steps, progress, description="train shared base",
                     start={base.key: checkpoint_steps(base)}, backend=backend)
        base_sha = read_meta(base.directory)["model_sha256"]
        for job in finetunes:
            meta = read_meta(job.directory)
            if meta is not None and meta.get("shared_start", {}).get("base_sha256") != base_sha:
                raise AnchorError(
                    f"anchor w={job.weight:g} in {job.directory} was not fine-tuned from the base in {base.directory}; "
                    f"retrain every shared-start anchor with `hti-rl train-anchors {spec.path} --shared-start --force`."
                )
        todo = [job for job in finetunes if not RunDir.of(spec, run_root).is_finished(job.weight)]
        run_jobs(todo, workers, shared.finetune_steps * len(todo), progress, description="fine-tune anchors",
                 start={job.key: checkpoint_steps(job) for job in todo}, backend=backend)
        return [read_meta(RunDir.of(spec, run_root).anchor(w)) for w in spec.anchors]


def train_finetuned(spec: TaskSpec, weights: Any, run_root: str | Path = DEFAULT_ROOT, workers: int = 1, progress: bool = True) -> list[dict[str, Any]]:
    """Fine-tune the finished base at each of ``weights`` (as an anchor would be, in ``RunDir.finetuned``);
    finished ones are skipped. A comparison's reference for shared-start methods at held-out weights.

    :return: every agent's ``meta.json``, in the order of ``weights``.
    :raises AnchorError: the base is not trained.
    """
    shared = _require_shared(spec)
    base_sha = load_base_meta(spec, run_root)["model_sha256"]
    every = max(shared.finetune_steps // CHECKPOINTS_PER_RUN, 1)
    jobs = [FinetuneJob(spec=spec, index=0, run_root=str(run_root), checkpoint_every=every, at_weight=float(w)) for w in weights]
    with RunLock(RunDir.of(spec, run_root).finetuned_root, "hti-rl compare (fine-tunes at held-out weights)"):
        for job in jobs:
            meta = read_meta(job.directory)
            if meta is not None and meta.get("shared_start", {}).get("base_sha256") != base_sha:
                (job.directory / "meta.json").unlink()  # a fine-tune of an older base: redo it
        todo = [job for job in jobs if not (job.directory / "meta.json").exists()]
        run_jobs(todo, workers, shared.finetune_steps * len(todo), progress, description="fine-tune at held-out weights",
                 start={job.key: checkpoint_steps(job) for job in todo})
    return [read_meta(job.directory) for job in jobs]


def load_base_meta(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """The finished base's ``meta.json``.

    :raises AnchorError: the base is not trained.
    """
    path = RunDir.of(spec, run_root).base / "meta.json"
    if not path.exists():
        raise AnchorError(f"the shared start of task {spec.name!r} is not trained ({path} is missing); "
                          f"run `hti-rl train-anchors {spec.path} --shared-start`.")
    return json.loads(path.read_text())


def _require_shared(spec: TaskSpec) -> Any:
    if getattr(spec, "shared_start", None) is None:
        raise HTIError(f"task {spec.name!r} has no shared start; use spec.with_shared_start() or `--shared-start`.")
    return spec.shared_start
