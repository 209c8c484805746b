"""One training job: an SB3 agent trained (or resumed) at one reward weight, checkpointed, logged to
TensorBoard, with ``meta.json`` written last.

:class:`AnchorJob` trains an anchor; the other job kinds (retrained, conditioned, shared start and its
fine-tunes) subclass it and change only the env, budget, seed or directory. A job resumes from its
latest checkpoint (``learn(remaining, reset_num_timesteps=False)``) after an interruption.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from hti_rl.actors import AnchorActor
from hti_rl.errors import AnchorError
from hti_rl.evaluate import mean_ci, returns_at, rollout_components
from hti_rl.io import atomic_write, write_json
from hti_rl.runs import RunDir, package_versions, spec_hint, weight_label
from hti_rl.sb3io.actor import actor_from_sb3
from hti_rl.sb3io.safe_pickle import load_vecnormalize
from hti_rl.sb3io.safe_sb3 import load_sb3
from hti_rl.seeds import anchor_seed, selection_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage

CHECKPOINTS_PER_RUN = 10  # default checkpoint interval: a tenth of the anchor's budget
IMPORT_ONLY_FILES = ("actor.pt", "vecnormalize.json")  # written by hti_rl.training.importing, never by training


@dataclass(frozen=True, kw_only=True)
class AnchorJob:
    """Everything a worker needs to train (or resume) one anchor; picklable.

    :param spec: the task spec.
    :param index: the anchor's index in ``spec.anchors``.
    :param run_root: root of the run directories.
    :param checkpoint_every: steps between checkpoints.
    :param seed_index: which of ``seeds_per_anchor`` seeds (trained in ``seeds/<i>/`` and scored at
        its weight), or ``None`` for the single-seed anchor trained in ``w=<λ>/`` itself.
    """

    spec: TaskSpec
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
            return RunDir.of(self.spec, self.run_root).anchor(self.weight)
        return RunDir.of(self.spec, self.run_root).seed(self.weight, self.seed_index)

    @property
    def tb_name(self) -> str:
        return f"anchor_w={weight_label(self.weight)}" + ("" if self.seed_index is None else f"_seed{self.seed_index}")

    @property
    def tb_root(self) -> Path:
        """The TensorBoard root the job logs under, one run named :attr:`tb_name`: the task's ``tb/``."""
        return RunDir.of(self.spec, self.run_root).tb()

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


@stage
@stage
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
    save_model(model, directory / "model.zip", directory / "vecnormalize.pkl")
    for name in IMPORT_ONLY_FILES:  # left by an anchor imported here before
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
    tb = str(job.tb_root)
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
    fix = f"delete {path.parent} (or start over with `hti-rl train-anchors {spec_hint(job.spec)} --force`)"
    try:
        latest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AnchorError(f"{path} is not valid JSON ({exc}); {fix}.") from None
    names = (r"model_\d{1,19}\.zip", r"vecnormalize_\d{1,19}\.pkl")
    if not (isinstance(latest, dict) and isinstance(latest.get("steps"), int) and not isinstance(latest["steps"], bool)
            and 0 <= latest["steps"] < 2**63 and isinstance(latest.get("wall_time_s"), (int, float))
            and isinstance(latest.get("model"), str) and re.fullmatch(names[0], latest["model"])
            and (latest.get("vecnormalize") is None or (isinstance(latest["vecnormalize"], str) and re.fullmatch(names[1], latest["vecnormalize"])))):
        raise AnchorError(f"{path} is not a checkpoint record hti-rl wrote (steps, model_<n>.zip, vecnormalize_<n>.pkl, wall_time_s); {fix}.")
    if latest.get("task_fingerprint") != job.spec.fingerprint():
        raise AnchorError(
            f"the checkpoint in {path.parent} belongs to another version of task {job.spec.name!r}; "
            f"start over with `hti-rl train-anchors {spec_hint(job.spec)} --force`."
        )
    return latest


def save_model(model: Any, model_path: Path, vecnormalize_path: Path) -> None:
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
    save_model(model, checkpoints / f"model_{n}.zip", checkpoints / f"vecnormalize_{n}.pkl")
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


def own_weight_return(spec: TaskSpec, actor: AnchorActor, weight: float) -> tuple[float, float]:
    """Mean return and 95% CI half-width of ``actor`` at ``weight`` over ``spec.eval_episodes``
    deterministic episodes, reset with seeds ``selection_seed(spec) + i``."""
    components = rollout_components(actor, lambda: spec.make_env(weight), spec.eval_episodes, selection_seed(spec))
    return mean_ci(returns_at(components, spec.reward.weighted, spec.reward.fixed, weight))


def checkpoint_steps(job: AnchorJob) -> int:
    """Steps the job's latest checkpoint holds (0 without one)."""
    latest = _latest_checkpoint(job)
    return 0 if latest is None else int(latest["steps"])
