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

Anchors can also be agents a user already has (:mod:`hti_rl.importing`, ``hti-rl import-anchors``):
their ``meta.json`` has an ``imported`` entry, and the directory holds ``actor.pt`` (tensors only) and
``vecnormalize.json`` (hti-rl's own format) beside the copied ``model.zip``. Every ``vecnormalize.pkl``
is read with :mod:`hti_rl.safe_pickle`, never with ``pickle.load``, and every ``model.zip`` (checkpoints
included) with :mod:`hti_rl.safe_sb3`, which unpickles none of the zip's serialized settings.

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

import json
import multiprocessing as mp
import os
import pickle
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from tqdm.auto import tqdm

from hti_rl import __version__
from hti_rl.actors import AnchorActor, actor_from_sb3
from hti_rl.errors import AnchorError, HTIError
from hti_rl.evaluate import mean_ci, returns_at, rollout_components
from hti_rl.io import RunLock, atomic_write, write_json
from hti_rl.safe_pickle import load_vecnormalize
from hti_rl.safe_sb3 import load_sb3

CHECKPOINTS_PER_RUN = 10  # default checkpoint interval: a tenth of the anchor's budget
_SELECTION_KEY = 2**32 - 1  # seeds selection episodes apart from any anchor's training seed
_IMPORT_ONLY_FILES = ("actor.pt", "vecnormalize.json")  # written by hti_rl.importing, never by training


# ----------------------------------------------------------------------------- layout
def anchors_root(spec: Any, run_root: str | Path = "runs") -> Path:
    """``runs/<task>/anchors``: the directory locked while anchors train."""
    return Path(spec.run_dir(run_root)) / "anchors"


def anchor_dir(spec: Any, weight: float, run_root: str | Path = "runs") -> Path:
    """``runs/<task>/anchors/w=<λ>`` with λ formatted by ``f"{λ:g}"``."""
    return anchors_root(spec, run_root) / f"w={weight:g}"


def seed_dir(spec: Any, weight: float, seed_index: int, run_root: str | Path = "runs") -> Path:
    """``runs/<task>/anchors/w=<λ>/seeds/<i>``: seed i's run when ``seeds_per_anchor`` > 1."""
    return anchor_dir(spec, weight, run_root) / "seeds" / str(seed_index)


def anchor_seed(spec: Any, index: int, seed_index: int = 0) -> int:
    """The training seed of anchor ``index`` (its seed ``seed_index``): a reproducible function of
    ``spec.seed``, the anchor index and the seed index; seed 0 is the single-seed anchor's."""
    keys = [spec.seed, index] + ([seed_index] if seed_index else [])
    return int(np.random.SeedSequence(keys).generate_state(1)[0] % 2**31)


def selection_seed(spec: Any) -> int:
    """Base reset seed of the episodes that score the seeds of an anchor (episode i: seed + i)."""
    return int(np.random.SeedSequence([spec.seed, _SELECTION_KEY]).generate_state(1)[0] % 2**31)


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour an artefact depends on."""
    import gymnasium
    import stable_baselines3

    return {
        "hti_rl": __version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
    }


# ----------------------------------------------------------------------------- loading
def load_anchor(spec: Any, weight: float, run_root: str | Path = "runs") -> tuple[Any, Any]:
    """Load a finished anchor (trained, or imported from an SB3 model).

    :return: ``(model, vecnormalize)``; ``vecnormalize`` is ``None`` when the anchor does not normalise,
        else a ``VecNormalize`` in evaluation mode (``training=False``, rewards not normalised), read
        without unpickling code (:mod:`hti_rl.safe_pickle`); the model is read without unpickling code
        either (:mod:`hti_rl.safe_sb3`).
    :raises AnchorError: the anchor is not trained (or not finished), was trained for another spec, or
        was imported from a callable (it has no SB3 model: use :func:`load_anchor_actor`).
    """
    from hti_rl.tasks import ALGOS

    directory, meta = _finished_meta(spec, weight, run_root)
    if not (directory / "model.zip").exists():
        raise AnchorError(
            f"anchor w={weight:g} in {directory} has no SB3 model (it was imported from a callable); "
            "read it with load_anchor_actor, or re-import an SB3 model with `hti-rl import-anchors ... --force`."
        )
    env = spec.make_env(weight)
    try:  # an imported agent was trained elsewhere: its schedules are not the spec's (they only matter for training)
        model = load_sb3(ALGOS[meta.get("algo", spec.algo)], directory / "model.zip", env, None if meta.get("imported") else spec.hyperparams())
    finally:
        env.close()
    vecnormalize = None
    for name in ("vecnormalize.json", "vecnormalize.pkl"):  # hti-rl's own format first
        if (directory / name).exists():
            vecnormalize = load_vecnormalize(directory / name, DummyVecEnv([lambda: spec.make_env(weight)]))
            break
    return model, vecnormalize


def load_anchor_actor(spec: Any, weight: float, run_root: str | Path = "runs") -> AnchorActor:
    """The finished anchor at ``weight`` as an :class:`AnchorActor` (policy + VecNormalize statistics);
    an imported anchor's is read from its tensors-only ``actor.pt`` (or its callable)."""
    directory, meta = _finished_meta(spec, weight, run_root)
    if meta.get("imported"):
        from hti_rl.importing import load_imported_actor

        return load_imported_actor(spec, weight, directory, meta)
    model, vecnormalize = load_anchor(spec, weight, run_root)
    actor = actor_from_sb3(model, vecnormalize)
    if (meta.get("shared_start") or {}).get("role") == "finetune":  # which base it descends from (hti_rl.shared_start)
        actor.arch["source"]["shared_start"] = meta["shared_start"]["base_sha256"]
    return actor


def load_agent_actor(spec: Any, directory: Path, make_env: Any) -> AnchorActor:
    """The SB3 agent trained for ``spec`` in ``directory`` (``model.zip`` + ``vecnormalize.pkl`` if any)
    as an :class:`AnchorActor`, read without unpickling code (:mod:`hti_rl.safe_sb3`,
    :mod:`hti_rl.safe_pickle`); ``make_env()`` builds the env it was trained on (for its spaces)."""
    env = make_env()
    try:
        model = load_sb3(spec.sb3_algo(), directory / "model.zip", env, spec.hyperparams())
    finally:
        env.close()
    vecnormalize = None
    if (directory / "vecnormalize.pkl").exists():
        vecnormalize = load_vecnormalize(directory / "vecnormalize.pkl", DummyVecEnv([make_env]))
    return actor_from_sb3(model, vecnormalize)


def _finished_meta(spec: Any, weight: float, run_root: str | Path) -> tuple[Path, dict[str, Any]]:
    """-> (anchor directory, its meta.json) of a finished anchor of this spec version, else AnchorError."""
    directory = anchor_dir(spec, weight, run_root)
    meta = read_meta(directory)
    if meta is None:
        raise AnchorError(
            f"anchor w={weight:g} of task {spec.name!r} is not trained ({directory / 'meta.json'} is missing). "
            f"Run `hti-rl train-anchors {_spec_hint(spec)}` (or `hti-rl import-anchors`) first."
        )
    if meta.get("task_fingerprint") != spec.fingerprint():
        raise AnchorError(
            f"anchor w={weight:g} in {directory} was trained for another version of task {spec.name!r} "
            f"(fingerprint {meta.get('task_fingerprint')}, spec has {spec.fingerprint()}). "
            f"Retrain it with `hti-rl train-anchors {_spec_hint(spec)} --force` (or re-import it with --force)."
        )
    return directory, meta


def is_finished(spec: Any, weight: float, run_root: str | Path = "runs") -> bool:
    """Whether the anchor at ``weight`` has finished training (its ``meta.json`` exists)."""
    return (anchor_dir(spec, weight, run_root) / "meta.json").exists()


def read_meta(directory: Path) -> dict[str, Any] | None:
    """``directory/meta.json`` (written last by a finished job), or ``None`` when it does not exist."""
    path = directory / "meta.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AnchorError(f"{path} is not valid JSON ({exc}); delete the file and re-run `hti-rl train-anchors`.") from exc


def _spec_hint(spec: Any) -> str:
    return str(getattr(spec, "path", None) or "envs/<task>.yaml")


# ----------------------------------------------------------------------------- one anchor
@dataclass(frozen=True)
class AnchorJob:
    """Everything a worker needs to train (or resume) one anchor; picklable.

    :param spec: the task spec.
    :param index: the anchor's index in ``spec.anchors``.
    :param run_root: root of the run directories.
    :param checkpoint_every: steps between checkpoints.
    :param seed_index: which of ``seeds_per_anchor`` seeds (trained in ``seeds/<i>/`` and scored at
        its weight), or ``None`` for the single-seed anchor trained in ``w=<λ>/`` itself.
    """

    spec: Any
    index: int
    run_root: str
    checkpoint_every: int
    seed_index: int | None = None

    @property
    def weight(self) -> float:
        return self.spec.anchors[self.index]

    @property
    def key(self) -> tuple[int, int | None]:
        return self.index, self.seed_index

    @property
    def seed(self) -> int:
        return anchor_seed(self.spec, self.index, self.seed_index or 0)

    @property
    def directory(self) -> Path:
        if self.seed_index is None:
            return anchor_dir(self.spec, self.weight, self.run_root)
        return seed_dir(self.spec, self.weight, self.seed_index, self.run_root)

    @property
    def tb_name(self) -> str:
        return f"anchor_w={self.weight:g}" + ("" if self.seed_index is None else f"_seed{self.seed_index}")

    def make_env(self) -> Any:
        """One copy of the env this job trains on: the spec's env at the job's weight."""
        return self.spec.make_env(self.weight)

    def budget(self, hp: dict[str, Any]) -> int:
        """Training steps of this job: the hyperparameters' ``n_timesteps``."""
        return int(hp["n_timesteps"])

    def extra_meta(self) -> dict[str, Any]:
        """Entries a job kind adds to its ``meta.json`` (none for an anchor)."""
        return {}

    @property
    def updates_normalizer(self) -> bool:
        """Whether training updates the VecNormalize statistics (a fine-tune keeps its base's frozen)."""
        return True

    def create_model(self, venv: Any, hp: dict[str, Any], tensorboard_log: str) -> Any:
        """A fresh model on ``venv`` (wrapped in VecNormalize when the hyperparameters normalise)."""
        if hp.get("normalize"):
            venv = VecNormalize(venv, **_normalize_kwargs(hp["normalize"]))
        return self.spec.sb3_algo()(env=venv, seed=self.seed, tensorboard_log=tensorboard_log, device="cpu", verbose=0, **hp["algo_kwargs"])


def train_anchor(job: AnchorJob, progress: Any = None) -> dict[str, Any]:
    """Train (or resume) one anchor and write ``model.zip``, ``vecnormalize.pkl`` and, last, ``meta.json``.

    :param job: which anchor (or which seed of it: then also scored at its weight, ``meta["selection"]``).
    :param progress: a queue receiving ``(job.key, steps done)`` as training proceeds, or ``None``.
    :return: the meta data written.
    """
    spec, directory = job.spec, job.directory
    hp = spec.hyperparams()
    total = job.budget(hp)
    model, latest = _resume_or_create(job, hp)
    callback = _CheckpointCallback(job, progress, wall_time_before=latest["wall_time_s"] if latest else 0.0)
    model.learn(
        total_timesteps=max(total - model.num_timesteps, 0),
        callback=callback,
        tb_log_name=job.tb_name,
        reset_num_timesteps=latest is None,
        progress_bar=False,
    )
    _save_model(model, directory / "model.zip", directory / "vecnormalize.pkl")
    for name in _IMPORT_ONLY_FILES:  # left by an anchor imported here before
        (directory / name).unlink(missing_ok=True)
    meta = {
        "task": spec.name,
        "task_fingerprint": spec.fingerprint(),
        "weight": job.weight,
        "algo": spec.algo,
        "steps": int(model.num_timesteps),
        "seed": job.seed,
        "normalize": model.get_vec_normalize_env() is not None,
        "wall_time_s": round(callback.wall_time(), 3),
        "resumed_from": latest["steps"] if latest else None,
        "versions": package_versions(),
        **job.extra_meta(),
    }
    if job.seed_index is not None:
        actor = actor_from_sb3(model, model.get_vec_normalize_env())
        mean, ci = own_weight_return(spec, actor, job.weight)
        meta["seed_index"] = job.seed_index
        meta["selection"] = {"return_mean": mean, "return_ci": ci, "episodes": spec.eval_episodes, "eval_seed": selection_seed(spec)}
    write_json(directory / "meta.json", meta)
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)
    model.get_env().close()
    return meta


