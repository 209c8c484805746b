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

import bisect
import dataclasses
import difflib
import importlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import gymnasium as gym
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm

import hti_rl.lqr  # noqa: F401  (registers the LQR env ids)
from hti_rl.errors import SpecError, WeightError
from hti_rl.hyperparams import ALGOS, parse_agent
from hti_rl.io import sha256_bytes
from hti_rl.wrappers import RewardWeightWrapper, Source

try:  # registers the mo-* env ids when MO-Gymnasium is installed
    import mo_gymnasium  # noqa: F401
except ImportError:
    pass

WEIGHT_SCALES = ("linear", "log")
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
        """The source :class:`~hti_rl.wrappers.RewardWeightWrapper` takes: str, int or the callable."""
        return _import_callable(self.ref) if self.kind == "function" else self.ref


@dataclass(frozen=True)
class RewardSpec:
    """The reward ``Σ fixed[c]·c + λ·weighted``.

    :param components: name -> :class:`Component`.
    :param weighted: the component multiplied by λ.
    :param fixed: weight of every other component (1.0 unless the spec says otherwise).
    """

    components: dict[str, Component]
    weighted: str
    fixed: dict[str, float]


@dataclass(frozen=True)
class RecordSpec:
    """How the policy dataset is recorded (DESIGN.md section 4).

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
    :param model: an SB3 ``.zip`` or an rl-zoo3 run folder (resolved like ``hyperparams_file``).
    :param vecnormalize: its ``vecnormalize.pkl``, or ``None`` (found inside an rl-zoo3 folder).
    """

    weight: float
    model: Path
    vecnormalize: Path | None = None


