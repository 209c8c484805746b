"""Install agents a user already has as a task's anchors (``hti-rl import-anchors``).

An anchor can come from:

- an SB3 ``.zip`` (PPO, A2C, SAC, TD3, DDPG; the algorithm is read from the zip), or an rl-zoo3 run
  folder (``logs/<algo>/<env>_<n>/``: its ``<env>.zip`` and ``<env>/vecnormalize.pkl``), with an
  optional ``vecnormalize.pkl``, read by :mod:`hti_rl.sb3io.safe_pickle` and kept as ``vecnormalize.json``;
- a loaded SB3 model (its VecNormalize, if attached, comes with it);
- a callable ``obs -> action`` (any RL library): a deterministic anchor whose output is the env
  action (clipped to the Box). An ``nn.Sequential`` of Linear layers and activations (raw observations
  [B, C] -> actions [B, D]) is stored as tensors and works everywhere, surrogate files included. Any
  other callable (a function ``obs [C] -> action [D]``, or an ``nn.Module`` called on tensors [B, C])
  is stored by its import path (``module:name``, like a spec's component functions): ``record``,
  ``check-anchors`` and ``compare`` use it, but a surrogate file holds tensors and never code, so
  ``fit`` refuses to save a surrogate with it (:class:`CallableActor`).

Each import checks the model's spaces against the task's env, converts it to an
:class:`~hti_rl.actors.AnchorActor`, checks that the actor's deterministic action equals the model's own
``predict`` on a few env states, and writes ``runs/<task>/anchors/w=<λ>/``: ``model.zip`` (a copy, when
there is one), ``vecnormalize.json``, ``actor.pt`` (tensors only) and, last, ``meta.json`` with an
``imported`` entry. Every later stage reads it like a trained anchor. A zip is loaded by
:func:`hti_rl.sb3io.safe_sb3.load_sb3`: its serialized settings (spaces, policy class, ``policy_kwargs``,
schedules) are read as data or rebuilt, never unpickled freely, so an agent with custom classes in them
is refused (import it as a callable instead).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union

import numpy as np
import torch
from gymnasium import spaces

from hti_rl.actors import (
    AnchorActor,
)
from hti_rl.errors import AnchorError, HTIError, SpaceError
from hti_rl.io import RunLock, atomic_write, sha256_bytes, write_json
from hti_rl.runs import DEFAULT_ROOT, RunDir, package_versions
from hti_rl.sb3io.actor import actor_from_sb3
from hti_rl.sb3io.safe_pickle import (
    NormStats,
    read_norm_stats,
    read_vecnormalize,
    write_norm_stats,
)
from hti_rl.sb3io.safe_sb3 import load_sb3, read_sb3_data
from hti_rl.sb3io.zoo import find_zoo_files, zoo_records
from hti_rl.spec.algorithms import ALGORITHMS, ALGOS, SUPPORTED, recognise
from hti_rl.spec.task import TaskSpec
from hti_rl.training.callables import (
    CallableActor,
    actor_from_callable,
    import_reference,
    spec_callable,
)

log = logging.getLogger(__name__)


Source = Union[str, Path, Any, Callable]


"""A path (SB3 zip or rl-zoo3 folder), a loaded SB3 model, or a callable obs -> action."""


ACTOR_FILE, STATS_FILE = "actor.pt", "vecnormalize.json"


IMPORT_FILES = ("model.zip", "vecnormalize.pkl", STATS_FILE, ACTOR_FILE)




@dataclass(frozen=True)
class Imported:
    """What :func:`import_anchors` did at one weight: ``status`` is ``imported`` or ``unchanged``;
    ``warnings``: where an rl-zoo3 run's records contradict the task or the declared weight (also logged)."""

    weight: float
    status: str
    meta: dict[str, Any]
    warnings: tuple[str, ...] = ()


