"""A peer baseline: one weight-conditioned agent, trained with the anchors' total compute.

What a user would do instead of hti-rl (DESIGN.md section 7): train a single SB3 agent (the task's
algorithm and hyperparameters) whose observation carries the reward weight
(:class:`hti_rl.wrappers.WeightInObservation`: ``log λ`` on a log-scale task), the weight drawn per
episode uniformly in that coordinate over the anchor range. Its budget is what the anchors cost,
number of anchors × ``n_timesteps``, times a factor F (``conditioned`` is F = 1, ``conditioned_x2``
F = 2 in ``hti-rl compare``).

Training reuses the anchors' job machinery (:func:`hti_rl.anchors.train_anchor`: checkpoints, resume,
TensorBoard, ``meta.json`` written last) through :class:`ConditionedJob`, which only changes the env,
the budget, the seed and the directory. Layout of ``runs/<task>/``::

    conditioned/.lock                 held while training
    conditioned/f=<F>/model.zip       the agent (its observation: the env's + the weight coordinate)
    conditioned/f=<F>/vecnormalize.pkl
    conditioned/f=<F>/meta.json       an anchor's meta, plus budget_factor, budget, weight_range, weight_scale
    conditioned/f=<F>/checkpoints/    as an anchor's, removed when finished
    tb/conditioned_f=<F>_1/           TensorBoard

:class:`ConditionedPolicy` wraps the agent in the :class:`~hti_rl.policy.AnchoredPolicy` interface
(``set_weight``, ``predict`` on raw env observations, ``save``/``load``), so that ``hti-rl compare``
evaluates it like every other method; it appends the weight coordinate to each observation itself.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from hti_rl.actors import AnchorActor
from hti_rl.anchors import AnchorJob, CHECKPOINTS_PER_RUN, load_agent_actor, package_versions, run_jobs
from hti_rl.errors import AnchorError, HTIError
from hti_rl.io import RunLock
from hti_rl.policy import AnchoredPolicy, weight_to_time
from hti_rl.wrappers import WeightInObservation

METHODS = {"conditioned": 1.0, "conditioned_x2": 2.0}
"""``hti-rl compare`` method name -> budget factor."""
_CONDITIONED_KEY = 2**32 - 5  # seeds conditioned agents apart from anchors, retrained agents and evaluation


# ----------------------------------------------------------------------------- layout and budget
def conditioned_root(spec: Any, run_root: str | Path = "runs") -> Path:
    """``runs/<task>/conditioned``: the directory locked while conditioned agents train."""
    return Path(spec.run_dir(run_root)) / "conditioned"


def conditioned_dir(spec: Any, factor: float, run_root: str | Path = "runs") -> Path:
    """``runs/<task>/conditioned/f=<F>`` with F formatted by ``f"{F:g}"``."""
    return conditioned_root(spec, run_root) / f"f={factor:g}"


def conditioned_budget(spec: Any, factor: float) -> int:
    """Steps of the conditioned agent: number of anchors × ``n_timesteps`` × ``factor`` (rounded).

    :raises HTIError: ``factor`` is not a positive finite number.
    """
    factor = _check_factor(factor)
    return int(round(len(spec.anchors) * int(spec.hyperparams()["n_timesteps"]) * factor))


def make_conditioned_env(spec: Any, weight: float | None = None, seed: int | None = None) -> WeightInObservation:
    """The spec's env with the weight in its observation: sampled per episode over the anchor range
    (``weight=None``: training) or fixed at ``weight`` (evaluation).

    :param seed: seeds the weight draws (a ``reset(seed=...)`` reseeds them).
    """
    return WeightInObservation(
        spec.make_env(spec.anchors[0] if weight is None else weight),
        weight_range=(spec.anchors[0], spec.anchors[-1]),
        scale=spec.weight_scale,
        fixed=weight,
        seed=seed,
    )


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class ConditionedJob(AnchorJob):
    """The conditioned agent of budget factor ``factor`` as an anchor job: same algorithm,
    hyperparameters, checkpoints and resume; its own env (:func:`make_conditioned_env`), budget
    (:func:`conditioned_budget`), seed and directory (:func:`conditioned_dir`).

    :param factor: the budget factor F.
    """

    factor: float = 1.0

    @property
    def weight(self) -> None:  # type: ignore[override]
        """No single weight: every episode draws its own."""
        return None

    @property
    def key(self) -> tuple[Any, ...]:
        return ("conditioned", self.factor)

    @property
    def seed(self) -> int:
        return int(np.random.SeedSequence([self.spec.seed, _CONDITIONED_KEY, int(round(self.factor * 1000))]).generate_state(1)[0] % 2**31)

    @property
    def directory(self) -> Path:
        return conditioned_dir(self.spec, self.factor, self.run_root)

    @property
    def tb_name(self) -> str:
        return f"conditioned_f={self.factor:g}"

    def make_env(self) -> WeightInObservation:
        return make_conditioned_env(self.spec)

    def budget(self, hp: dict[str, Any]) -> int:
        return conditioned_budget(self.spec, self.factor)

    def extra_meta(self) -> dict[str, Any]:
        return {"budget_factor": self.factor, "budget": conditioned_budget(self.spec, self.factor),
                "weight_range": [self.spec.anchors[0], self.spec.anchors[-1]], "weight_scale": self.spec.weight_scale}


def train_conditioned(
    spec: Any,
    factors: Sequence[float] = (1.0,),
    run_root: str | Path = "runs",
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
    checkpoint_every: int | None = None,
) -> list[dict[str, Any]]:
    """Train (or resume) one conditioned agent per budget factor; finished ones are skipped unless ``force``.

    :param spec: the task spec.
    :param factors: budget factors F (budget = anchors × ``n_timesteps`` × F).
    :param run_root: root of the run directories.
    :param workers: agents trained at once (local processes, one torch thread each).
    :param force: retrain finished agents and discard checkpoints.
    :param progress: show a progress bar of steps.
    :param checkpoint_every: steps between checkpoints; a tenth of each budget when ``None``.
    :return: every agent's ``meta.json``, in the order of ``factors``.
    :raises RunLockedError: another process is training this task's conditioned agents.
    """
    factors = list(dict.fromkeys(_check_factor(f) for f in factors))
    if int(workers) < 1:
        raise HTIError(f"workers must be ≥ 1, got {workers}.")
    jobs = [ConditionedJob(spec, 0, str(run_root), int(checkpoint_every or max(conditioned_budget(spec, f) // CHECKPOINTS_PER_RUN, 1)), None, f)
            for f in factors]
    with RunLock(conditioned_root(spec, run_root), "hti-rl train-conditioned"):
        if force:
            for job in jobs:
                (job.directory / "meta.json").unlink(missing_ok=True)
                shutil.rmtree(job.directory / "checkpoints", ignore_errors=True)
        for job in jobs:
            _check_meta(spec, job.directory, job.factor, missing_ok=True)
        todo = [job for job in jobs if not (job.directory / "meta.json").exists()]
        run_jobs(todo, workers, sum(conditioned_budget(spec, job.factor) for job in todo), progress,
                 description="train conditioned")
    return [json.loads((job.directory / "meta.json").read_text()) for job in jobs]


# ----------------------------------------------------------------------------- the policy
class ConditionedPolicy(AnchoredPolicy):
    """The weight-conditioned agent with SurrogatePolicy's interface: ``predict`` takes raw env
    observations ``[C]`` / ``[B, C]`` and appends the current weight's coordinate (``log λ`` on a log
    scale) before the agent sees them. The weight must lie in the range the agent was trained on.

    The base class keeps one actor per anchor weight; here every slot holds the one conditioned actor
    (its observation has C + 1 entries), so the file format and ``AnchoredPolicy.load`` are unchanged.

    Example::

        policy = load_conditioned_policy(spec, factor=1.0)
        policy.set_weight(3.0)
        action, _ = policy.predict(obs, deterministic=True)
    """

    @classmethod
    def from_actor(cls, spec: Any, actor: AnchorActor, header: dict[str, Any] | None = None, weight: float | None = None) -> "ConditionedPolicy":
        """Wrap a conditioned actor for ``spec``'s env (its raw observation space and action space)."""
        env = spec.make_env(spec.anchors[0])
        try:
            obs_space, action_space = env.observation_space, env.action_space
        finally:
            env.close()
        c = int(np.prod(obs_space.shape))
        return cls(obs_space, action_space, [actor] * len(spec.anchors), spec.anchors, spec.weight_scale,
                   x_mean=np.zeros(c, dtype=np.float32), x_std=np.ones(c, dtype=np.float32), header=header, weight=weight)

    @property
    def coordinate(self) -> float:
        """The current weight in the observed coordinate."""
        return weight_to_time(self.weight, self.weight_scale)

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """obs [B, C] (raw env observations) -> env actions [B, D]."""
        obs = observation.float().reshape(observation.shape[0], -1)
        conditioned = torch.cat([obs, torch.full((obs.shape[0], 1), self.coordinate)], dim=1)
        actor = self.actors[0]
        return actor.to_env_action(self.anchor_draw(actor, conditioned, deterministic)[0])


