"""TaskSpec: a task spec (envs/*.yaml) loaded and validated into a frozen dataclass.

A spec names the env, how to read its unweighted reward components, which one carries the weight λ,
the anchor and held-out weights, the weight scale, and the SB3 algorithm with its hyperparameters (an
entry of an rl-zoo3-style YAML file in ``agents/``). Every check happens in :func:`load_task`, and each
:class:`~hti_rl.errors.SpecError` names the file and the field; code that receives a ``TaskSpec``
trusts it. Example (``envs/lqr1d.yaml``)::

    name: lqr1d
    env_id: hti_rl/LQR1D-v0
    reward:
      components:
        state: {info: reward_state}
        ctrl: {info: reward_ctrl}
      weighted: ctrl
    weight_scale: log
    anchors: [0.1, 1, 10]
    held_out: [0.3, 3]
    algo: ppo

Paths in a spec (``hyperparams_file``) are relative to the spec's folder, or to its parent folder (the
repository root for specs in ``envs/``).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import gymnasium as gym
from stable_baselines3.common.base_class import BaseAlgorithm

import hti_rl.envs.lqr  # noqa: F401  (registers the LQR env ids)
from hti_rl.envs.mujoco_log import quiet_mujoco
from hti_rl.envs.wrappers import RewardWeightWrapper, Source
from hti_rl.errors import SpecError, WeightError
from hti_rl.io import sha256_bytes
from hti_rl.spec.algorithms import ALGOS
from hti_rl.spec.hyperparams import parse_agent
from hti_rl.weights import WeightAxis, WeightGrid

try:  # registers the mo-* env ids when MO-Gymnasium is installed
    import mo_gymnasium  # noqa: F401
except ImportError:
    pass




COMPONENT_KINDS = ("info", "vector", "function")


@dataclass(frozen=True)
class Component:
    """Where one unweighted reward component is read.

    :param kind: ``info`` (a key of the step's info), ``vector`` (an index of an MO vector reward) or
        ``function`` (``"module:callable"``, called as ``fn(obs, action, next_obs) -> float``).
    :param ref: the info key, the index, or the ``"module:callable"`` path.
    """

    kind: Literal["info", "vector", "function"]
    ref: str | int

    def source(self) -> Source:
        """The source :class:`~hti_rl.envs.wrappers.RewardWeightWrapper` takes: str, int or the callable."""
        return import_callable(self.ref) if self.kind == "function" else self.ref


@dataclass(frozen=True)
class RewardSpec:
    """The reward ``Σ fixed[c]·c + λ·weighted``.

    :param components: name -> :class:`Component`.
    :param weighted: the component multiplied by λ, or the components multiplied by λ_1 … λ_n (a weight vector).
    :param fixed: weight of every other component (1.0 unless the spec says otherwise).
    """

    components: dict[str, Component]
    weighted: str | tuple[str, ...]
    fixed: dict[str, float]


@dataclass(frozen=True)
class RecordSpec:
    """How the policy dataset is recorded (docs/method.md §4).

    :param episodes: rollout episodes per anchor.
    :param samples: action samples stored per anchor and state.
    :param max_states: states kept after subsampling.
    """

    episodes: int = 5
    samples: int = 16
    max_states: int = 4000


@dataclass(frozen=True)
class AnchorFiles:
    """An existing agent named in the spec as an anchor (``hti-rl import-anchors`` installs it).

    :param weight: the anchor weight.
    :param model: an SB3 ``.zip`` or an rl-zoo3 run folder (resolved like ``hyperparams_file``), or
        ``None`` for a callable.
    :param vecnormalize: its ``vecnormalize.pkl``, or ``None`` (found inside an rl-zoo3 folder).
    :param callable: ``"module:name"`` of a callable anchor ``obs -> action``. Only a spec names code:
        a run directory's ``meta.json`` records the name, but the anchor is imported from the spec's.
    """

    weight: float
    model: Path | None
    vecnormalize: Path | None = None
    callable: str | None = None


@dataclass(frozen=True)
class SharedStart:
    """Shared-start anchors ("rewarded soups"): one base agent trained at ``weight``, then a copy of it
    fine-tuned at each anchor weight, the base's observation normaliser frozen (:mod:`hti_rl.training.shared_start`).

    :param weight: the base's reward weight (default: the middle of the anchor range in the weight scale).
    :param base_steps: the base's training steps (default: the task's ``n_timesteps``).
    :param finetune_steps: each fine-tune's steps (default: half the task's ``n_timesteps``).
    """

    weight: float
    base_steps: int
    finetune_steps: int


@dataclass(frozen=True)
class TaskSpec:
    """A validated task spec; build one with :func:`load_task`.

    :param name: task name; runs go to ``<run root>/<name>/``.
    :param env_id: Gymnasium id (MO-Gymnasium ids and ``hti_rl/LQR*`` included).
    :param reward: the reward components and weights.
    :param weight_scale: ``linear`` or ``log``: the coordinate of the surrogate's local time (one per axis
        when several components are weighted).
    :param anchors: anchor weights, strictly increasing, at least 2; with several weighted components, every
        vector of the grid in C order (:attr:`grid`, hti_rl/spec/grid.py).
    :param held_out: evaluation weights inside ``[anchors[0], anchors[-1]]`` (vectors inside the grid).
    :param path: the spec file.
    :param hyperparams_file: the rl-zoo3-style hyperparameters file (default ``agents/<algo>.yml``).
    :param agent: the entry ``hyperparams_key`` of that file, as written (see :meth:`hyperparams`).
    :param hyperparams_key: the top-level key of that entry (the spec's default is ``name``).
    :param env_kwargs: keyword arguments of ``gym.make``.
    :param max_episode_steps: episode limit (a TimeLimit); the env's registered limit when ``None``.
    :param algo: SB3 algorithm: ppo, a2c, sac, td3 or ddpg.
    :param n_timesteps: training steps per anchor; overrides the entry's ``n_timesteps`` when set.
    :param seed: base seed of the task's runs.
    :param seeds_per_anchor: seeds trained per anchor (the best at its own weight is kept).
    :param record: dataset recording settings.
    :param eval_episodes: episodes per evaluation.
    :param anchor_files: anchors given as existing agents (``anchors: [{weight, model, vecnormalize}]``
        entries); not part of the fingerprint.
    :param shared_start: train the anchors as fine-tunes of one base agent (:class:`SharedStart`), or
        ``None`` for anchors trained from scratch; shared-start runs live in ``<root>/<name>/shared/``.
    :param weight_env_kwarg: the env keyword argument that sets λ inside the env (Reacher-v5's
        ``reward_control_weight``), or ``None``. hti-rl weighs in its wrapper (the spec's own env keeps that
        argument at 1); agents trained elsewhere at a weight (rl-zoo3 ``--env-kwargs``) record it, and
        ``hti-rl import-anchors`` warns when it contradicts the declared anchor weight. Not in the fingerprint.
    :param monotone_weighted_component: whether the anchor check (``hti-rl check-anchors``) expects the
        per-episode sum of the weighted component to be non-decreasing in the anchor weight (true of
        optimal policies of the discounted objective; turn it off where undiscounted sums need not follow).
    :param refined: anchor weights added by ``hti-rl refine`` (``runs/<task>/refined.json``, read by
        :func:`hti_rl.training.store.with_refined_anchors`); they are in ``anchors`` too, and left out of the
        fingerprint, so the spec's other anchors, its dataset and surrogate files stay valid.
    """

    name: str
    env_id: str
    reward: RewardSpec
    weight_scale: Any  # Literal["linear", "log"], or a tuple of them (one per weighted component)
    anchors: tuple[Any, ...]  # floats, or weight vectors (tuples of floats)
    held_out: tuple[Any, ...]
    path: Path
    hyperparams_file: Path
    agent: dict[str, Any]
    hyperparams_key: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    algo: str = "ppo"
    n_timesteps: int | None = None
    seed: int = 0
    seeds_per_anchor: int = 1
    record: RecordSpec = RecordSpec()
    eval_episodes: int = 10
    monotone_weighted_component: bool = True
    anchor_files: tuple[AnchorFiles, ...] = ()
    shared_start: SharedStart | None = None
    weight_env_kwarg: str | None = None
    refined: tuple[float, ...] = ()

    def make_env(self, weight: Any, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
        """The env at reward weight ``weight``: ``gym.make`` (+ TimeLimit) + :class:`RewardWeightWrapper`.

        :param weight: λ of the first episode (change it with ``env.set_weight``); a vector on a grid task.
        :param seed: when given, the env is reset with it and its action space seeded.
        :param render_mode: passed to ``gym.make``.
        """
        kwargs = dict(self.env_kwargs)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        quiet_mujoco(gym.spec(self.env_id).entry_point)  # MuJoCo's known deprecation silenced, its log kept out of the cwd
        # Gymnasium's checker warns on every vector reward, which is what a `vector` component reads.
        vector = any(c.kind == "vector" for c in self.reward.components.values())
        env = gym.make(self.env_id, max_episode_steps=self.max_episode_steps, disable_env_checker=vector or None, **kwargs)
        env = RewardWeightWrapper(
            env,
            components={name: c.source() for name, c in self.reward.components.items()},
            weighted=self.reward.weighted,
            weight=weight,
            fixed=self.reward.fixed,
        )
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
        return env

    @property
    def is_vector(self) -> bool:
        """Whether the task weighs several components (a weight is then a vector, the anchors a grid)."""
        return isinstance(self.reward.weighted, tuple)

    @property
    def axis(self) -> WeightAxis:
        """The weight axis: anchors and weight scale (local time, range checks, grids).

        :raises WeightError: the task weighs several components (use :attr:`grid`).
        """
        if self.is_vector:
            raise WeightError(f"task {self.name!r} weighs several components ({', '.join(self.reward.weighted)}): its weights are "
                              "vectors on a grid (spec.grid), and this step takes one scalar weight; it does not support "
                              "weight vectors yet.")
        return WeightAxis(self.anchors, self.weight_scale)

    @property
    def grid(self) -> WeightGrid:
        """The weight grid: one axis per weighted component (a 1-axis grid for a scalar task)."""
        if not self.is_vector:
            return WeightGrid((self.axis,), (str(self.reward.weighted),))
        return WeightGrid.from_points(self.anchors, self.weight_scale, self.reward.weighted)

    def with_shared_start(self, weight: float | None = None, base_steps: int | None = None,
                          finetune_steps: int | None = None) -> "TaskSpec":
        """This spec with shared-start anchors; unset settings keep the spec's own, else the defaults
        (see :class:`SharedStart`).

        :raises SpecError: the base weight lies outside the anchor range, or a budget is < 1.
        """
        if self.is_vector:
            raise SpecError(f"{self.path}: shared-start anchors are not supported yet on a task that weighs several components.")
        own = self.shared_start
        n = int(self.hyperparams()["n_timesteps"])
        if weight is None:
            weight = own.weight if own else self.axis.middle()
        shared = SharedStart(
            weight=float(weight),
            base_steps=int(base_steps if base_steps is not None else own.base_steps if own else n),
            finetune_steps=int(finetune_steps if finetune_steps is not None else own.finetune_steps if own else max(n // 2, 1)),
        )
        if not (self.anchors[0] <= shared.weight <= self.anchors[-1]):
            raise SpecError(f"{self.path}: the shared start's weight {shared.weight:g} is outside the anchor range {self.axis.range_text()}; "
                            "pick a weight in range (the default is the middle of the range).")
        if shared.base_steps < 1 or shared.finetune_steps < 1:
            raise SpecError(f"{self.path}: shared-start budgets must be ≥ 1 step, got base_steps={shared.base_steps}, "
                            f"finetune_steps={shared.finetune_steps}.")
        if self.seeds_per_anchor > 1:
            raise SpecError(f"{self.path}: seeds_per_anchor > 1 with shared-start anchors is not supported (every anchor "
                            "descends from one base); set seeds_per_anchor: 1, or train the anchors from scratch.")
        return dataclasses.replace(self, shared_start=shared)

    def with_anchors_added(self, weights: Sequence[float]) -> "TaskSpec":
        """This spec with refined anchors at ``weights`` (inside the range) among its anchors; same fingerprint."""
        added = tuple(sorted({float(w) for w in weights} - set(self.anchors)))
        return dataclasses.replace(self, anchors=tuple(sorted(self.anchors + added)), refined=tuple(sorted(self.refined + added)))

    def sb3_algo(self) -> type[BaseAlgorithm]:
        """The SB3 algorithm class (``stable_baselines3.PPO`` for ``algo: ppo``)."""
        return ALGOS[self.algo]

    def hyperparams(self) -> dict[str, Any]:
        """The training settings, parsed from the rl-zoo3 entry.

        :return: ``{"n_timesteps": int, "n_envs": int, "normalize": bool | dict (VecNormalize kwargs),
            "algo_kwargs": dict}``; ``algo_kwargs`` go to the SB3 constructor (``policy`` included,
            ``policy_kwargs`` parsed, ``lin_<x>`` schedules made callables). ``n_timesteps`` is the
            spec's when set, else the entry's.
        """
        return parse_agent(self.agent, self.algo, self.n_timesteps, where=f"{self.hyperparams_file}: entry `{self.hyperparams_key}`")

    def fingerprint(self) -> str:
        """A stable hash of everything that shapes the anchors, the dataset and the surrogate.

        Covers the validated spec and the content of its hyperparameters entry; leaves out where the
        files lie (``path``, ``hyperparams_file``, ``hyperparams_key``) and the evaluation-only fields
        (``held_out``, ``eval_episodes``, ``monotone_weighted_component``), so editing those keeps
        trained anchors valid. Imported anchors' file names (``anchor_files``) are left out too: an
        imported anchor's ``meta.json`` records the SHA-256 of the files it came from.
        """
        content = dataclasses.asdict(self)
        content["anchors"] = [w for w in content["anchors"] if w not in self.refined]
        del content["refined"]
        for key in ("path", "hyperparams_file", "hyperparams_key", "held_out", "eval_episodes", "monotone_weighted_component",
                    "anchor_files", "weight_env_kwarg"):
            del content[key]
        if content["shared_start"] is None:  # specs without it keep the fingerprint they had before it existed
            del content["shared_start"]
        return sha256_bytes(json.dumps(content, sort_keys=True).encode())[:16]


def import_callable(ref: str) -> Callable:
    module, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"is {ref!r}, which does not import; give 'module:callable', e.g. 'hti_rl.components:pendulum_torque'.") from None
    if not callable(fn):
        raise ValueError(f"is {ref!r}, which is not callable; name a function fn(obs, action, next_obs) -> float.")
    return fn
