"""load_task: read an envs/*.yaml file and validate every field into a :class:`~hti_rl.spec.task.TaskSpec`."""

from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Any

import gymnasium as gym

import hti_rl.envs.lqr  # noqa: F401  (registers the LQR env ids)
from hti_rl.envs.mujoco_log import quiet_mujoco
from hti_rl.errors import SpecError
from hti_rl.seeds import MAX_SEED
from hti_rl.spec.algorithms import ALGOS
from hti_rl.spec.fields import REQUIRED, Fields, is_finite_number, read_yaml
from hti_rl.spec.grid import read_grid
from hti_rl.spec.hyperparams import parse_agent
from hti_rl.spec.task import (
    COMPONENT_KINDS,
    AnchorFiles,
    Component,
    RecordSpec,
    RewardSpec,
    SharedStart,
    TaskSpec,
    import_callable,
)
from hti_rl.weights import SCALES

try:  # registers the mo-* env ids when MO-Gymnasium is installed
    import mo_gymnasium  # noqa: F401
except ImportError:
    pass


def load_task(path: str | Path) -> TaskSpec:
    """Read and validate a task spec.

    :param path: the YAML file, e.g. ``envs/lqr1d.yaml``.
    :raises SpecError: the file is missing or invalid; the message names the file and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"task spec {path} does not exist; the specs shipped with hti-rl are in envs/*.yaml.")
    raw = read_yaml(path)
    top = Fields(path, raw)
    defaults = TaskSpec.__dataclass_fields__
    top.allow(("name", "env_id", "env_kwargs", "max_episode_steps", "reward", "weight_scale", "anchors", "held_out", "algo",
               "hyperparams_file", "hyperparams_key", "n_timesteps", "seed", "seeds_per_anchor", "record", "eval_episodes",
               "monotone_weighted_component", "shared_start", "weight_env_kwarg"))

    name = top.string("name")
    problem = name_problem(name)
    if problem:
        raise top.error("name", problem)
    env_id = _check_env_id(top, top.string("env_id"))
    reward = _read_reward(path, top.mapping("reward"))
    if isinstance(reward.weighted, tuple):  # several weighted components: a grid of weight vectors
        weight_scale, anchors, held_out = read_grid(top, reward.weighted)
        anchor_files: tuple[AnchorFiles, ...] = ()
    else:
        weight_scale, anchors, held_out, anchor_files = _read_scalar_weights(top)
    algo = top.choice("algo", tuple(ALGOS), default=defaults["algo"].default)
    hyperparams_file = _resolve(top, "hyperparams_file", top.string("hyperparams_file", default=f"agents/{algo}.yml"))
    hyperparams_key = top.string("hyperparams_key", default=name)
    n_timesteps = top.integer("n_timesteps", default=None, minimum=1)
    agent = _load_agent(hyperparams_file, hyperparams_key, top)
    parse_agent(agent, algo, n_timesteps, where=f"{hyperparams_file}: entry `{hyperparams_key}`")

    record_fields = top.mapping("record", default={})
    rec = Fields(path, record_fields, where="record.")
    rec.allow(tuple(RecordSpec.__dataclass_fields__))
    limits = {"episodes": 10**5, "samples": 2**16, "max_states": 10**7}
    record = RecordSpec(**{k: rec.integer(k, default=f.default, minimum=1, maximum=limits[k]) for k, f in RecordSpec.__dataclass_fields__.items()})

    spec = TaskSpec(
        name=name,
        env_id=env_id,
        reward=reward,
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
        seed=top.integer("seed", default=defaults["seed"].default, minimum=0, maximum=MAX_SEED),
        seeds_per_anchor=top.integer("seeds_per_anchor", default=defaults["seeds_per_anchor"].default, minimum=1),
        record=record,
        eval_episodes=top.integer("eval_episodes", default=defaults["eval_episodes"].default, minimum=1),
        monotone_weighted_component=top.boolean("monotone_weighted_component", default=defaults["monotone_weighted_component"].default),
        anchor_files=anchor_files,
        weight_env_kwarg=top.string("weight_env_kwarg") if top.get("weight_env_kwarg", None) is not None else None,
    )
    _check_env(top, spec)
    if spec.is_vector and top.get("shared_start", False) not in (False, None):
        raise top.error("shared_start", "is not supported yet on a spec that weighs several components; remove it "
                                        "(train the grid's anchors from scratch).")
    return _read_shared_start(top, spec)


def _read_scalar_weights(top: Fields) -> tuple[str, tuple[float, ...], tuple[float, ...], tuple[AnchorFiles, ...]]:
    """(weight scale, anchors, held-out weights, anchor files) of a spec weighing one component."""
    weight_scale = top.choice("weight_scale", SCALES)
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
    return weight_scale, anchors, held_out, anchor_files


MAX_DATASET_BYTES = 8 << 30
"""The largest dataset a spec may ask ``record`` for (anchors × max_states × samples × action dims × 4 bytes)."""


def _check_env(top: Fields, spec: TaskSpec) -> None:
    """Make the env once, before anything trains: ``env_kwargs`` it accepts, Box spaces, and a dataset of bounded size."""
    try:
        quiet_mujoco(gym.spec(spec.env_id).entry_point)  # as make_env does: MuJoCo's known deprecation, no log file
        env = gym.make(spec.env_id, max_episode_steps=spec.max_episode_steps, disable_env_checker=True, **spec.env_kwargs)
    except TypeError as exc:
        raise top.error("env_kwargs", f"is {spec.env_kwargs!r}, which {spec.env_id} does not accept ({exc}); fix or remove the key.") from None
    except Exception as exc:  # an env's own checks fail in many ways
        raise top.error("env_kwargs", f"is {spec.env_kwargs!r}: {spec.env_id} could not be made with it ({type(exc).__name__}: {exc}).") from None
    try:
        obs_space, action_space = env.observation_space, env.action_space
    finally:
        env.close()
    for what, space in (("action", action_space), ("observation", obs_space)):
        if not isinstance(space, gym.spaces.Box) or (what == "action" and len(space.shape) != 1):
            raise top.error("env_id", f"is {spec.env_id!r}, whose {what} space is {space}; hti-rl needs a Box {what} space "
                                      f"(a 1-D Box of continuous actions). Use an env with continuous {what}s.")
    d = int(action_space.shape[0])
    size = len(spec.anchors) * spec.record.max_states * spec.record.samples * d * 4
    if size > MAX_DATASET_BYTES:
        raise top.error("record", f"asks for a dataset of {size / 2**30:.3g} GiB ({len(spec.anchors)} anchors × {spec.record.max_states} "
                                  f"states × {spec.record.samples} samples × {d} action dims × 4 bytes), over the limit of "
                                  f"{MAX_DATASET_BYTES >> 30} GiB; lower record.samples or record.max_states.")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a task's run folder, or ``None``: it must be letters, digits, '_', '.'
    and '-', at most 100 of them, and not ``.`` or ``..`` (which would put runs outside the run root)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name):
        return f"is {name[:100]!r}; use letters, digits, '_', '.' and '-' only, at most 100 (it names a folder)."
    if set(name) == {"."}:
        return f"is {name!r}, which names the run root or its parent rather than a folder of its own; give the task a name."
    return None


def _read_shared_start(top: Fields, spec: TaskSpec) -> TaskSpec:
    """``shared_start``: absent/false (anchors from scratch), true (defaults) or ``{weight, base_steps, finetune_steps}``."""
    raw = top.get("shared_start", False)
    if raw is False or raw is None:
        return spec
    if raw is True:
        raw = {}
    item = Fields(top.file, raw, where="shared_start.")
    item.allow(tuple(SharedStart.__dataclass_fields__))
    weight = item.get("weight", None)
    if weight is not None and not is_finite_number(weight):
        raise item.error("weight", f"is {weight!r}; give a finite number inside the anchor range.")
    try:
        return spec.with_shared_start(weight, item.integer("base_steps", default=None, minimum=1),
                                      item.integer("finetune_steps", default=None, minimum=1))
    except SpecError as exc:
        raise SpecError(f"{exc} (field `shared_start`)") from None


def _read_anchors(top: Fields) -> tuple[tuple[float, ...], tuple[AnchorFiles, ...]]:
    """``anchors``: numbers, or ``{weight: λ, model: path, vecnormalize: path}`` entries for existing agents."""
    raw = top.get("anchors", REQUIRED)
    if not isinstance(raw, list):
        return top.floats("anchors"), ()
    weights, files = [], []
    for i, entry in enumerate(raw):
        if isinstance(entry, dict):
            item = Fields(top.file, entry, where=f"anchors[{i}].")
            item.allow(("weight", "model", "vecnormalize", "callable"))
            weight = item.get("weight", REQUIRED)
            if not is_finite_number(weight):
                raise item.error("weight", f"is {weight!r}; give a finite number.")
            if ("model" in entry) == ("callable" in entry):
                raise item.error("model", "and `callable`: give exactly one (an SB3 model path, or 'module:callable').")
            if "callable" in entry:
                reference = item.string("callable")
                try:
                    import_callable(reference)
                except ValueError as exc:
                    raise item.error("callable", str(exc)) from None
                files.append(AnchorFiles(float(weight), None, None, reference))
                weights.append(weight)
                continue
            model = _relative(top, item.string("model"))
            vecnormalize = item.string("vecnormalize", default=None) if entry.get("vecnormalize") is not None else None
            files.append(AnchorFiles(float(weight), model, _relative(top, vecnormalize) if vecnormalize else None))
            weights.append(weight)
        else:
            weights.append(entry)
    return Fields(top.file, {"anchors": weights}).floats("anchors"), tuple(files)


def _relative(top: Fields, relative: str) -> Path:
    """A path as written in the spec: relative to the spec's folder, else its parent; need not exist yet."""
    path = Path(relative).expanduser()
    if path.is_absolute():
        return path
    candidates = [top.file.parent / path, top.file.parent.parent / path]
    return next((c for c in candidates if c.exists()), candidates[0])