@dataclass(frozen=True)
class SharedStart:
    """Shared-start anchors ("rewarded soups"): one base agent trained at ``weight``, then a copy of it
    fine-tuned at each anchor weight, the base's observation normaliser frozen (:mod:`hti_rl.shared_start`).

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
    :param weight_scale: ``linear`` or ``log``: the coordinate of the surrogate's local time.
    :param anchors: anchor weights, strictly increasing, at least 2.
    :param held_out: evaluation weights inside ``[anchors[0], anchors[-1]]``.
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
    :param monotone_weighted_component: whether the anchor check (``hti-rl check-anchors``) expects the
        per-episode sum of the weighted component to be non-decreasing in the anchor weight (true of
        optimal policies of the discounted objective; turn it off where undiscounted sums need not follow).
    """

    name: str
    env_id: str
    reward: RewardSpec
    weight_scale: Literal["linear", "log"]
    anchors: tuple[float, ...]
    held_out: tuple[float, ...]
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

    def make_env(self, weight: float, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
        """The env at reward weight ``weight``: ``gym.make`` (+ TimeLimit) + :class:`RewardWeightWrapper`.

        :param weight: λ of the first episode (change it with ``env.set_weight``).
        :param seed: when given, the env is reset with it and its action space seeded.
        :param render_mode: passed to ``gym.make``.
        """
        kwargs = dict(self.env_kwargs)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
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

    def scale(self, weight: float) -> float:
        """The weight in the task's weight scale: ``weight`` (linear) or ``log(weight)`` (log).

        :raises WeightError: NaN, infinite, or ≤ 0 on a log scale.
        """
        weight = float(weight)
        if not math.isfinite(weight) or (self.weight_scale == "log" and weight <= 0):
            allowed = "a positive finite number (log scale)" if self.weight_scale == "log" else "a finite number"
            raise WeightError(f"reward weight {weight} of task {self.name!r} is not {allowed}; the anchors span {self._range()}.")
        return math.log(weight) if self.weight_scale == "log" else weight

    def to_local_time(self, weight: float) -> tuple[int, float]:
        """The anchor interval ``k`` holding ``weight`` and the local time ``s`` in [0, 1] within it.

        ``s = (scale(λ) − scale(λ_k)) / (scale(λ_{k+1}) − scale(λ_k))``; the last anchor gives
        ``(K − 2, 1.0)``.

        :raises WeightError: ``weight`` is NaN, infinite, or outside ``[anchors[0], anchors[-1]]``.
        """
        weight = float(weight)
        if not (self.anchors[0] <= weight <= self.anchors[-1]):  # also catches NaN
            raise WeightError(
                f"reward weight {weight} is outside the anchor range {self._range()} of task {self.name!r}; "
                f"choose a weight in that range, or add an anchor in {self.path} and retrain."
            )
        times = [self.scale(a) for a in self.anchors]
        t = self.scale(weight)
        k = min(bisect.bisect_right(times, t) - 1, len(times) - 2)
        s = (t - times[k]) / (times[k + 1] - times[k])
        return k, min(max(s, 0.0), 1.0)

    def run_dir(self, root: str | Path = "runs") -> Path:
        """``<root>/<name>``: where this task's anchors, dataset and surrogate live (``<root>/<name>/shared``
        for shared-start anchors, so both kinds of anchors can sit side by side)."""
        return Path(root) / self.name / "shared" if self.shared_start else Path(root) / self.name

    def with_shared_start(self, weight: float | None = None, base_steps: int | None = None,
                          finetune_steps: int | None = None) -> "TaskSpec":
        """This spec with shared-start anchors; unset settings keep the spec's own, else the defaults
        (see :class:`SharedStart`).

        :raises SpecError: the base weight lies outside the anchor range, or a budget is < 1.
        """
        own = self.shared_start
        n = int(self.hyperparams()["n_timesteps"])
        if weight is None:
            weight = own.weight if own else self._middle_weight()
        shared = SharedStart(
            weight=float(weight),
            base_steps=int(base_steps if base_steps is not None else own.base_steps if own else n),
            finetune_steps=int(finetune_steps if finetune_steps is not None else own.finetune_steps if own else max(n // 2, 1)),
        )
        if not (self.anchors[0] <= shared.weight <= self.anchors[-1]):
            raise SpecError(f"{self.path}: the shared start's weight {shared.weight:g} is outside the anchor range {self._range()}; "
                            "pick a weight in range (the default is the middle of the range).")
        if shared.base_steps < 1 or shared.finetune_steps < 1:
            raise SpecError(f"{self.path}: shared-start budgets must be ≥ 1 step, got base_steps={shared.base_steps}, "
                            f"finetune_steps={shared.finetune_steps}.")
        if self.seeds_per_anchor > 1:
            raise SpecError(f"{self.path}: seeds_per_anchor > 1 with shared-start anchors is not supported (every anchor "
                            "descends from one base); set seeds_per_anchor: 1, or train the anchors from scratch.")
        return dataclasses.replace(self, shared_start=shared)

    def _middle_weight(self) -> float:
        """The middle of the anchor range in the weight scale (geometric mean on a log scale), rounded to 3 digits."""
        lo, hi = self.anchors[0], self.anchors[-1]
        middle = math.sqrt(lo * hi) if self.weight_scale == "log" else (lo + hi) / 2
        return float(f"{middle:.3g}")

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
        for key in ("path", "hyperparams_file", "hyperparams_key", "held_out", "eval_episodes", "monotone_weighted_component",
                    "anchor_files"):
            del content[key]
        if content["shared_start"] is None:  # specs without it keep the fingerprint they had before it existed
            del content["shared_start"]
        return sha256_bytes(json.dumps(content, sort_keys=True).encode())[:16]

    def _range(self) -> str:
        return f"[{self.anchors[0]:g}, {self.anchors[-1]:g}]"


def load_task(path: str | Path) -> TaskSpec:
    """Read and validate a task spec.

    :param path: the YAML file, e.g. ``envs/lqr1d.yaml``.
    :raises SpecError: the file is missing or invalid; the message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"task spec {path} does not exist; the specs shipped with hti-rl are in envs/*.yaml.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc}); fix the syntax.") from exc
    top = _Fields(path, raw)
    defaults = TaskSpec.__dataclass_fields__
    top.allow(("name", "env_id", "env_kwargs", "max_episode_steps", "reward", "weight_scale", "anchors", "held_out", "algo",
               "hyperparams_file", "hyperparams_key", "n_timesteps", "seed", "seeds_per_anchor", "record", "eval_episodes",
               "monotone_weighted_component", "shared_start"))

    name = top.string("name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise top.error("name", f"is {name!r}; use letters, digits, '_', '.' and '-' only (it names a folder).")
    env_id = _check_env_id(top, top.string("env_id"))
    weight_scale = top.choice("weight_scale", WEIGHT_SCALES)
    anchors, anchor_files = _read_anchors(top)
    if len(anchors) < 2:
        raise top.error("anchors", f"is {list(anchors)}; give at least 2 weights.")
    if any(b <= a for a, b in zip(anchors, anchors[1:])):
        raise top.error("anchors", f"is {list(anchors)}; the weights must be strictly increasing.")
    if weight_scale == "log" and anchors[0] <= 0:
        raise top.error("anchors", f"is {list(anchors)}; a log weight_scale needs weights > 0 (or use weight_scale: linear).")
    held_out = top.floats("held_out")
    outside = [w for w in held_out if not anchors[0] <= w <= anchors[-1]]
    if outside:
        raise top.error("held_out", f"has {outside} outside the anchor range [{anchors[0]:g}, {anchors[-1]:g}]; move them inside.")
    algo = top.choice("algo", tuple(ALGOS), default=defaults["algo"].default)
    hyperparams_file = _resolve(top, "hyperparams_file", top.string("hyperparams_file", default=f"agents/{algo}.yml"))
    hyperparams_key = top.string("hyperparams_key", default=name)
    n_timesteps = top.integer("n_timesteps", default=None, minimum=1)
    agent = _load_agent(hyperparams_file, hyperparams_key, top)
    parse_agent(agent, algo, n_timesteps, where=f"{hyperparams_file}: entry `{hyperparams_key}`")

    record_fields = top.mapping("record", default={})
    rec = _Fields(path, record_fields, where="record.")
    rec.allow(tuple(RecordSpec.__dataclass_fields__))
    record = RecordSpec(**{k: rec.integer(k, default=f.default, minimum=1) for k, f in RecordSpec.__dataclass_fields__.items()})

    spec = TaskSpec(
        name=name,
        env_id=env_id,
        reward=_read_reward(path, top.mapping("reward")),
        weight_scale=weight_scale,
        anchors=anchors,
        held_out=held_out,
        path=path,
        hyperparams_file=hyperparams_file,
        agent=agent,
        env_kwargs=top.mapping("env_kwargs", default={}),
        max_episode_steps=top.integer("max_episode_steps", default=None, minimum=1),
        algo=algo,
        hyperparams_key=hyperparams_key,
        n_timesteps=n_timesteps,
        seed=top.integer("seed", default=defaults["seed"].default, minimum=0),
        seeds_per_anchor=top.integer("seeds_per_anchor", default=defaults["seeds_per_anchor"].default, minimum=1),
        record=record,
        eval_episodes=top.integer("eval_episodes", default=defaults["eval_episodes"].default, minimum=1),
        monotone_weighted_component=top.boolean("monotone_weighted_component", default=defaults["monotone_weighted_component"].default),
        anchor_files=anchor_files,
    )
    return _read_shared_start(top, spec)


def _read_shared_start(top: _Fields, spec: TaskSpec) -> TaskSpec:
    """``shared_start``: absent/false (anchors from scratch), true (defaults) or ``{weight, base_steps, finetune_steps}``."""
    raw = top._get("shared_start", False)
    if raw is False or raw is None:
        return spec
    if raw is True:
        raw = {}
    item = _Fields(top.file, raw, where="shared_start.")
    item.allow(tuple(SharedStart.__dataclass_fields__))
    weight = item._get("weight", None)
    if weight is not None and not (_is_number(weight) and math.isfinite(weight)):
        raise item.error("weight", f"is {weight!r}; give a finite number inside the anchor range.")
    try:
        return spec.with_shared_start(weight, item.integer("base_steps", default=None, minimum=1),
                                      item.integer("finetune_steps", default=None, minimum=1))
    except SpecError as exc:
        raise SpecError(f"{exc} (field `shared_start`)") from None


def _read_anchors(top: _Fields) -> tuple[tuple[float, ...], tuple[AnchorFiles, ...]]:
    """``anchors``: numbers, or ``{weight: λ, model: path, vecnormalize: path}`` entries for existing agents."""
    raw = top._get("anchors", _REQUIRED)
    if not isinstance(raw, list):
        return top.floats("anchors"), ()
    weights, files = [], []
    for i, entry in enumerate(raw):
        if isinstance(entry, dict):
            item = _Fields(top.file, entry, where=f"anchors[{i}].")
            item.allow(("weight", "model", "vecnormalize"))
            weight = item._get("weight", _REQUIRED)
            if not _is_number(weight) or not math.isfinite(weight):
                raise item.error("weight", f"is {weight!r}; give a finite number.")
            model = _relative(top, item.string("model"))
            vecnormalize = item.string("vecnormalize", default=None) if entry.get("vecnormalize") is not None else None
            files.append(AnchorFiles(float(weight), model, _relative(top, vecnormalize) if vecnormalize else None))
            weights.append(weight)
        else:
            weights.append(entry)
    return _Fields(top.file, {"anchors": weights}).floats("anchors"), tuple(files)


def _relative(top: _Fields, relative: str) -> Path:
    """A path as written in the spec: relative to the spec's folder, else its parent; need not exist yet."""
    path = Path(relative).expanduser()
    if path.is_absolute():
        return path
    candidates = [top.file.parent / path, top.file.parent.parent / path]
    return next((c for c in candidates if c.exists()), candidates[0])


_REQUIRED: Any = object()


class _Fields:
    """Typed reads from one YAML mapping; every error names the file and the field."""

    def __init__(self, file: Path, raw: Any, where: str = ""):
        self.file, self.where = file, where
        if not isinstance(raw, dict):
            raise SpecError(f"{file}: {'field `' + where.rstrip('.') + '`' if where else 'the spec'} must be a mapping, got {raw!r}.")
        self.raw = raw

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.file}: field `{self.where}{key}` {message}")

    def allow(self, keys: tuple[str, ...]) -> None:
        unknown = sorted(set(self.raw) - set(keys), key=str)
        if unknown:
            hint = difflib.get_close_matches(str(unknown[0]), keys, n=1)
            raise self.error(
                str(unknown[0]),
                f"is unknown{f' (did you mean `{hint[0]}`?)' if hint else ''}; allowed fields: {', '.join(keys)}.",
            )

    def _get(self, key: str, default: Any) -> Any:
        if key in self.raw:
            return self.raw[key]
        if default is _REQUIRED:
            raise self.error(key, "is missing; add it.")
        return default

    def string(self, key: str, default: Any = _REQUIRED) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"is {value!r}; give a non-empty string.")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = _REQUIRED) -> str:
        value = self._get(key, default)
        if value not in allowed:
            raise self.error(key, f"is {value!r}; choose one of {', '.join(allowed)}.")
        return value

    def integer(self, key: str, default: Any = _REQUIRED, minimum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.error(key, f"is {value!r}; give an integer ≥ {minimum}.")
        return value

    def boolean(self, key: str, default: Any = _REQUIRED) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"is {value!r}; give true or false.")
        return value

    def floats(self, key: str) -> tuple[float, ...]:
        value = self._get(key, _REQUIRED)
        if not isinstance(value, list) or not all(_is_number(v) and math.isfinite(v) for v in value):
            raise self.error(key, f"is {value!r}; give a list of finite numbers, e.g. [0.1, 1, 10].")
        return tuple(float(v) for v in value)

    def mapping(self, key: str, default: Any = _REQUIRED) -> dict[str, Any]:
        value = self._get(key, default)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.error(key, f"is {value!r}; give a mapping with string keys.")
        return dict(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_env_id(top: _Fields, env_id: str) -> str:
    if env_id not in gym.envs.registry:
        hint = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3)
        raise top.error(
            "env_id",
            f"is {env_id!r}, which is not a registered Gymnasium id"
            f"{'; close ids: ' + ', '.join(hint) if hint else ''}. MO-Gymnasium ids need `pip install mo-gymnasium`.",
        )
    return env_id


