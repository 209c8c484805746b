"""Where a refine starts: the candidate deployed at the weight, as an SB3 model to continue training.

- An anchor (``anchor:<w>``): its own ``model.zip`` (actor, critic, optimiser) and VecNormalize statistics.
- The surrogate or parameter interpolation: the nearest anchor's model with its actor distilled to the
  deployed action at the weight (:mod:`hti_rl.refine.distil`); critic and normaliser are the nearest anchor's.

An anchor imported from elsewhere trains with the spec's hyperparameters for its algorithm
(``agents/<algo>.yml``, entry ``hyperparams_key``); :func:`training_spec` finds them or says how to add them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.dataset import PolicyDataset
from hti_rl.errors import AnchorError, SpecError
from hti_rl.io import atomic_write, write_json
from hti_rl.methods.calibration import anchor_name
from hti_rl.refine.distil import distil_actor, visited_states
from hti_rl.runs import RunDir, read_meta, spec_hint
from hti_rl.seeds import refine_seed
from hti_rl.spec.algorithms import ALGOS
from hti_rl.spec.fields import read_yaml
from hti_rl.spec.hyperparams import parse_agent
from hti_rl.spec.task import TaskSpec
from hti_rl.training.store import load_anchor


@dataclass(frozen=True)
class Start:
    """A refine's starting point.

    :param candidate: what is continued: ``anchor:<w>``, ``surrogate`` or ``param_interp`` (distilled), or ``scratch``.
    :param anchor: the anchor whose model (all of it, or its critic and normaliser) it starts from; ``None`` from scratch.
    :param model: the ``model.zip`` to load, or ``None`` (from scratch).
    :param vecnormalize: its VecNormalize statistics file, or ``None``.
    :param spec: the spec to train with (the anchor's algorithm and hyperparameters).
    :param note: what the user should know (e.g. an imported anchor trained with the spec's hyperparameters).
    :param distillation: the distillation's errors (:func:`~hti_rl.refine.distil.distil_actor`), or ``None``.
    """

    candidate: str
    anchor: float | None
    model: Path | None
    vecnormalize: Path | None
    spec: TaskSpec
    note: str = ""
    distillation: dict[str, float] | None = None

    def provenance(self) -> dict[str, Any]:
        """What ``meta.json`` records of the start."""
        return {"start": self.candidate, "start_anchor": self.anchor, "algo": self.spec.algo, "note": self.note,
                "distillation": self.distillation}


def nearest_anchor(spec: TaskSpec, weight: float, run_root: str | Path, exclude: float | None = None) -> float:
    """The anchor nearest ``weight`` in the weight coordinate that has an SB3 model to train (ties: the lower one).

    :raises AnchorError: no anchor has one (all were imported from callables).
    """
    run = RunDir.of(spec, run_root)
    usable = [a for a in spec.anchors if a != exclude and (run.anchor(a) / "model.zip").exists()]
    if not usable:
        raise AnchorError(f"no anchor of task {spec.name!r} has an SB3 model.zip to continue training (imported from callables?); "
                          f"import SB3 models with `hti-rl import-anchors {spec_hint(spec)} --force`.")
    t = spec.axis.coord(weight)
    return min(usable, key=lambda a: (abs(spec.axis.coord(a) - t), a))


def training_spec(spec: TaskSpec, algo: str) -> tuple[TaskSpec, str]:
    """The spec to train an ``algo`` agent with, and a note when it is not the spec's own algorithm.

    :raises SpecError: no hyperparameters for ``algo`` (``agents/<algo>.yml``, entry ``hyperparams_key``).
    """
    if algo == spec.algo:
        return spec, ""
    if algo not in ALGOS:
        raise SpecError(f"the anchor's algorithm {algo!r} is not one of {', '.join(sorted(ALGOS))}; refine from another anchor.")
    file = spec.hyperparams_file.parent / f"{algo}.yml"
    entries = read_yaml(file) if file.is_file() else None
    if not isinstance(entries, dict) or not isinstance(entries.get(spec.hyperparams_key), dict):
        raise SpecError(f"the anchor was trained with {algo}, and the spec has no hyperparameters for {algo}: add an entry "
                        f"`{spec.hyperparams_key}` to {file} (rl-zoo3's layout) to refine it.")
    agent = dict(entries[spec.hyperparams_key])
    parse_agent(agent, algo, spec.n_timesteps, where=f"{file}: entry `{spec.hyperparams_key}`")
    variant = dataclasses.replace(spec, algo=algo, agent=agent, hyperparams_file=file)
    return variant, f"the anchor is a {algo} agent: it trains with {file}'s entry `{spec.hyperparams_key}`"


def anchor_start(spec: TaskSpec, anchor: float, run_root: str | Path, candidate: str | None = None) -> Start:
    """Start from the anchor at ``anchor`` itself: its model, critic, optimiser and normaliser.

    :raises AnchorError: the anchor has no SB3 model (imported from a callable).
    """
    directory = RunDir.of(spec, run_root).anchor(anchor)
    meta = read_meta(directory) or {}
    if not (directory / "model.zip").exists():
        raise AnchorError(f"anchor w={anchor:g} in {directory} has no SB3 model to continue training (it was imported from a "
                          "callable); refine from another candidate, or import it as an SB3 model.")
    train_spec, note = training_spec(spec, str(meta.get("algo", spec.algo)))
    if meta.get("imported"):
        note = note or (f"the anchor was imported: it trains with the spec's hyperparameters for {spec.algo} "
                        f"({spec.hyperparams_file}: entry `{spec.hyperparams_key}`)")
    stats = next((directory / n for n in ("vecnormalize.json", "vecnormalize.pkl") if (directory / n).exists()), None)
    return Start(candidate or anchor_name(anchor), anchor, directory / "model.zip", stats, train_spec, note)


def distilled_start(spec: TaskSpec, weight: float, deployed: Any, candidate: str, directory: Path, run_root: str | Path) -> Start:
    """Start from the nearest anchor's model with its actor distilled to ``deployed``'s action at ``weight``
    (written to ``directory/model.zip``; reused when ``directory/start.json`` says it was made for the same start)."""
    near = nearest_anchor(spec, weight, run_root)
    base = anchor_start(spec, near, run_root, candidate)
    record = directory / "start.json"
    key = {"candidate": candidate, "anchor": near, "weight": weight, "policy": _digest(deployed)}
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("key") == key:
            return dataclasses.replace(base, model=directory / "model.zip", distillation=saved["distillation"])
    model, vecnormalize = load_anchor(spec, near, run_root)
    run = RunDir.of(spec, run_root)
    deployed.set_weight(weight)
    states = PolicyDataset.load(run.dataset).obs if run.dataset.exists() else visited_states(deployed, spec, weight, 1, 0)
    episodes = max(1, spec.record.episodes // len(spec.anchors))
    fresh = visited_states(deployed, spec, weight, episodes, refine_seed(spec, weight, 3))
    stats = distil_actor(deployed, model, vecnormalize, np.concatenate([states, fresh]), refine_seed(spec, weight, 3))
    with atomic_write(directory / "model.zip") as f:  # the normaliser stays the anchor's own file
        model.save(f)
    write_json(record, {"key": key, "distillation": stats})
    return dataclasses.replace(base, model=directory / "model.zip", distillation=stats)


def _digest(policy: Any) -> str | None:
    digest = getattr(policy, "digest", None)
    return digest() if callable(digest) else None
