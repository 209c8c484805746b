"""The fit stage: recorded dataset + anchor actors -> CLOT fit -> ``runs/<task>/surrogate.zip``.

This is the one place where the RL side meets the CLOT core: observations become standardised
conditions x, anchor weights become times in the task's weight scale, and the anchors' action
samples become the marginals the core transports between.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from hti_rl.actors import AnchorActor
from hti_rl.clot import CLOTConfig, CLOTData, CLOTModel, fit_clot
from hti_rl.dataset import PolicyDataset, recorded_checksum, stale_anchors
from hti_rl.errors import FileFormatError, SpecError
from hti_rl.io import RunLock, check_writable
from hti_rl.methods.base import AnchoredPolicy, base_arguments
from hti_rl.methods.baselines import blend_actors
from hti_rl.methods.calibrated import Calibrated
from hti_rl.methods.calibration import (
    PARAM_INTERP,
    SURROGATE,
    Calibration,
    anchor_name,
    state_digest,
)
from hti_rl.methods.deployed import AtWeight
from hti_rl.methods.origin import HEADER_KEY, spec_reference
from hti_rl.methods.policy_file import read_policy_file
from hti_rl.runs import DEFAULT_ROOT, RunDir
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage
from hti_rl.training.store import load_anchor_actor


class SurrogatePolicy(Calibrated, AnchoredPolicy):
    """hti-rl's policy at any weight: anchor actions moved along the fitted CLOT paths, or, once calibrated
    (``hti-rl calibrate``), the candidate the calibration chose at the weight (docs/method.md §10).

    :param clot: the CLOT model fitted on the anchors' action samples.
    :param calibration: the stored calibration, or ``None`` (the plain surrogate everywhere).
    :param base: the :class:`AnchoredPolicy` arguments.

    Example::

        policy = SurrogatePolicy.load("runs/lqr2d/surrogate.zip")
        policy.set_weight(3.0)              # deploys the calibration's choice at 3.0, if calibrated
        policy.deployment(3.0).lines()      # what that is, its estimated return, each anchor's
        action, _ = policy.predict(obs, deterministic=True)
        policy.use_calibration = False      # the plain surrogate (SurrogatePolicy.load(..., calibrated=False) too)
    """

    trace = True  # run the fused module through TorchScript traces (False: eagerly; the same numbers)

    def __init__(self, *args: Any, clot: CLOTModel, calibration: Calibration | None = None, **base: Any):
        self._init_calibration()
        self.clot = None  # set before the base constructor's set_weight builds the module at that weight
        super().__init__(*args, **base)
        clot.check_times(list(self.times), f"this policy's (its weights {self.weights} on the {self.axis.scale} scale)")
        self.clot = clot
        self._at_weight()
        if calibration is not None:
            self.attach_calibration(calibration)

    def _at_weight(self) -> None:
        """Build the policy at the new weight as one module (:class:`AtWeight`): the interval, the local
        time and the spline basis there are computed now, not at every ``predict``."""
        if self.clot is None:
            return
        k, s = self._interval
        if s == 0.0 or s == 1.0:  # an anchor weight: that anchor's own action, exactly
            key, t = ("anchor", k if s == 0.0 else k + 1), 0.0
        else:
            key, t = ("path", k), self.times[k] + s * (self.times[k + 1] - self.times[k])
        at = self.__dict__.setdefault("_at", {}).get(key)
        if at is None:
            start, end, clot = (self.actors[key[1]], None, None) if key[0] == "anchor" else (self.actors[k], self.actors[k + 1], self.clot)
            # Held outside the registered submodules: it only reuses the policy's own actors and CLOT nets, so
            # the policy's parameters and state_dict stay those of the file.
            at = self._at[key] = AtWeight(start, end, clot, k, t, self.x_mean, self.x_std).eval()
        elif at.path:
            at.move_to(t)
        self.__dict__["at_weight"] = at


    # ------------------------------------------------------------ calibration (the rest: methods/calibrated.py)
    def digest(self) -> str:
        """The identity of this surrogate's parameters (CLOT model and anchor actors) that a calibration names."""
        return state_digest({"clot": self.clot.state(), "actors": [a.state() for a in self.actors]})

    def _checked_weight(self, weight: Any) -> float:
        return float(self.axis.check(weight, self.allow_extrapolation))

    def set_weight(self, weight: float) -> None:
        """Deploy at ``weight``: the calibration's choice there when calibrated (see :class:`Calibration`), else
        the plain surrogate; the choice, and a blended actor for parameter interpolation, are made here, not in predict.

        :raises WeightError: as :meth:`AnchoredPolicy.set_weight`.
        """
        super().set_weight(weight)
        candidate = self._candidate()
        actor = None
        if candidate == PARAM_INTERP:
            k, s = self._interval
            actor = blend_actors(self.actors[k], self.actors[k + 1], s)
        elif candidate != SURROGATE:
            actor = self.actors[[anchor_name(w) for w in self.weights].index(candidate)]
        self._deployed = (candidate, actor)

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """obs [B, C] (raw env observations) -> env actions [B, D]: the deployed candidate's, else the surrogate's."""
        obs = observation.float().reshape(observation.shape[0], -1)
        actor = self._deployed[1]
        if actor is not None:  # the calibration deployed an anchor (or parameter interpolation) here
            return actor.to_env_action(self.anchor_draw(actor, obs, deterministic)[0])
        at = self.at_weight
        noise = end_noise = None
        if not deterministic:
            # The draws of the unfused computation, in its order: anchor k's noise, reused for anchor k+1
            # (their monotone, W2-optimal coupling), a fresh draw only where anchor k is deterministic.
            start_draws, end_draws, dim = at.draws
            shape = (obs.shape[0], dim)
            if start_draws:
                noise = torch.randn(shape, generator=self.generator)
            if end_draws:
                end_noise = noise if noise is not None else torch.randn(shape, generator=self.generator)
        return at.run(obs, noise, end_noise) if self.trace else at(obs, noise, end_noise)

    # --------------------------------------------------------------- surrogate
    def _between(self, obs: torch.Tensor, x: torch.Tensor, k: int, s: float, deterministic: bool) -> torch.Tensor:
        """The unfused computation (the reference :class:`AtWeight` reproduces): anchor k's draw pushed
        along the CLOT path to local time s."""
        y_k, noise = self.anchor_draw(self.actors[k], obs, deterministic)
        y_end = None
        if self.clot.endpoint:
            y_end, _ = self.anchor_draw(self.actors[k + 1], obs, deterministic, noise)
        t = torch.full((obs.shape[0],), self.times[k] + s * (self.times[k + 1] - self.times[k]))
        return self.clot.push(y_k, x, t, y_end=y_end)

    def method_state(self) -> dict[str, Any]:
        return {"clot": self.clot.state(), **self.calibration_state()}

    @classmethod
    def from_method_state(cls, state: dict[str, Any], **base: Any) -> "SurrogatePolicy":
        """Rebuild; ``base["calibrated"]`` (default true) reads the stored calibration, false ignores it.

        :raises FileFormatError: the stored calibration is damaged, of another version, or not this surrogate's.
        """
        calibrated = bool(base.pop("calibrated", True))
        policy = cls(clot=CLOTModel.from_state(state["clot"]), **base)
        policy.read_calibration(state, calibrated, base.get("header", {}).get("task"))
        return policy