def _read_reward(file: Path, raw: dict[str, Any]) -> RewardSpec:
    reward = _Fields(file, raw, where="reward.")
    reward.allow(("components", "weighted", "fixed"))
    components = {}
    for name, entry in reward.mapping("components").items():
        where = f"reward.components.{name}"
        if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in COMPONENT_KINDS:
            raise SpecError(
                f"{file}: field `{where}` is {entry!r}; give exactly one of "
                "{info: <key>}, {vector: <index>}, {function: 'module:callable'}."
            )
        kind, ref = next(iter(entry.items()))
        if kind == "vector" and (isinstance(ref, bool) or not isinstance(ref, int) or ref < 0):
            raise SpecError(f"{file}: field `{where}.vector` is {ref!r}; give an index ≥ 0 into the env's vector reward.")
        if kind != "vector" and (not isinstance(ref, str) or not ref):
            raise SpecError(f"{file}: field `{where}.{kind}` is {ref!r}; give a non-empty string.")
        if kind == "function":
            try:
                _import_callable(ref)
            except ValueError as exc:
                raise SpecError(f"{file}: field `{where}.function` {exc}") from None
        components[name] = Component(kind, ref)
    if not components:
        raise reward.error("components", "is empty; name at least the weighted component.")
    weighted = reward.choice("weighted", tuple(components))
    fixed = reward.mapping("fixed", default={})
    others = tuple(n for n in components if n != weighted)
    for name, value in fixed.items():
        if name not in others:
            raise reward.error(f"fixed.{name}", f"names no unweighted component; fixed weights apply to {', '.join(others) or 'none'}.")
        if not _is_number(value) or not math.isfinite(value):
            raise reward.error(f"fixed.{name}", f"is {value!r}; give a finite number.")
    return RewardSpec(components, weighted, {n: float(fixed.get(n, 1.0)) for n in others})


