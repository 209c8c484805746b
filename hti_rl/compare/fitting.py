"""Phases 1-3 of ``hti-rl compare``: train every agent the experiment needs, record, fit every method.

Everything is skipped when already on disk: finished agents, the dataset, and a fitted method whose
file matches the dataset and its resolved settings (``compare_key``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hti_rl.actors import AnchorActor
from hti_rl.compare.experiment import CONDITIONED, Experiment
from hti_rl.cross_eval import CrossEval
from hti_rl.dataset import PolicyDataset, record
from hti_rl.errors import FileFormatError
from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.grid_surrogate import fit_grid_policy
from hti_rl.methods.registry import METHODS
from hti_rl.methods.surrogate import clot_config, fit_policy
from hti_rl.quality import check_anchors
from hti_rl.runs import RunDir
from hti_rl.spec.task import TaskSpec
from hti_rl.training.anchors import train_anchors
from hti_rl.training.conditioned import train_conditioned
from hti_rl.training.retrained import train_all
from hti_rl.training.shared_start import train_finetuned
from hti_rl.training.store import load_agent_actor, load_anchor_actor

Timed = Callable[[str, Callable[[], Any]], Any]


@dataclass
class Trained:
    """What phase 1 trained besides anchors and retrained agents (their files are read later)."""

    conditioned_metas: dict[str, Any] = field(default_factory=dict)
    shared_spec: TaskSpec | None = None
    finetuned_metas: dict[float, Any] = field(default_factory=dict)


@dataclass
class Fitted:
    """Phases 2-3: the anchors' check, the datasets, the anchor actors and every method's policy."""

    cross: CrossEval
    dataset: PolicyDataset
    actors: list[AnchorActor]
    policies: dict[str, Any]
    fit_seconds: dict[str, float]
    calibration_cost: Any = None
    refine_metas: dict[str, Any] = field(default_factory=dict)
    shared_actors: list[AnchorActor] = field(default_factory=list)
    finetuned_actors: dict[float, AnchorActor] = field(default_factory=dict)


def train_agents(spec: TaskSpec, task: TaskSpec, exp: Experiment, run_root: str | Path, workers: int, progress: bool,
                 timed: Timed) -> Trained:
    """Phase 1: anchors and retrained agents (together over ``workers``), the conditioned peers, and with
    ``shared_start`` methods the shared-start anchors and the shared start fine-tuned at every held-out weight."""
    trained = Trained()
    timed("train anchors + retrained agents", lambda: train_all(spec, exp.retrained_seeds, run_root, workers, progress))
    conditioned = [m for m in exp.methods if m in CONDITIONED]
    if conditioned:
        factors = [METHODS[m].budget_factor for m in conditioned]
        metas = timed("train conditioned agents", lambda: train_conditioned(spec, factors, run_root, workers, progress=progress))
        trained.conditioned_metas = dict(zip(conditioned, metas))
    if exp.shared_start:
        shared_spec = trained.shared_spec = task.with_shared_start()
        timed("train shared-start anchors", lambda: train_anchors(shared_spec, run_root, workers=workers, progress=progress))
        metas = timed("fine-tune the shared start at held-out weights",
                      lambda: train_finetuned(shared_spec, spec.held_out, run_root, workers, progress))
        trained.finetuned_metas = dict(zip(spec.held_out, metas))
    return trained


def fit_methods(spec: TaskSpec, shared_spec: TaskSpec | None, exp: Experiment, run_root: str | Path, force: bool,
                progress: bool, timed: Any, log: Callable[[str], None], workers: int = 1) -> Fitted:
    """Phases 2-3: check the anchors, record the dataset(s), fit (or load) every method; train the refining rows
    (``workers`` at once), which start from ``deployed``."""
    from hti_rl.methods.conditioned import load_conditioned_policy

    cross = timed("check anchors", lambda: check_anchors(spec, run_root, log_warnings=False))
    dataset = _dataset(spec, run_root, progress, timed, "record")
    actors = [load_anchor_actor(spec, w, run_root) for w in spec.anchors]
    fitted = Fitted(cross, dataset, actors, policies={}, fit_seconds={})
    for name in exp.method_names():
        if name in ("optimum", "deployed"):  # deployed: calibrated below, from the first CLOT variant
            continue
        if name in CONDITIONED:  # trained in phase 1, nothing to fit
            fitted.policies[name] = load_conditioned_policy(spec, METHODS[name].budget_factor, run_root)
            continue
        log(f"== fit {name}")
        fitted.policies[name], fitted.fit_seconds[name] = ensure_method(spec, exp, name, dataset, actors, run_root, force, progress)
    if "deployed" in exp.method_names():
        fitted.policies["deployed"], fitted.calibration_cost = timed("calibrate deployed", lambda: ensure_deployed(
            spec, exp, dataset, actors, run_root, force, progress))
    if exp.refine:
        from hti_rl.compare.refining import train_refine_rows

        rows, fitted.refine_metas = timed("train refining rows", lambda: train_refine_rows(
            spec, exp.refine, fitted.policies["deployed"], run_root, workers, progress))
        fitted.policies.update(rows)
    if shared_spec is not None:
        shared_data = _dataset(shared_spec, run_root, progress, timed, "record shared-start anchors")
        fitted.shared_actors = [load_anchor_actor(shared_spec, w, run_root) for w in spec.anchors]
        for name in exp.shared_method_names():
            log(f"== fit shared/{name}")
            fitted.policies[f"shared/{name}"], fitted.fit_seconds[f"shared/{name}"] = ensure_method(
                shared_spec, exp, name, shared_data, fitted.shared_actors, run_root, force, progress)
        fitted.finetuned_actors = {w: load_agent_actor(shared_spec, RunDir.of(shared_spec, run_root).finetuned(w),
                                                       lambda: shared_spec.make_env(w)) for w in spec.held_out}
    timed.record({f"fit {n}": s for n, s in fitted.fit_seconds.items()})
    return fitted


def _dataset(spec: TaskSpec, run_root: str | Path, progress: bool, timed: Timed, stage: str) -> PolicyDataset:
    """The task's recorded dataset, recorded now if missing."""
    path = RunDir.of(spec, run_root).dataset
    if path.exists():
        return PolicyDataset.load(path, spec)
    return timed(stage, lambda: record(spec, run_root, progress=progress))