def _make_venv(job: AnchorJob, hp: dict[str, Any]):
    """The job's env (``job.make_env``), vectorised (``n_envs`` copies), seeded by the job's seed."""
    return make_vec_env(job.make_env, n_envs=int(hp["n_envs"]), seed=job.seed)


def _resume_or_create(job: AnchorJob, hp: dict[str, Any]) -> tuple[Any, dict[str, Any] | None]:
    """-> (model ready to learn, the checkpoint's ``latest.json`` or ``None`` for a fresh start)."""
    algo, directory = job.spec.sb3_algo(), job.directory
    tb = str(Path(job.spec.run_dir(job.run_root)) / "tb")
    venv = _make_venv(job, hp)
    latest = _latest_checkpoint(job)
    if latest is not None:
        checkpoints = directory / "checkpoints"
        if latest.get("vecnormalize"):
            venv = load_vecnormalize(checkpoints / latest["vecnormalize"], venv, training=job.updates_normalizer)
        return load_sb3(algo, checkpoints / latest["model"], venv, hp, env=venv, device="cpu", tensorboard_log=tb), latest
    return job.create_model(venv, hp, tb), None


def _normalize_kwargs(normalize: Any) -> dict[str, Any]:
    """rl-zoo3's ``normalize``: ``true`` or a dict of VecNormalize kwargs (e.g. ``{norm_reward: false}``)."""
    return dict(normalize) if isinstance(normalize, dict) else {}