def _import_callable(ref: str) -> Callable:
    module, _, attr = ref.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"is {ref!r}, which does not import; give 'module:callable', e.g. 'hti_rl.components:pendulum_torque'.") from None
    if not callable(fn):
        raise ValueError(f"is {ref!r}, which is not callable; name a function fn(obs, action, next_obs) -> float.")
    return fn


def _resolve(top: _Fields, key: str, relative: str) -> Path:
    candidates = [top.file.parent / relative, top.file.parent.parent / relative]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise top.error(key, f"is {relative!r}, but neither {' nor '.join(map(str, candidates))} exists; fix the path.")


def _load_agent(file: Path, key: str, top: _Fields) -> dict[str, Any]:
    try:
        entries = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{file}: not valid YAML ({exc}); fix the syntax (needed by {top.file}).") from exc
    if not isinstance(entries, dict) or key not in entries:
        keys = sorted(entries) if isinstance(entries, dict) else []
        raise top.error(
            "hyperparams_key",
            f"is {key!r}, which is not a top-level key of {file} (keys: {', '.join(map(str, keys)) or 'none'}); "
            "add an entry there or set hyperparams_key.",
        )
    if not isinstance(entries[key], dict):
        raise SpecError(f"{file}: entry `{key}` is {entries[key]!r}; give a mapping of hyperparameters.")
    return dict(entries[key])