def _check_env_id(top: Fields, env_id: str) -> str:
    if env_id not in gym.envs.registry:
        hint = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3)
        raise top.error(
            "env_id",
            f"is {env_id!r}, which is not a registered Gymnasium id"
            f"{'; close ids: ' + ', '.join(hint) if hint else ''}. MO-Gymnasium ids need `pip install mo-gymnasium`.",
        )
    return env_id


def _read_reward(file: Path, raw: dict[str, Any]) -> RewardSpec:
    reward = Fields(file, raw, where="reward.")
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
                fn = import_callable(ref)
            except ValueError as exc:
                raise SpecError(f"{file}: field `{where}.function` {exc}") from None
            _check_signature(fn, ref, f"{file}: field `{where}.function`")
        components[name] = Component(kind, ref)
    if not components:
        raise reward.error("components", "is empty; name at least the weighted component.")
    raw_weighted = reward.get("weighted", None)
    if isinstance(raw_weighted, list):  # several weighted components, one weight axis each
        weighted: str | tuple[str, ...] = reward.names("weighted", tuple(components))
        if len(weighted) < 2 or len(weighted) != len(raw_weighted):
            raise reward.error("weighted", f"is {raw_weighted!r}; a list names ≥ 2 distinct components (write one alone "
                                           "as `weighted: <name>`).")
    else:
        weighted = reward.choice("weighted", tuple(components))
    fixed = reward.mapping("fixed", default={})
    others = tuple(n for n in components if n not in ((weighted,) if isinstance(weighted, str) else weighted))
    for name, value in fixed.items():
        if name not in others:
            raise reward.error(f"fixed.{name}", f"names no unweighted component; fixed weights apply to {', '.join(others) or 'none'}.")
        if not is_finite_number(value):
            raise reward.error(f"fixed.{name}", f"is {value!r}; give a finite number.")
    return RewardSpec(components, weighted, {n: float(fixed.get(n, 1.0)) for n in others})


def _check_signature(fn: Any, ref: str, where: str) -> None:
    """``fn`` can be called as ``fn(obs, action, next_obs)``: a Python function of three arguments."""
    try:
        inspect.signature(fn).bind(None, None, None)
    except (TypeError, ValueError):
        raise SpecError(f"{where} is {ref!r}, which cannot be called as fn(obs, action, next_obs) -> float; "
                        "name a Python function of those three arguments.") from None


def _resolve(top: Fields, key: str, relative: str) -> Path:
    candidates = [top.file.parent / relative, top.file.parent.parent / relative]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise top.error(key, f"is {relative!r}, but neither {' nor '.join(map(str, candidates))} exists; fix the path.")


def _load_agent(file: Path, key: str, top: Fields) -> dict[str, Any]:
    entries = read_yaml(file, needed_by=top.file)
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