def _latest_checkpoint(job: AnchorJob) -> dict[str, Any] | None:
    path = job.directory / "checkpoints" / "latest.json"
    if not path.exists():
        return None
    latest = json.loads(path.read_text())
    if latest.get("task_fingerprint") != job.spec.fingerprint():
        raise AnchorError(
            f"the checkpoint in {path.parent} belongs to another version of task {job.spec.name!r}; "
            f"start over with `hti-rl train-anchors {_spec_hint(job.spec)} --force`."
        )
    return latest


def _save_model(model: Any, model_path: Path, vecnormalize_path: Path) -> None:
    """Write the model (and its VecNormalize, if any) atomically."""
    with atomic_write(model_path) as f:
        model.save(f)
    vecnormalize = model.get_vec_normalize_env()
    if vecnormalize is not None:
        with atomic_write(vecnormalize_path) as f:
            pickle.dump(vecnormalize, f)  # what VecNormalize.save writes, but atomically


def _checkpoint(job: AnchorJob, model: Any, wall_time_s: float) -> None:
    """Write ``checkpoints/model_<n>.zip`` (+ VecNormalize), then ``latest.json`` naming them, then drop older ones."""
    checkpoints = job.directory / "checkpoints"
    n = int(model.num_timesteps)
    normalized = model.get_vec_normalize_env() is not None
    _save_model(model, checkpoints / f"model_{n}.zip", checkpoints / f"vecnormalize_{n}.pkl")
    latest = {
        "steps": n,
        "model": f"model_{n}.zip",
        "vecnormalize": f"vecnormalize_{n}.pkl" if normalized else None,
        "task_fingerprint": job.spec.fingerprint(),
        "wall_time_s": wall_time_s,
    }
    write_json(checkpoints / "latest.json", latest)
    for old in checkpoints.iterdir():
        if old.suffix in (".zip", ".pkl") and old.name not in (latest["model"], latest["vecnormalize"]):
            old.unlink(missing_ok=True)


