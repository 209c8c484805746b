"""``hti-rl refine``: train briefly at a weight from the candidate deployed there, and make the result an anchor.

1. :func:`check_refine`: the weight lies strictly inside the anchor range and is not an anchor (unless
   ``force``), the budget factor is positive and at most :data:`MAX_BUDGET_FACTOR`, the surrogate is calibrated.
2. The start (:mod:`hti_rl.refine.start`): the deployed anchor's own model, or the surrogate distilled into
   the nearest anchor's model.
3. Training: the task's algorithm and hyperparameters at λ for ``factor`` × the anchor budget
   (:class:`~hti_rl.training.warm_start.WarmStartJob`: checkpoints, resume after SIGKILL, TensorBoard).
4. Installing (:mod:`hti_rl.refine.install`): a new anchor at λ, the dataset grown by it, the surrogate
   refitted with its previous settings and calibrated again with its previous settings.

Files: ``runs/<task>/refine/w=<λ>/f=<F>/start/`` (a distilled start) and ``.../agent/`` (the run), then
``runs/<task>/anchors/w=<λ>/`` and ``runs/<task>/refined.json``.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hti_rl.clot import CLOTConfig
from hti_rl.errors import HTIError
from hti_rl.methods.calibration import PARAM_INTERP, SURROGATE, anchor_name
from hti_rl.methods.surrogate import SurrogatePolicy
from hti_rl.refine.start import Start, anchor_start, distilled_start
from hti_rl.runs import DEFAULT_ROOT, RunDir, read_meta, spec_hint
from hti_rl.seeds import refine_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.warm_start import MAX_BUDGET_FACTOR, train_warm_starts, warm_start_job
from hti_rl.weights import exact

DEFAULT_FACTOR = 0.25


@dataclass(frozen=True)
class Refined:
    """What a refine did.

    :param weight: λ.
    :param start: where it started.
    :param steps: its budget (environment steps).
    :param agent: the run's directory.
    :param before: the deployed candidate's estimate at λ before refining (mean, ci) or ``None``.
    :param after: the refined anchor's estimate at λ after recalibrating (mean, ci).
    :param spec: the spec with the new anchor.
    """

    weight: float
    start: Start
    steps: int
    agent: Path
    before: tuple[float, float] | None
    after: tuple[float, float] | None
    spec: TaskSpec

    def lines(self) -> list[str]:
        """The refine in words."""
        out = [f"refined at weight {exact(self.weight)}: started from {self.start.candidate}"
               + (f" (actor distilled into anchor w={self.start.anchor:g}'s model: action error {self.start.distillation['before']:.3g} -> "
                  f"{self.start.distillation['after']:.3g})" if self.start.distillation else "")
               + f", trained {self.steps} steps at the weight"]
        if self.start.note:
            out.append(f"note: {self.start.note}")
        if self.before:
            out.append(f"deployed there before: {self.before[0]:.4g} ± {self.before[1]:.3g}")
        if self.after:
            out.append(f"the refined anchor there now: {self.after[0]:.4g} ± {self.after[1]:.3g} (fresh calibration episodes)")
        return out


def check_refine(spec: TaskSpec, weight: Any, factor: Any, run_root: str | Path, force: bool) -> tuple[float, float, SurrogatePolicy]:
    """Validate a refine before any work: -> (weight, factor, the calibrated surrogate).

    :raises HTIError: a weight outside the anchor range or already an anchor (without ``force``), a budget
        factor that is not in (0, MAX_BUDGET_FACTOR], no surrogate, or no calibration yet.
    """
    weight = float(weight)
    spec.axis.coord(weight)  # finite, and positive on a log scale
    if not spec.axis.low < weight < spec.axis.high:
        raise HTIError(f"--weight {exact(weight)} is outside the anchor range {spec.axis.range_text()} (or at its end); refine "
                       "at a weight strictly between two anchors (train an anchor to reach further).")
    if weight in spec.anchors and not force:
        raise HTIError(f"--weight {exact(weight)} is already an anchor of task {spec.name!r}; pass --force to refine it again "
                       "(the anchor there is replaced).")
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and 0 < factor <= MAX_BUDGET_FACTOR):
        raise HTIError(f"--budget must be a fraction of an anchor's budget in (0, {MAX_BUDGET_FACTOR:g}], got {factor}; "
                       f"the default is {DEFAULT_FACTOR}.")
    run = RunDir.of(spec, run_root)
    if not run.surrogate.exists():
        raise HTIError(f"no surrogate at {run.surrogate}: run `hti-rl fit {spec_hint(spec)}`, then "
                       f"`hti-rl calibrate {spec_hint(spec)}`, before refining.")
    policy = SurrogatePolicy.load(run.surrogate, expect_fingerprint=spec.fingerprint())
    if policy.calibration is None:
        raise HTIError(f"{run.surrogate} is not calibrated, so nothing says what is deployed at {exact(weight)}: "
                       f"run `hti-rl calibrate {spec_hint(spec)}` first.")
    return weight, float(factor), policy


def choose_start(spec: TaskSpec, weight: float, policy: SurrogatePolicy, directory: Path, run_root: str | Path) -> Start:
    """The start of a refine at ``weight``: what ``policy`` deploys there (:mod:`hti_rl.refine.start`)."""
    candidate = policy.deployment(weight).candidate
    if candidate in (SURROGATE, PARAM_INTERP):
        return distilled_start(spec, weight, policy, candidate, directory, run_root)
    return anchor_start(spec, float(candidate.split(":", 1)[1]), run_root)


def refine(spec: TaskSpec, weight: float, factor: float = DEFAULT_FACTOR, run_root: str | Path = DEFAULT_ROOT,
           force: bool = False, progress: bool = True) -> Refined:
    """Refine at ``weight`` and install the result as an anchor (see the module docstring).

    :param spec: the task spec with any refined anchors already among its anchors (:func:`~hti_rl.training.store.with_refined_anchors`).
    :param factor: the budget, as a fraction of an anchor's (``n_timesteps``).
    :param force: refine a weight that is already an anchor, and train again rather than resume.
    """
    from hti_rl.deploy.calibrate import calibrate
    from hti_rl.methods.surrogate import fit
    from hti_rl.refine.install import grow_dataset, install_anchor

    weight, factor, policy = check_refine(spec, weight, factor, run_root, force)
    before = policy.deployment(weight)
    calibration = policy.calibration
    directory = RunDir.of(spec, run_root).refine(weight, f"f={factor:g}")
    if force:
        shutil.rmtree(directory, ignore_errors=True)
    start = choose_start(spec, weight, policy, directory / "start", run_root)
    steps = max(1, int(round(factor * int(start.spec.hyperparams()["n_timesteps"]))))
    job = warm_start_job(spec=start.spec, at_weight=weight, steps=steps, out=directory / "agent", name=f"refine_w={exact(weight)}_f={factor:g}",
                         seed=refine_seed(spec, weight, 0), run_root=run_root, start_model=start.model, start_vecnormalize=start.vecnormalize,
                         provenance={**start.provenance(), "budget_factor": factor})
    train_warm_starts([job], progress=progress, description="refine")
    grown = _installed(spec, weight, directory / "agent", run_root)
    if grown is None:
        grown = install_anchor(spec, weight, directory / "agent", {**start.provenance(), "budget_factor": factor, "budget_steps": steps},
                               run_root)
    grow_dataset(grown, weight, run_root, progress)
    config = CLOTConfig(**policy.header["clot_config"])
    fit(grown, run_root, config, progress=progress)
    after, _ = calibrate(grown, run_root, calibration.per_interval, calibration.episodes, calibration.seed, progress=progress)
    return Refined(weight, start, steps, directory / "agent", before.estimate, after.deployment(weight).anchors.get(anchor_name(weight)), grown)


def _installed(spec: TaskSpec, weight: float, agent: Path, run_root: str | Path) -> TaskSpec | None:
    """The spec with the anchor at ``weight`` when that anchor already is this run's agent (a rerun), else ``None``."""
    from hti_rl.io import sha256_file
    from hti_rl.training.store import add_refined_anchor

    meta = read_meta(RunDir.of(spec, run_root).anchor(weight)) or {}
    refined = meta.get("refined") or {}
    if refined.get("agent") == str(agent) and (agent / "model.zip").exists() and refined.get("model_sha256") == sha256_file(agent / "model.zip"):
        return add_refined_anchor(spec, weight, run_root)
    return None