# The deployed policy holds every anchor actor, so the end of each path is anchor k+1's own action at
# the observation (exact) rather than a learned map T_k(y): "endpoint" mode (docs/method.md §6.3). For Gaussian
# anchors, drawing both ends with the same noise is the exact W2 coupling of the two diagonal
# Gaussians, which is what T_k would have to learn. Map mode stays one override away (--set mode=map).
# The potential's strength is the paper's RL setting (α = 0.001): with the core's α = 1 the KDE, pooled
# over neighbouring states, pulled actions at outlying states towards other states' actions; measured on
# 2-D LQR at λ = 3 (experiments/lqr2d): return −803 ± 690 with α = 1 against −9.4 ± 3.1 without a potential.
# The metric's eigenvalue floor is 0.3 (core default 0.1): anchors give no samples between them, so a
# strongly anisotropic metric only bends paths away from the truth. Mean relative error of the
# deterministic action against the Riccati optimum, 2-D LQR, anchors 0.1…10 half a decade apart, held-out
# 0.2/0.5/2/5, 600 steps: floor 0.1 seed 0: 5.3/5.3/5.7/7.5%; floor 0.3, seeds 0-2: at most 1.1/1.1/3.1/3.7%
# (a straight line in log λ, G = I: 0.6/1.2/3.1/3.7%).
# Path bends are bounded to half the chord (max_bend 0.5; unbounded in the core): measured on 2-D LQR
# (experiments/lqr2d, λ = 3), the unbounded path net bent actions at states outside the recorded set
# enough to destabilise the closed loop: return −1418 ± 860 against −9.2 ± 3.0 bounded.
# The path net is 32 wide (core default 256): its FiLM head is most of predict's arithmetic, and at 256
# a batch of 256 observations took ~100x SB3's own PPO predict. Measured on 2-D LQR with exact-gain
# anchors 0.1, 1, 10 (the demo's), 600 steps, seeds 0 and 1, mean relative error of the deterministic
# action against the Riccati optimum at held-out 0.3 / 3: width 256 1.63-1.78% / 17.98-18.38%,
# width 32 1.51-1.57% / 17.96-18.02%; largest action difference between the two widths over 1,000
# recorded states 0.02 (seed 0) and 0.44 (seed 1, where widths 64 and 256 differ as much: the fits'
# own spread at outlying states). (bench/path_width.py measured it; bench/predict_latency.py times predict.)
PIPELINE_DEFAULTS: dict[str, Any] = {"mode": "endpoint", "alpha": 0.001, "metric_floor": 0.3, "max_bend": 0.5, "path_hidden": 32}