class _CheckpointCallback(BaseCallback):
    """Checkpoints every ``job.checkpoint_every`` steps, reports ``(index, steps)`` to a queue, and, in
    a worker process, ends the process at once if the process that started it has died: its run lock
    is gone, and a resumed run may already be writing into the same directory."""

    def __init__(self, job: AnchorJob, progress: Any, wall_time_before: float):
        super().__init__()
        self.job = job
        self.progress = progress
        self.parent = mp.parent_process()
        self.wall_time_before = wall_time_before
        self.start = time.perf_counter()

    def wall_time(self) -> float:
        """Seconds of training of this anchor so far, over every session (resumed ones included)."""
        return self.wall_time_before + time.perf_counter() - self.start

    def _on_training_start(self) -> None:
        self.last_checkpoint = self.last_report = self.num_timesteps

    def _on_step(self) -> bool:
        if self.parent is not None and not self.parent.is_alive():
            os._exit(1)
        if self.num_timesteps - self.last_checkpoint >= self.job.checkpoint_every:
            _checkpoint(self.job, self.model, self.wall_time())
            self.last_checkpoint = self.num_timesteps
        if self.progress is not None and self.num_timesteps - self.last_report >= 256:
            self.progress.put((self.job.key, self.num_timesteps))
            self.last_report = self.num_timesteps
        return True

    def _on_training_end(self) -> None:
        if self.progress is not None:
            self.progress.put((self.job.key, self.num_timesteps))


