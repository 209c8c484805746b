"""Train one SB3 agent per anchor weight, in parallel, resumably; load trained anchors.

Layout of ``runs/<task>/``::

    anchors/.lock                     held while training (RunLock)
    anchors/w=<λ>/model.zip           the trained agent
    anchors/w=<λ>/vecnormalize.pkl    its VecNormalize statistics (when the task normalises)
    anchors/w=<λ>/meta.json           written last: the anchor is finished
    anchors/w=<λ>/checkpoints/        model_<steps>.zip, vecnormalize_<steps>.pkl, latest.json
                                      (removed once the anchor is finished)
    anchors/w=<λ>/seeds/<i>/          with ``seeds_per_anchor`` > 1: seed i's run, laid out as above
    tb/anchor_w=<λ>_1/                TensorBoard logs (``anchor_w=<λ>_seed<i>_1/`` per seed)

Anchors can also be agents a user already has (:mod:`hti_rl.training.importing`, ``hti-rl import-anchors``):
their ``meta.json`` has an ``imported`` entry, and the directory holds ``actor.pt`` (tensors only) and
``vecnormalize.json`` (hti-rl's own format) beside the copied ``model.zip``. Every ``vecnormalize.pkl``
is read with :mod:`hti_rl.sb3io.safe_pickle`, never with ``pickle.load``, and every ``model.zip`` (checkpoints
included) with :mod:`hti_rl.sb3io.safe_sb3`, which unpickles none of the zip's serialized settings.

An anchor whose ``meta.json`` exists is skipped unless ``force``; one with a checkpoint resumes from
it (``learn(remaining, reset_num_timesteps=False)``) after an interruption. Each anchor's seed
derives from ``spec.seed`` and its index (:func:`anchor_seed`).

With ``seeds_per_anchor`` = n > 1 every (weight, seed) is one job: each seed trains in ``seeds/<i>/``
(resumable on its own) and is then scored at its own weight (mean return of ``spec.eval_episodes``
deterministic episodes, the same episode seeds for every seed: :func:`selection_seed`). The best seed's
files are copied to ``w=<λ>/``, whose ``meta.json`` lists every seed's score, so that everything
downstream reads the chosen anchor as if it had been trained alone. Seed 0 is the run that
``seeds_per_anchor: 1`` trains.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hti_rl.errors import AnchorError, HTIError
from hti_rl.io import RunLock, atomic_write, write_json
from hti_rl.runs import DEFAULT_ROOT, RunDir, read_meta, spec_hint
from hti_rl.spec.task import TaskSpec
from hti_rl.training.jobs import (
    CHECKPOINTS_PER_RUN,
    IMPORT_ONLY_FILES,
    AnchorJob,
    checkpoint_steps,
)
from hti_rl.training.runner import run_jobs


def train_anchors(
    spec: TaskSpec,
    run_root: str | Path = DEFAULT_ROOT,
    workers: int = 1,
    backend: str = "local",
    force: bool = False,
    progress: bool = True,
    checkpoint_every: int | None = None,
) -> list[dict[str, Any]]:
    """Train one SB3 agent per anchor weight of ``spec``; skip finished anchors unless ``force``.

    :param spec: the task spec (algorithm, hyperparameters, anchors, seed).
    :param run_root: root of the run directories; anchors go to ``<run_root>/<task>/anchors/w=<λ>/``.
    :param workers: anchors trained at once (local processes, one torch thread each).
    :param backend: ``"local"`` (multiprocessing, forkserver) or ``"ray"`` (``pip install hti-rl[ray]``).
    :param force: retrain finished anchors and discard checkpoints.
    :param progress: show a progress bar of steps over all anchors.
    :param checkpoint_every: steps between checkpoints; a tenth of the budget when ``None``.
    :return: the meta data of every anchor, in weight order (finished earlier or now).
    :raises RunLockedError: another process is training this task's anchors.

    With ``spec.seeds_per_anchor`` = n > 1, each of the n seeds of an unfinished anchor is one job
    (``workers`` of them at once), and the seed scoring best at the anchor's own weight becomes the
    anchor (see the module docstring). With ``spec.shared_start`` the anchors are fine-tunes of one
    base agent (:func:`hti_rl.training.shared_start.train_shared_anchors`).
    """
    if backend not in ("local", "ray"):
        raise HTIError(f"backend {backend!r} is not one of 'local', 'ray'.")
    if int(workers) < 1:
        raise HTIError(f"workers must be ≥ 1, got {workers}.")
    if spec.shared_start is not None:
        from hti_rl.training.shared_start import train_shared_anchors

        return train_shared_anchors(spec, run_root, workers, backend, force, progress, checkpoint_every)
    total = int(spec.hyperparams()["n_timesteps"])
    with RunLock(RunDir.of(spec, run_root).anchors, "hti-rl train-anchors"):
        todo, choose = anchor_jobs(spec, run_root, force, checkpoint_every)
        run_jobs(todo, workers, total * len(todo), progress, start={job.key: checkpoint_steps(job) for job in todo},
                 backend=backend)
        for index in choose:
            keep_best_seed(spec, index, run_root)
        return [read_meta(RunDir.of(spec, run_root).anchor(w)) for w in spec.anchors]


def anchor_jobs(spec: TaskSpec, run_root: str | Path, force: bool = False,
                checkpoint_every: int | None = None) -> tuple[list[AnchorJob], list[int]]:
    """The jobs that train the unfinished anchors of ``spec`` (every seed of each with ``seeds_per_anchor`` > 1);
    with ``force``, finished anchors are discarded first. Call it holding the anchors' run lock.

    :return: (jobs to run, indices of the anchors whose best seed is chosen once they have run).
    """
    total = int(spec.hyperparams()["n_timesteps"])
    every = int(checkpoint_every or max(total // CHECKPOINTS_PER_RUN, 1))
    seeds: list[int | None] = list(range(spec.seeds_per_anchor)) if spec.seeds_per_anchor > 1 else [None]
    run = RunDir.of(spec, run_root)
    todo, choose = [], []
    for index, weight in enumerate(spec.anchors):
        directory = run.anchor(weight)
        if force:
            (directory / "meta.json").unlink(missing_ok=True)
            for name in IMPORT_ONLY_FILES:
                (directory / name).unlink(missing_ok=True)
            shutil.rmtree(directory / "checkpoints", ignore_errors=True)
            shutil.rmtree(directory / "seeds", ignore_errors=True)
        if run.is_finished(weight):
            continue
        jobs = [AnchorJob(spec=spec, index=index, run_root=str(run_root), checkpoint_every=every, seed_index=seed_index) for seed_index in seeds]
        todo += [job for job in jobs if not (job.directory / "meta.json").exists()]
        if spec.seeds_per_anchor > 1:
            choose.append(index)
    return todo, choose


def keep_best_seed(spec: TaskSpec, index: int, run_root: str | Path = DEFAULT_ROOT) -> dict[str, Any]:
    """Make the best-scoring finished seed of anchor ``index`` the anchor: copy its model (and
    VecNormalize) to ``w=<λ>/`` and write ``meta.json`` (last) with every seed's score.

    :return: the anchor's meta data: the chosen seed's, plus ``seed_index`` (the chosen one) and
        ``seeds`` (``seed_index``, ``seed``, ``steps``, ``wall_time_s``, ``return_mean``, ``return_ci``
        of every seed, in seed order).
    :raises AnchorError: a seed is unfinished, unscored, or of another spec version.
    """
    weight = spec.anchors[index]
    metas = []
    for i in range(spec.seeds_per_anchor):
        meta = read_meta(RunDir.of(spec, run_root).seed(weight, i))
        if meta is None or "selection" not in meta or meta.get("task_fingerprint") != spec.fingerprint():
            raise AnchorError(
                f"seed {i} of anchor w={weight:g} in {RunDir.of(spec, run_root).seed(weight, i)} is unfinished, unscored or of "
                f"another version of task {spec.name!r}; run `hti-rl train-anchors {spec_hint(spec)}` (add --force to start over)."
            )
        metas.append(meta)
    best = max(range(len(metas)), key=lambda i: metas[i]["selection"]["return_mean"])
    source, target = RunDir.of(spec, run_root).seed(weight, best), RunDir.of(spec, run_root).anchor(weight)
    for name in ("model.zip", "vecnormalize.pkl"):
        if (source / name).exists():
            with open(source / name, "rb") as src, atomic_write(target / name) as dst:
                shutil.copyfileobj(src, dst)
    keys = ("seed_index", "seed", "steps", "wall_time_s")
    seeds = [{**{k: m[k] for k in keys}, **{k: m["selection"][k] for k in ("return_mean", "return_ci")}} for m in metas]
    meta = {**metas[best], "seeds": seeds}
    write_json(target / "meta.json", meta)
    return meta