def ensure_method(spec: TaskSpec, exp: Experiment, name: str, dataset: PolicyDataset, actors: list[AnchorActor],
                  run_root: str | Path, force: bool, progress: bool) -> tuple[AnchoredPolicy, float]:
    """Load ``name``'s fitted policy when it matches the dataset and settings, else fit and save it.

    :param name: ``clot/<variant>`` or a baseline's name.
    :return: (policy, its fit seconds: now, or as recorded when loaded).
    """
    path = RunDir.of(spec, run_root).method(name)
    settings = exp.variants[name.split("/", 1)[1]] if name.startswith("clot/") else {}
    # The key holds the fully resolved CLOT config, so a changed pipeline default refits too.
    resolved = dataclasses.asdict(clot_config(settings, seed=spec.seed)) if name.startswith("clot/") else {}
    key = json.dumps({"method": name, "settings": resolved, "seed": exp.seed}, sort_keys=True)
    if path.exists() and not force:
        try:
            policy = AnchoredPolicy.load(path, expect_fingerprint=spec.fingerprint())
        except FileFormatError as error:  # an older format or a damaged file: refit it
            print(f"refitting {name}: {error}", flush=True)
            policy = None
        if policy is not None and policy.header.get("dataset_sha256") == dataset.header.get("checksum") \
                and policy.header.get("compare_key") == key:
            return policy, float(policy.header.get("fit_seconds", float("nan")))
    started = time.perf_counter()
    if name.startswith("clot/"):
        fit_clot_policy = fit_grid_policy if spec.is_vector else fit_policy
        policy = fit_clot_policy(spec, dataset, actors, clot_config(settings, seed=spec.seed), progress=progress)
    else:
        method = METHODS[name]
        policy = (method.fit_grid if spec.is_vector else method.fit)(spec, dataset, actors, exp.seed)
    seconds = time.perf_counter() - started
    policy.header["compare_key"] = key
    policy.header["fit_seconds"] = round(seconds, 2)
    policy.save(path)
    return policy, seconds


def ensure_deployed(spec: TaskSpec, exp: Experiment, dataset: PolicyDataset, actors: list[AnchorActor], run_root: str | Path,
                    force: bool, progress: bool) -> tuple[AnchoredPolicy, Any]:
    """The method ``deployed``: the first CLOT variant, calibrated (:func:`hti_rl.deploy.calibrate.calibrate_policy`, on
    the calibration's own episodes, never the comparison's), saved to ``runs/<task>/compare/deployed.zip``; the
    calibration's finished grid weights are reused (``runs/<task>/calibration/compare-deployed/``).

    :return: (the calibrated policy, the calibration run's :class:`~hti_rl.deploy.calibrate.Cost`).
    """
    from hti_rl.deploy.calibrate import calibrate_policy
    from hti_rl.deploy.figure import write_figure

    variant = f"clot/{next(iter(exp.variants))}"
    ensure_method(spec, exp, variant, dataset, actors, run_root, force, progress)
    run = RunDir.of(spec, run_root)
    policy = AnchoredPolicy.load(run.method(variant), expect_fingerprint=spec.fingerprint(), calibrated=False)  # its own copy
    calibration, cost = calibrate_policy(policy, spec, run, "compare/deployed", progress=progress, **exp.calibration)
    policy.attach_calibration(calibration)
    policy.header["method"] = "deployed"
    policy.save(run.method("deployed"))
    if spec.grid.dim <= 2:  # the figure draws one weight axis, or two as heat maps
        write_figure(calibration, run.calibration("compare/deployed") / "calibration.png")
    return policy, cost