# ----------------------------------------------------------------------------- all anchors
def train_anchors(
    spec: Any,
    run_root: str | Path = "runs",
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
    base agent (:func:`hti_rl.shared_start.train_shared_anchors`).
    """
    if backend not in ("local", "ray"):
        raise HTIError(f"backend {backend!r} is not one of 'local', 'ray'.")
    if int(workers) < 1:
        raise HTIError(f"workers must be ≥ 1, got {workers}.")
    if spec.shared_start is not None:
        from hti_rl.shared_start import train_shared_anchors

        return train_shared_anchors(spec, run_root, workers, backend, force, progress, checkpoint_every)
    total = int(spec.hyperparams()["n_timesteps"])
    every = int(checkpoint_every or max(total // CHECKPOINTS_PER_RUN, 1))
    seeds: list[int | None] = list(range(spec.seeds_per_anchor)) if spec.seeds_per_anchor > 1 else [None]
    with RunLock(anchors_root(spec, run_root), "hti-rl train-anchors"):
        todo, choose = [], []
        for index, weight in enumerate(spec.anchors):
            directory = anchor_dir(spec, weight, run_root)
            if force:
                (directory / "meta.json").unlink(missing_ok=True)
                for name in _IMPORT_ONLY_FILES:
                    (directory / name).unlink(missing_ok=True)
                shutil.rmtree(directory / "checkpoints", ignore_errors=True)
                shutil.rmtree(directory / "seeds", ignore_errors=True)
            if is_finished(spec, weight, run_root):
                continue
            jobs = [AnchorJob(spec, index, str(run_root), every, seed_index) for seed_index in seeds]
            todo += [job for job in jobs if not (job.directory / "meta.json").exists()]
            if spec.seeds_per_anchor > 1:
                choose.append(index)
        run_jobs(todo, workers, total * len(todo), progress, start={job.key: checkpoint_steps(job) for job in todo},
                 backend=backend)
        for index in choose:
            keep_best_seed(spec, index, run_root)
        return [read_meta(anchor_dir(spec, w, run_root)) for w in spec.anchors]


def own_weight_return(spec: Any, actor: AnchorActor, weight: float) -> tuple[float, float]:
    """Mean return and 95% CI half-width of ``actor`` at ``weight`` over ``spec.eval_episodes``
    deterministic episodes, reset with seeds ``selection_seed(spec) + i``."""
    components = rollout_components(actor, lambda: spec.make_env(weight), spec.eval_episodes, selection_seed(spec))
    return mean_ci(returns_at(components, spec.reward.weighted, spec.reward.fixed, weight))


def keep_best_seed(spec: Any, index: int, run_root: str | Path = "runs") -> dict[str, Any]:
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
        meta = read_meta(seed_dir(spec, weight, i, run_root))
        if meta is None or "selection" not in meta or meta.get("task_fingerprint") != spec.fingerprint():
            raise AnchorError(
                f"seed {i} of anchor w={weight:g} in {seed_dir(spec, weight, i, run_root)} is unfinished, unscored or of "
                f"another version of task {spec.name!r}; run `hti-rl train-anchors {_spec_hint(spec)}` (add --force to start over)."
            )
        metas.append(meta)
    best = max(range(len(metas)), key=lambda i: metas[i]["selection"]["return_mean"])
    source, target = seed_dir(spec, weight, best, run_root), anchor_dir(spec, weight, run_root)
    for name in ("model.zip", "vecnormalize.pkl"):
        if (source / name).exists():
            with open(source / name, "rb") as src, atomic_write(target / name) as dst:
                shutil.copyfileobj(src, dst)
    keys = ("seed_index", "seed", "steps", "wall_time_s")
    seeds = [{**{k: m[k] for k in keys}, **{k: m["selection"][k] for k in ("return_mean", "return_ci")}} for m in metas]
    meta = {**metas[best], "seeds": seeds}
    write_json(target / "meta.json", meta)
    return meta


def checkpoint_steps(job: AnchorJob) -> int:
    """Steps the job's latest checkpoint holds (0 without one)."""
    latest = _latest_checkpoint(job)
    return 0 if latest is None else int(latest["steps"])


def run_jobs(jobs: list[AnchorJob], workers: int, total_steps: int, progress: bool, description: str = "train anchors",
             start: dict[tuple[int, int | None], int] | None = None, backend: str = "local") -> None:
    """Train ``jobs`` (anchors or any :class:`AnchorJob` subclass) in-process, in ``workers`` local
    processes or as Ray tasks, behind one progress bar of ``total_steps`` environment steps.

    :param start: steps already done per job key (from checkpoints); none when ``None``.
    """
    bar = _StepBar(total_steps, start or {}, progress)
    bar.bar.set_description(description)
    try:
        if backend == "ray":
            _run_ray(jobs, workers, bar)
        elif workers == 1 or len(jobs) <= 1:
            _run_inline(jobs, bar)
        else:
            _run_processes(jobs, workers, bar)
    finally:
        bar.close()


class _StepBar:
    """A progress bar of environment steps summed over jobs; ``put((job.key, steps))`` like a queue.

    :param total: steps of all jobs to train.
    :param start: steps already done per job key (from checkpoints).
    :param enabled: show the bar.
    """

    def __init__(self, total: int, start: dict[tuple[int, int | None], int], enabled: bool):
        self.steps = dict(start)
        self.bar = tqdm(total=total, initial=sum(start.values()), unit="step", desc="train anchors", disable=not enabled)

    def put(self, report: tuple[tuple[int, int | None], int]) -> None:
        key, steps = report
        self.steps[key] = steps
        self.bar.n = min(sum(self.steps.values()), self.bar.total)  # SB3 overshoots to whole rollouts
        self.bar.refresh()

    def drain(self, reports: Any) -> None:
        """Move every pending report from a queue (multiprocessing or Ray) onto the bar."""
        while not reports.empty():
            self.put(reports.get())

    def close(self) -> None:
        self.bar.close()


def _run_inline(jobs: list[AnchorJob], bar: _StepBar) -> None:
    """One job after another in this process, on one torch thread as in a worker process. SB3's small
    networks gain nothing from more (measured, PPO on Pendulum: 3,353 steps/s on 1 thread, 3,207 on 2),
    and two processes on 2 cores with 2 threads each ran 8× slower (398 steps/s each, 3,362 on 1 thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for job in jobs:
            train_anchor(job, progress=bar)
    finally:
        torch.set_num_threads(threads)


def _run_processes(jobs: list[AnchorJob], workers: int, bar: _StepBar) -> None:
    """``workers`` local processes (one torch thread each); a failure in one anchor is raised here."""
    # forkserver: one clean server process imports torch and SB3 once, then forks each worker from it.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["hti_rl.anchors", "hti_rl.tasks"])
    reports = ctx.Queue()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(reports,)) as pool:
        pending = {pool.submit(_train_in_worker, job) for job in jobs}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                bar.drain(reports)
                for future in done:
                    future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        bar.drain(reports)


_worker_reports: Any = None  # in a worker process only: its progress queue (set by _init_worker)


def _init_worker(reports: Any) -> None:
    global _worker_reports
    _worker_reports = reports
    torch.set_num_threads(1)


def _train_in_worker(job: AnchorJob) -> dict[str, Any]:
    return train_anchor(job, progress=_worker_reports)


def _train_on_ray(job: AnchorJob, reports: Any) -> dict[str, Any]:
    torch.set_num_threads(1)
    return train_anchor(job, progress=reports)


def _run_ray(jobs: list[AnchorJob], workers: int, bar: _StepBar) -> None:
    """The same jobs as Ray tasks (one CPU each), at most ``workers`` at a time."""
    try:
        import ray
        from ray.util.queue import Queue
    except ImportError as exc:
        raise HTIError("the ray backend needs Ray, which is not installed: pip install hti-rl[ray]") from exc
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    remote = ray.remote(num_cpus=1)(_train_on_ray)
    reports = Queue()
    waiting, running = list(jobs), []
    while waiting or running:
        while waiting and len(running) < workers:
            running.append(remote.remote(waiting.pop(0), reports))
        done, running = ray.wait(running, timeout=0.5)
        bar.drain(reports)
        ray.get(done)
    bar.drain(reports)