def import_anchors(
    spec: TaskSpec,
    models: Mapping[float, Source] | Iterable[tuple[float, Source]] | None = None,
    vecnormalize: Mapping[float, str | Path] | Iterable[tuple[float, str | Path]] | None = None,
    run_root: str | Path = DEFAULT_ROOT,
    force: bool = False,
) -> list[Imported]:
    """Install existing agents as anchors of ``spec``.

    :param spec: the task; its ``anchors: [{weight, model, vecnormalize}]`` entries are imported too
        (``models`` replaces an entry at the same weight).
    :param models: weight -> SB3 zip, rl-zoo3 folder, SB3 model or callable ``obs -> action``.
    :param vecnormalize: weight -> ``vecnormalize.pkl`` of that anchor's model (optional).
    :param run_root: root of the run directories.
    :param force: replace an anchor that already exists (trained or imported from another source).
    :return: one :class:`Imported` per weight, in weight order.
    :raises AnchorError: a weight not in the spec, two sources for one weight, a missing, unreadable or
        unsupported model, an existing anchor without ``force``.
    :raises SpaceError: the model's spaces are not Box or do not match the task's env.
    """
    if spec.is_vector:
        raise AnchorError(f"task {spec.name!r} weighs several components, and import-anchors takes scalar anchor weights only so far; "
                          f"train the grid's anchors with `hti-rl train-anchors {spec.path}`.")
    sources = _sources(spec, models, vecnormalize)
    if not sources:
        raise AnchorError(
            f"no agents to import for task {spec.name!r}: pass --anchor <weight>=<model.zip> (or models={{weight: ...}}), "
            f"or give anchors as {{weight: λ, model: path}} entries in {spec.path}."
        )
    with RunLock(RunDir.of(spec, run_root).anchors, "hti-rl import-anchors"):
        return [import_anchor(spec, w, model, norm, run_root, force) for w, (model, norm) in sorted(sources.items())]


def _sources(spec: TaskSpec, models: Any, vecnormalize: Any) -> dict[float, tuple[Source, Path | None]]:
    """weight (as in the spec) -> (source, vecnormalize path); checks weights and duplicates."""
    def pairs(given: Any) -> list[tuple[Any, Any]]:
        return list(given.items()) if isinstance(given, Mapping) else list(given or [])

    def anchor_weight(weight: Any, what: str) -> float:
        try:
            w = float(weight)
        except (TypeError, ValueError):
            raise AnchorError(f"{what} weight {weight!r} is not a number; write <weight>=<path>, e.g. 0.1=models/ppo.zip.") from None
        match = [a for a in spec.anchors if np.isclose(a, w, rtol=1e-9, atol=0.0)]
        if not match:
            raise AnchorError(
                f"{what} weight {w:g} is not an anchor weight of task {spec.name!r} (anchors: {', '.join(f'{a:g}' for a in spec.anchors)}); "
                f"use one of those, or add {w:g} to `anchors` in {spec.path}."
            )
        return match[0]

    from_spec = {f.weight: (f.model if f.callable is None else import_reference(f.callable), f.vecnormalize)
                 for f in getattr(spec, "anchor_files", ())}
    given: dict[float, Source] = {}
    for weight, source in pairs(models):
        w = anchor_weight(weight, "anchor")
        if w in given:
            raise AnchorError(f"two agents for anchor w={w:g} ({given[w]!r} and {source!r}); give one agent per anchor weight.")
        given[w] = source
    norms: dict[float, Path] = {}
    for weight, path in pairs(vecnormalize):
        w = anchor_weight(weight, "vecnormalize")
        if w in norms:
            raise AnchorError(f"two VecNormalize files for anchor w={w:g} ({norms[w]} and {path}); give one per anchor.")
        if w not in given and w not in from_spec:
            raise AnchorError(f"a VecNormalize file for anchor w={w:g} ({path}) but no model for it; add --anchor {w:g}=<model>.")
        norms[w] = Path(path)
    sources = {w: (m, n) for w, (m, n) in from_spec.items() if w not in given}
    sources.update({w: (m, norms.get(w)) for w, m in given.items()})
    return {w: (m, norms.get(w, n)) for w, (m, n) in sources.items()}


