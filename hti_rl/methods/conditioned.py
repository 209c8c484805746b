"""ConditionedPolicy: the weight-conditioned peer agent (:mod:`hti_rl.training.conditioned`) behind the
:class:`~hti_rl.methods.base.AnchoredPolicy` interface; it appends the weight coordinate to each observation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hti_rl.actors import AnchorActor
from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.grid import GridPolicy
from hti_rl.runs import DEFAULT_ROOT, RunDir, package_versions
from hti_rl.spec.task import TaskSpec
from hti_rl.training.conditioned import check_conditioned_meta, make_conditioned_env
from hti_rl.training.store import load_agent_actor


class _Conditioned:
    """What both conditioned policies share: the one conditioned actor in every anchor slot (its observation has
    C + n entries, so the file format and ``AnchoredPolicy.load`` are unchanged), and ``predict`` appending the
    current weight's coordinates (:meth:`_coordinates`, ``[n]``) to each raw observation before the agent sees it."""

    @classmethod
    def _wrap(cls, spec: TaskSpec, actor: AnchorActor, weights: Any, scales: Any, header: dict[str, Any] | None, weight: Any) -> Any:
        """Wrap a conditioned actor for ``spec``'s env (its raw observation space and action space)."""
        env = spec.make_env(spec.anchors[0])
        try:
            obs_space, action_space = env.observation_space, env.action_space
        finally:
            env.close()
        c = int(np.prod(obs_space.shape))
        return cls(obs_space, action_space, [actor] * len(spec.anchors), weights, scales,
                   x_mean=np.zeros(c, dtype=np.float32), x_std=np.ones(c, dtype=np.float32), header=header, weight=weight)

    def _coordinates(self) -> list[float]:
        raise NotImplementedError

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """obs [B, C] (raw env observations) -> env actions [B, D]."""
        obs = observation.float().reshape(observation.shape[0], -1)
        coords = torch.tensor(self._coordinates(), dtype=torch.float32)
        conditioned = torch.cat([obs, coords.expand(obs.shape[0], -1)], dim=1)
        actor = self.actors[0]  # type: ignore[attr-defined]
        return actor.to_env_action(self.anchor_draw(actor, conditioned, deterministic)[0])  # type: ignore[attr-defined]


class ConditionedPolicy(_Conditioned, AnchoredPolicy):
    """The weight-conditioned agent with SurrogatePolicy's interface: ``predict`` takes raw env
    observations ``[C]`` / ``[B, C]`` and appends the current weight's coordinate (``log λ`` on a log
    scale) before the agent sees them. The weight must lie in the range the agent was trained on.

    Example::

        policy = load_conditioned_policy(spec, factor=1.0)
        policy.set_weight(3.0)
        action, _ = policy.predict(obs, deterministic=True)
    """

    @classmethod
    def from_actor(cls, spec: TaskSpec, actor: AnchorActor, header: dict[str, Any] | None = None, weight: float | None = None) -> "ConditionedPolicy":
        """Wrap a conditioned actor for ``spec``'s env (its raw observation space and action space)."""
        return cls._wrap(spec, actor, spec.anchors, spec.weight_scale, header, weight)

    @property
    def coordinate(self) -> float:
        """The current weight in the observed coordinate."""
        return self.axis.coord(self.weight)

    def _coordinates(self) -> list[float]:
        return [self.coordinate]


class GridConditionedPolicy(_Conditioned, GridPolicy):
    """:class:`ConditionedPolicy` on a task that weighs several components: the agent's observation carries the
    weight vector, one coordinate per axis (:class:`~hti_rl.envs.wrappers.GridWeightInObservation`)."""

    @classmethod
    def from_actor(cls, spec: TaskSpec, actor: AnchorActor, header: dict[str, Any] | None = None, weight: Any = None) -> "GridConditionedPolicy":
        """Wrap a conditioned actor for ``spec``'s env (its raw observation space and action space)."""
        header = {**(header or {}), "weight_names": list(spec.grid.names)}
        return cls._wrap(spec, actor, spec.grid.points, list(spec.grid.scales), header, weight)

    def _coordinates(self) -> list[float]:
        return [a.coord(w) for a, w in zip(self.grid.axes, self.weight)]


def load_conditioned_actor(spec: TaskSpec, factor: float, run_root: str | Path = DEFAULT_ROOT) -> AnchorActor:
    """The finished conditioned agent of budget factor ``factor`` as an :class:`AnchorActor`, read
    without unpickling code (:mod:`hti_rl.sb3io.safe_sb3`, :mod:`hti_rl.sb3io.safe_pickle`).

    :raises AnchorError: not trained (or not finished), or trained for another version of the spec.
    """
    directory = RunDir.of(spec, run_root).conditioned(factor)
    check_conditioned_meta(spec, directory, factor)
    return load_agent_actor(spec, directory, lambda: make_conditioned_env(spec))


def load_conditioned_policy(spec: TaskSpec, factor: float, run_root: str | Path = DEFAULT_ROOT,
                            weight: Any = None) -> ConditionedPolicy | GridConditionedPolicy:
    """The finished conditioned agent of budget factor ``factor`` as a :class:`ConditionedPolicy`."""
    directory = RunDir.of(spec, run_root).conditioned(factor)
    meta = json.loads((directory / "meta.json").read_text()) if (directory / "meta.json").exists() else {}
    header = {"task": spec.name, "task_fingerprint": spec.fingerprint(), "seed": spec.seed, "budget_factor": float(factor),
              "steps": meta.get("steps"), "wall_time_s": meta.get("wall_time_s"), "versions": package_versions()}
    policy_cls = GridConditionedPolicy if spec.is_vector else ConditionedPolicy
    return policy_cls.from_actor(spec, load_conditioned_actor(spec, factor, run_root), header=header, weight=weight)