def clot_config(overrides: dict[str, Any] | None = None, seed: int = 0) -> CLOTConfig:
    """The pipeline's :class:`CLOTConfig`: the core's defaults, then :data:`PIPELINE_DEFAULTS`, then
    ``overrides`` (strings from the command line are converted to each field's type).

    :raises SpecError: an unknown field or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(CLOTConfig)}
    values: dict[str, Any] = {"seed": seed}
    for name, value in {**PIPELINE_DEFAULTS, **(overrides or {})}.items():
        if name not in fields:
            raise SpecError(f"unknown CLOT setting {name!r}; known: {', '.join(sorted(fields))}.")
        default = getattr(CLOTConfig(), name)
        try:
            if isinstance(default, bool) and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1")
            elif default is None:  # optional number (max_bend): "none" or a float
                value = None if value is None or str(value).lower() == "none" else float(value)
            elif not isinstance(default, str):
                value = type(default)(value)
        except (TypeError, ValueError):
            raise SpecError(f"CLOT setting {name}={value!r} must be a {type(default).__name__} (default {default!r}).") from None
        values[name] = value
    return CLOTConfig(**values)


@stage
@stage
def fit(
    spec: TaskSpec,
    run_root: str | Path = DEFAULT_ROOT,
    config: CLOTConfig | None = None,
    progress: bool = True,
    dataset: PolicyDataset | None = None,
) -> SurrogatePolicy:
    """Fit the CLOT surrogate on the task's recorded dataset and write ``runs/<task>/surrogate.zip``.

    :param spec: the task.
    :param run_root: root of the run directories.
    :param config: CLOT settings; the defaults with ``seed = spec.seed`` when ``None``.
    :param progress: show a progress bar.
    :param dataset: an already loaded dataset (read from ``runs/<task>/dataset.npz`` when ``None``).
    :return: the fitted policy (already saved).
    """
    config = config or clot_config(seed=spec.seed)
    run = RunDir.of(spec, run_root)
    read_here = dataset is None
    if dataset is None:
        if not run.dataset.exists():
            raise FileFormatError(f"no dataset at {run.dataset}. Record one first: `hti-rl record {spec.path}`.")
        dataset = PolicyDataset.load(run.dataset, spec=spec)  # refuses a dataset of other anchors than the current ones
    with RunLock(run.anchors, "hti-rl fit"):  # the anchors read are the ones the dataset was recorded from
        stale = stale_anchors(dataset.header, spec, run)
        if stale:
            raise FileFormatError(f"the dataset {stale}; re-run `hti-rl record {spec.path} --force`, then fit.")
        actors = [load_anchor_actor(spec, w, run_root) for w in spec.anchors]
    check_writable(run.tb("clot"))
    policy = fit_policy(spec, dataset, actors, config, log_dir=run.tb("clot"), progress=progress)
    if read_here and recorded_checksum(run.dataset) != dataset.header.get("checksum"):
        raise FileFormatError(f"{run.dataset} was recorded again while this fit ran; the surrogate was not saved. "
                              f"Run `hti-rl fit {spec.path} --force` to fit on the new dataset.")
    policy.header[HEADER_KEY] = spec_reference(spec, run_root)  # lets `hti-rl deploy` find the spec (methods/origin.py)
    policy.save(run.surrogate)
    return policy


def stale_reason(spec: Any, run_root: str | Path = "runs") -> str | None:
    """Why the task's ``surrogate.zip`` must be fitted again (unreadable, or fitted on another dataset
    than the current one, or that dataset is itself stale), or ``None`` when it is up to date."""
    run = RunDir.of(spec, run_root)
    try:
        header, _ = read_policy_file(run.surrogate)
    except FileFormatError as exc:
        return str(exc)
    if header.get("task_fingerprint") != spec.fingerprint():
        return f"{run.surrogate} was fitted for another version of the spec"
    if header.get("dataset_sha256") != recorded_checksum(run.dataset):
        return f"{run.surrogate} was fitted on another dataset than {run.dataset}"
    if header.get("anchor_sha256") != run.anchor_digests(spec.anchors):
        return f"{run.surrogate} was fitted on other anchors than those now in {run.anchors}"
    return None


@stage
def fit_policy(
    spec: TaskSpec,
    dataset: PolicyDataset,
    actors: list[AnchorActor],
    config: CLOTConfig,
    log_dir: str | Path | None = None,
    progress: bool = True,
) -> SurrogatePolicy:
    """Fit CLOT on a dataset and wrap it with the anchor actors as a :class:`SurrogatePolicy` (not saved).

    :param spec: the task.
    :param dataset: the anchors' recorded dataset (obs [N, C], samples [K, N, M, D]).
    :param actors: one anchor actor per anchor weight, in weight order.
    :param config: CLOT settings.
    :param log_dir: TensorBoard directory of the fit, or None.
    :param progress: show a progress bar.
    :return: a :class:`SurrogatePolicy`, or on a task weighing several components a
        :class:`~hti_rl.methods.grid_surrogate.GridSurrogatePolicy`.
    """
    if spec.is_vector:  # several weights at once: scalar CLOT models along the grid's rows and columns
        from hti_rl.methods.grid_surrogate import fit_grid_policy

        return fit_grid_policy(spec, dataset, actors, config, log_dir=None if log_dir is None else str(log_dir), progress=progress)
    base = base_arguments(spec, dataset, actors, config.seed, "clot")
    data = CLOTData(
        x=torch.from_numpy((dataset.obs - base["x_mean"]) / base["x_std"]),
        times=torch.tensor(spec.axis.times, dtype=torch.float32),
        y=torch.from_numpy(dataset.samples),
    )
    started = time.perf_counter()
    model = fit_clot(data, config, log_dir=None if log_dir is None else str(log_dir), progress=progress)
    base["header"].update(clot_config=dataclasses.asdict(config), fit_seconds=round(time.perf_counter() - started, 2))
    return SurrogatePolicy(clot=model, **base)
