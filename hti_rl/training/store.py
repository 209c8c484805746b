"""Load finished agents: an anchor (trained here or imported) or any SB3 agent in a run directory,
as SB3 models or as :class:`~hti_rl.actors.AnchorActor` s, without unpickling code."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv

from hti_rl.actors import AnchorActor
from hti_rl.errors import AnchorError
from hti_rl.io import write_json
from hti_rl.runs import DEFAULT_ROOT, RunDir, read_meta, spec_hint, weight_label
from hti_rl.sb3io.actor import actor_from_sb3
from hti_rl.sb3io.safe_pickle import load_vecnormalize
from hti_rl.sb3io.safe_sb3 import load_sb3
from hti_rl.spec.algorithms import ALGOS
from hti_rl.spec.task import TaskSpec

MAX_REFINED = 1000  # refined anchors a refined.json may list


def load_anchor(spec: TaskSpec, weight: float, run_root: str | Path = DEFAULT_ROOT) -> tuple[Any, Any]:
    """Load a finished anchor (trained, or imported from an SB3 model).

    :return: ``(model, vecnormalize)``; ``vecnormalize`` is ``None`` when the anchor does not normalise,
        else a ``VecNormalize`` in evaluation mode (``training=False``, rewards not normalised), read
        without unpickling code (:mod:`hti_rl.sb3io.safe_pickle`); the model is read without unpickling code
        either (:mod:`hti_rl.sb3io.safe_sb3`).
    :raises AnchorError: the anchor is not trained (or not finished), was trained for another spec, or
        was imported from a callable (it has no SB3 model: use :func:`load_anchor_actor`).
    """

    directory, meta = _finished_meta(spec, weight, run_root)
    if not (directory / "model.zip").exists():
        raise AnchorError(
            f"anchor w={weight_label(weight)} in {directory} has no SB3 model (it was imported from a callable); "
            "read it with load_anchor_actor, or re-import an SB3 model with `hti-rl import-anchors ... --force`."
        )
    algo = meta.get("algo", spec.algo)
    if not (isinstance(algo, str) and algo in ALGOS):  # a data file's value, never a key that it may break
        raise AnchorError(
            f"{directory / 'meta.json'} names the algorithm {repr(algo)[:80]}, not one of {', '.join(sorted(ALGOS))}; "
            f"retrain it with `hti-rl train-anchors {spec_hint(spec)} --force` (or re-import it with --force)."
        )
    env = spec.make_env(weight)
    try:  # an imported agent was trained elsewhere: its schedules are not the spec's (they only matter for training)
        model = load_sb3(ALGOS[algo], directory / "model.zip", env, None if meta.get("imported") else spec.hyperparams())
    finally:
        env.close()
    vecnormalize = None
    for name in ("vecnormalize.json", "vecnormalize.pkl"):  # hti-rl's own format first
        if (directory / name).exists():
            vecnormalize = load_vecnormalize(directory / name, DummyVecEnv([lambda: spec.make_env(weight)]))
            break
    return model, vecnormalize


def load_anchor_actor(spec: TaskSpec, weight: float, run_root: str | Path = DEFAULT_ROOT) -> AnchorActor:
    """The finished anchor at ``weight`` as an :class:`AnchorActor` (policy + VecNormalize statistics);
    an imported anchor's is read from its tensors-only ``actor.pt`` (or its callable)."""
    directory, meta = _finished_meta(spec, weight, run_root)
    if meta.get("imported"):
        from hti_rl.training.importing import load_imported_actor

        actor = load_imported_actor(spec, weight, directory, meta)
    else:
        model, vecnormalize = load_anchor(spec, weight, run_root)
        actor = actor_from_sb3(model, vecnormalize)
        if (meta.get("shared_start") or {}).get("role") == "finetune":  # which base it descends from (hti_rl.training.shared_start)
            base = meta["shared_start"].get("base_sha256")
            if not isinstance(base, str):
                raise AnchorError(f"{directory / 'meta.json'}: a fine-tuned anchor whose `shared_start` names no base_sha256; "
                                  f"retrain it with `hti-rl train-anchors {spec_hint(spec)} --force`.")
            actor.arch["source"]["shared_start"] = base
    bad = [name for name, t in actor.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
    if bad:  # said here, rather than blamed on the env or a component function once its actions reach the env
        raise AnchorError(
            f"anchor w={weight_label(weight)} in {directory} holds NaN or inf in {', '.join(bad[:3])} (its policy network or VecNormalize "
            f"statistics diverged or were damaged); retrain it with `hti-rl train-anchors {spec_hint(spec)} --force` or re-import it."
        )
    return actor


def load_agent_actor(spec: TaskSpec, directory: Path, make_env: Callable[[], gym.Env]) -> AnchorActor:
    """The SB3 agent trained for ``spec`` in ``directory`` (``model.zip`` + ``vecnormalize.pkl`` if any)
    as an :class:`AnchorActor`, read without unpickling code (:mod:`hti_rl.sb3io.safe_sb3`,
    :mod:`hti_rl.sb3io.safe_pickle`); ``make_env()`` builds the env it was trained on (for its spaces)."""
    env = make_env()
    try:
        model = load_sb3(spec.sb3_algo(), directory / "model.zip", env, spec.hyperparams())
    finally:
        env.close()
    vecnormalize = None
    if (directory / "vecnormalize.pkl").exists():
        vecnormalize = load_vecnormalize(directory / "vecnormalize.pkl", DummyVecEnv([make_env]))
    return actor_from_sb3(model, vecnormalize)


def _finished_meta(spec: TaskSpec, weight: float, run_root: str | Path) -> tuple[Path, dict[str, Any]]:
    """-> (anchor directory, its meta.json) of a finished anchor of this spec version, else AnchorError."""
    directory = RunDir.of(spec, run_root).anchor(weight)
    meta = read_meta(directory)
    if meta is None:
        raise AnchorError(
            f"anchor w={weight_label(weight)} of task {spec.name!r} is not trained ({directory / 'meta.json'} is missing). "
            f"Run `hti-rl train-anchors {spec_hint(spec)}` (or `hti-rl import-anchors`) first."
        )
    recorded = meta.get("weight")
    if (tuple(recorded) if isinstance(recorded, list) else recorded) != weight:  # JSON writes a vector as a list
        raise AnchorError(
            f"{directory} holds the anchor of weight {meta.get('weight')!r}, not {weight!r} (an earlier hti-rl named both "
            f"folders alike); retrain it with `hti-rl train-anchors {spec_hint(spec)} --force` (or re-import it with --force)."
        )
    if meta.get("task_fingerprint") != spec.fingerprint():
        raise AnchorError(
            f"anchor w={weight_label(weight)} in {directory} was trained for another version of task {spec.name!r} "
            f"(fingerprint {meta.get('task_fingerprint')}, spec has {spec.fingerprint()}). "
            f"Retrain it with `hti-rl train-anchors {spec_hint(spec)} --force` (or re-import it with --force)."
        )
    return directory, meta


def with_refined_anchors(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT) -> TaskSpec:
    """``spec`` with the anchors ``hti-rl refine`` installed under ``run_root`` (``runs/<task>/refined.json``)
    among its anchors (:meth:`TaskSpec.with_anchors_added`; the fingerprint is unchanged).

    :raises AnchorError: ``refined.json`` is damaged, or names a weight outside the spec's anchor range.
    """
    path = RunDir.of(spec, run_root).refined_file
    if not path.exists():
        return spec
    fix = f"delete {path} and the anchors it lists, or refine again with `hti-rl refine {spec_hint(spec)} --weight λ --force`"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AnchorError(f"{path} is not valid JSON ({type(exc).__name__}); {fix}.") from None
    weights = raw.get("weights") if isinstance(raw, dict) else None
    if not (isinstance(weights, list) and len(weights) <= MAX_REFINED
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights)):
        raise AnchorError(f"{path} is not a list of refined anchor weights hti-rl wrote ({{\"weights\": [...]}}); {fix}.")
    outside = [w for w in weights if not spec.axis.low < w < spec.axis.high]
    if outside:
        raise AnchorError(f"{path} names refined anchors {outside} outside the spec's anchor range {spec.axis.range_text()}; {fix}.")
    return spec.with_anchors_added(weights)


def add_refined_anchor(spec: TaskSpec, weight: float, run_root: str | Path = DEFAULT_ROOT) -> TaskSpec:
    """Record ``weight`` in ``runs/<task>/refined.json`` (atomically) and return the spec with it among its anchors."""
    current = with_refined_anchors(spec, run_root)
    weights = sorted({*current.refined, float(weight)})
    write_json(RunDir.of(spec, run_root).refined_file, {"weights": weights})
    return spec.with_anchors_added(weights)