def import_anchor(spec: TaskSpec, weight: float, source: Source, vecnormalize: Path | None = None, run_root: str | Path = DEFAULT_ROOT, force: bool = False) -> Imported:
    """Import one agent as the anchor at ``weight`` (see :func:`import_anchors`; takes no lock)."""
    where = f"anchor w={weight:g}"
    env = spec.make_env(weight)
    try:
        actor, model, stats, info = _read_source(spec, weight, source, vecnormalize, env, where)
        _verify(actor, model, stats, env, where)
    finally:
        env.close()
    digest = sha256_bytes(*(_tensor_bytes(actor) if info.get("callable") is None else [info["callable"].encode()]))
    directory = RunDir.of(spec, run_root).anchor(weight)
    old = _read_json(directory / "meta.json")
    if old is not None and not force:
        if (old.get("imported") or {}).get("sha256") == digest and old.get("task_fingerprint") == spec.fingerprint():
            return Imported(weight, "unchanged", old, tuple(info.get("warnings", ())))
        held = f"imported from {old['imported'].get('source')}" if old.get("imported") else "a trained agent"
        raise AnchorError(f"{where} of task {spec.name!r} already holds {held} ({directory}); pass --force (force=True) to replace it.")
    (directory / "meta.json").unlink(missing_ok=True)  # the anchor is unfinished until the new meta.json lands
    for name in IMPORT_FILES:
        (directory / name).unlink(missing_ok=True)
    for name in ("checkpoints", "seeds"):
        shutil.rmtree(directory / name, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    if info.get("zip") is not None:
        with open(info["zip"], "rb") as src, atomic_write(directory / "model.zip") as dst:
            shutil.copyfileobj(src, dst)
    elif model is not None:
        with atomic_write(directory / "model.zip") as f:
            model.save(f)
    if stats is not None:
        write_norm_stats(stats, directory / STATS_FILE)
    if not isinstance(actor, CallableActor):
        with atomic_write(directory / ACTOR_FILE) as f:
            torch.save(actor.state(), f)
    meta = {
        "task": spec.name,
        "task_fingerprint": spec.fingerprint(),
        "weight": weight,
        "algo": info["algo"],
        "steps": int(model.num_timesteps) if model is not None else None,
        "seed": None,
        "normalize": stats is not None and stats.norm_obs,
        "resumed_from": None,
        "versions": package_versions(),
        "imported": {"source": info["source"], "vecnormalize": info.get("vecnormalize"), "kind": actor.kind,
                     "callable": info.get("callable"), "sha256": digest,
                     **({"zoo": info["zoo"], "warnings": info["warnings"]} if "zoo" in info else {})},
    }
    write_json(directory / "meta.json", meta)
    if isinstance(actor, CallableActor):
        log.warning("%s is the Python callable %s: record and check-anchors use it, but a surrogate file holds tensors only, "
                    "so `fit` cannot save it; give an nn.Sequential of Linear layers and activations to deploy it.", where, info["callable"])
    return Imported(weight, "imported", meta, tuple(info.get("warnings", ())))


def _read_source(spec: TaskSpec, weight: float, source: Source, vecnormalize: Path | None, env: Any, where: str):
    """-> (actor, SB3 model or None, NormStats or None, provenance {algo, source, zip, vecnormalize, callable})."""
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import DummyVecEnv

    info: dict[str, Any] = {}
    if callable(source) and not isinstance(source, (str, Path, BaseAlgorithm)):
        if vecnormalize is not None:
            raise AnchorError(f"{where}: a callable takes raw observations; normalise inside it rather than giving a VecNormalize file ({vecnormalize}).")
        actor = actor_from_callable(source, env.observation_space, env.action_space)
        ref = actor.reference if isinstance(actor, CallableActor) else None
        if ref is not None and spec_callable(spec, weight) != ref:
            raise AnchorError(
                f"{where}: {ref} is Python code, and later stages import code only where the task spec names it. "
                f"Add {{weight: {weight:g}, callable: '{ref}'}} to `anchors` in {spec.path}, or give an nn.Sequential of "
                "Linear layers and activations (stored as tensors)."
            )
        return actor, None, None, {"algo": "callable", "source": ref or type(source).__name__, "callable": ref}
    if isinstance(source, BaseAlgorithm):
        model = source
        info.update(algo=type(model).__name__.lower(), source=f"<{type(model).__name__} object>")
        where = f"{where} ({info['source']})"
        if info["algo"] not in ALGORITHMS:
            raise AnchorError(f"{where}: {type(model).__name__} is not supported; hti-rl imports {SUPPORTED} "
                              "with MlpPolicy. Wrap your agent as a callable obs -> action instead.")
        vn = model.get_vec_normalize_env()
        stats = NormStats.from_vecnormalize(vn) if vn is not None and vecnormalize is None else None
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise AnchorError(f"{where}: {path} does not exist; give the path of an SB3 model .zip or an rl-zoo3 run folder.")
        if not path.is_dir() and not path.is_file():
            raise AnchorError(f"{where}: {path} is not a regular file or a folder; give the path of an SB3 model .zip or an rl-zoo3 run folder.")
        if path.is_dir():
            folder = path
            path, found = find_zoo_files(folder, where)
            vecnormalize = vecnormalize or found
            info.update(zoo_records(spec, weight, folder, path.stem, where))
        where = f"{where} ({path})"
        info.update(algo=detect_algo(path, where), source=str(path), zip=path)
        model = _load_sb3(info["algo"], path, env, where)
        stats = None
    check_spaces(model.observation_space, model.action_space, env, spec, where)
    if vecnormalize is not None:
        try:
            stats = read_norm_stats(vecnormalize) if Path(vecnormalize).suffix == ".json" else read_vecnormalize(vecnormalize)
        except HTIError as exc:
            raise type(exc)(f"{where}: {exc}") from None
        info["vecnormalize"] = str(vecnormalize)
    if stats is not None and stats.obs_dim not in (None, int(np.prod(env.observation_space.shape))):
        raise SpaceError(f"{where}: {vecnormalize} normalises {stats.obs_dim} observation values, the task's env has "
                         f"{env.observation_space.shape}; give the VecNormalize file saved with this model.")
    norm = stats.wrap(DummyVecEnv([lambda: spec.make_env(weight)])) if stats is not None else None
    try:
        actor = actor_from_sb3(model, norm)
    except HTIError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return actor, model, stats, info


def detect_algo(path: Path, where: str = "anchor") -> str:
    """The SB3 algorithm of a model zip (ppo, a2c, sac, td3, ddpg), read from its JSON ``data`` only."""
    try:
        data = read_sb3_data(path)  # size-bounded; a regular file only (never /dev/zero)
        module = str(data.get("policy_class", {}).get("__module__", ""))
    except (HTIError, AttributeError) as exc:
        raise AnchorError(f"{where}: {path} is not a readable SB3 model zip ({type(exc).__name__}: {exc}); give the .zip that model.save wrote.") from None
    algo = recognise(data)
    if algo is not None:
        return algo
    algo = module.split(".")[-2].upper() if module.count(".") >= 2 else module or "unknown"
    raise AnchorError(
        f"{where}: {path} is a {algo} model (policy from {module!r}); hti-rl imports {SUPPORTED} "
        "with MlpPolicy. Give one of those, or wrap your agent as a callable obs -> action (import_anchors in Python)."
    )


def _load_sb3(algo: str, path: Path, env: Any, where: str) -> Any:
    """The zip's model, read by :func:`hti_rl.sb3io.safe_sb3.load_sb3` (no serialized setting is unpickled)."""

    try:
        return load_sb3(ALGOS[algo], path, env)
    except HTIError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    except Exception as exc:  # SB3 raises many kinds for a damaged or mismatched zip
        raise AnchorError(f"{where}: SB3 could not load {path} as {algo.upper()} ({type(exc).__name__}: {exc}); re-save the model.") from None


def check_spaces(observation_space: Any, action_space: Any, env: Any, spec: TaskSpec, where: str) -> None:
    """The model's spaces are Boxes of the task env's shape and bounds, else :class:`SpaceError` with the fix."""
    pairs = (("observation", observation_space, env.observation_space), ("action", action_space, env.action_space))
    for what, space, _ in pairs:
        if not isinstance(space, spaces.Box):
            raise SpaceError(
                f"{where}: the model's {what} space is {space}; hti-rl needs Box {what}s (continuous vectors), so a "
                f"{type(space).__name__} {what} space cannot be an anchor. Import an agent trained on a Box {what} space."
            )
    for what, space, task in pairs:
        if space.shape != task.shape or not (np.allclose(space.low, task.low) and np.allclose(space.high, task.high)):
            raise SpaceError(
                f"{where}: the model's {what} space {space} does not match the task's env {task} ({spec.env_id}, "
                f"{spec.path}); import a model trained on this env, or fix env_id/env_kwargs in the spec."
            )


def _verify(actor: AnchorActor, model: Any, stats: NormStats | None, env: Any, where: str) -> None:
    """The actor's deterministic action at 8 reset states equals the model's ``predict`` (or is a finite [D])."""
    obs = np.stack([env.reset(seed=i)[0] for i in range(8)]).astype(np.float32)
    got, _ = actor.predict(obs, deterministic=True)
    if got.shape != (8, actor.action_dim) or not np.all(np.isfinite(got)):
        raise AnchorError(f"{where}: the agent gave actions of shape {got.shape} (finite: {np.all(np.isfinite(got))}) for 8 states; "
                          f"it must return {actor.action_dim} finite numbers per observation.")
    if model is not None:
        expected, _ = model.predict(stats.normalize(obs) if stats is not None else obs, deterministic=True)
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
            raise AnchorError(f"{where}: the converted policy differs from the model's own predict by up to "
                              f"{np.abs(got - expected).max():.3g}; this policy network is not supported (use MlpPolicy).")


def _tensor_bytes(actor: AnchorActor) -> list[bytes]:
    return [str(actor.arch).encode()] + [v.detach().cpu().numpy().tobytes() for v in actor.state_dict().values()]


def _read_json(path: Path) -> dict[str, Any] | None:
    import json

    try:
        value = json.loads(path.read_text()) if path.exists() else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None  # unreadable or not hti-rl's: as if absent


def load_imported_actor(spec: TaskSpec, weight: float, directory: Path, meta: dict[str, Any]) -> AnchorActor:
    """The actor of an imported anchor: ``actor.pt`` (tensors only), or its callable by import path."""
    from hti_rl.errors import FileFormatError

    if (directory / ACTOR_FILE).exists():
        try:
            state = torch.load(directory / ACTOR_FILE, weights_only=True)
        except Exception as exc:  # refused or damaged: never run
            raise FileFormatError(f"{directory / ACTOR_FILE} is not a tensors-only actor file ({type(exc).__name__}); "
                                  f"re-import the anchor with `hti-rl import-anchors {spec.path} ... --force`.") from None
        return AnchorActor.from_state(state)
    recorded, reference = (meta.get("imported") or {}).get("callable"), spec_callable(spec, weight)
    if not recorded:
        raise AnchorError(f"imported anchor w={weight:g} in {directory} has neither {ACTOR_FILE} nor a callable; re-import it with --force.")
    if reference is None:  # a run directory's file may refer to the spec, never name code itself
        raise AnchorError(
            f"imported anchor w={weight:g} in {directory} is a Python callable, and {spec.path} names none at that weight; "
            f"hti-rl imports only code that the task spec names. Add {{weight: {weight:g}, callable: 'module:name'}} to "
            f"`anchors` in the spec and run `hti-rl import-anchors {spec.path} --force`."
        )
    if reference != recorded:
        raise AnchorError(
            f"imported anchor w={weight:g} in {directory} was imported from {recorded!r}, the spec now names {reference!r}; "
            f"run `hti-rl import-anchors {spec.path} --force` to import the spec's."
        )
    env = spec.make_env(weight)
    try:
        return actor_from_callable(import_reference(reference), env.observation_space, env.action_space)
    finally:
        env.close()