def load_conditioned_actor(spec: Any, factor: float, run_root: str | Path = "runs") -> AnchorActor:
    """The finished conditioned agent of budget factor ``factor`` as an :class:`AnchorActor`, read
    without unpickling code (:mod:`hti_rl.safe_sb3`, :mod:`hti_rl.safe_pickle`).

    :raises AnchorError: not trained (or not finished), or trained for another version of the spec.
    """
    directory = conditioned_dir(spec, factor, run_root)
    _check_meta(spec, directory, factor)
    return load_agent_actor(spec, directory, lambda: make_conditioned_env(spec))


def load_conditioned_policy(spec: Any, factor: float, run_root: str | Path = "runs", weight: float | None = None) -> ConditionedPolicy:
    """The finished conditioned agent of budget factor ``factor`` as a :class:`ConditionedPolicy`."""
    directory = conditioned_dir(spec, factor, run_root)
    meta = json.loads((directory / "meta.json").read_text()) if (directory / "meta.json").exists() else {}
    header = {"task": spec.name, "task_fingerprint": spec.fingerprint(), "seed": spec.seed, "budget_factor": float(factor),
              "steps": meta.get("steps"), "wall_time_s": meta.get("wall_time_s"), "versions": package_versions()}
    return ConditionedPolicy.from_actor(spec, load_conditioned_actor(spec, factor, run_root), header=header, weight=weight)


def _check_meta(spec: Any, directory: Path, factor: float, missing_ok: bool = False) -> None:
    path = directory / "meta.json"
    hint = f"`hti-rl train-conditioned {spec.path} --budget-factor {factor:g}`"
    if not path.exists():
        if missing_ok:
            return
        raise AnchorError(f"the conditioned agent of task {spec.name!r} with budget factor {factor:g} is not trained ({path} is missing); run {hint}.")
    if json.loads(path.read_text()).get("task_fingerprint") != spec.fingerprint():
        raise AnchorError(f"{directory} was trained for another version of task {spec.name!r}; retrain it with {hint} --force.")


def _check_factor(factor: Any) -> float:
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise HTIError(f"budget factor {factor!r} is not a number; give a positive number (1 = the anchors' total steps).") from None
    if not np.isfinite(value) or value <= 0:
        raise HTIError(f"budget factor {factor!r} must be a positive finite number (1 = the anchors' total steps).")
    return value
