"""Load SB3 ``model.zip`` files without running code stored in them.

An SB3 zip holds the model's weights (``policy.pth``, ``pytorch_variables.pth``, read by SB3 with
``torch.load(weights_only=True)``: tensors only) and a JSON ``data`` file of its settings. Settings that
are not JSON (spaces, the policy class, schedules, buffers) are stored as ``{":serialized:": <base64
cloudpickle>}``, and ``BaseAlgorithm.load`` unpickles every one of them: a crafted zip runs any code its
author chose. SB3 leaves alone each entry named in ``custom_objects``; :func:`load_sb3` reads ``data``
itself (zipfile + json) and names all serialized entries there:

- ``observation_space``, ``action_space``: read as data by the restricted unpickler of
  :mod:`hti_rl.sb3io.safe_pickle` (numpy arrays, Gymnasium ``Box``); the task env's own space when they are
  equal. Any other space is refused with :class:`~hti_rl.errors.SpaceError`;
- ``policy_class``: only a reference to one of the algorithm's policy classes is admitted, and it must
  be ``MlpPolicy``;
- ``policy_kwargs``: plain data, torch activation and optimizer classes and SB3's ``FlattenExtractor``;
- ``learning_rate``, ``lr_schedule``, ``clip_range``, ``clip_range_vf``, ``train_freq``, ``action_noise``:
  rebuilt from the task's hyperparameters (``spec.hyperparams()``) when given, so resumed training keeps
  its schedule, else from the algorithm's defaults (constants; they only matter for training);
- anything else (buffer classes, last observations, episode statistics, unknown keys): ``None``, which
  SB3 replaces with its defaults or rebuilds when training starts.

Anything the restricted unpickler does not admit raises :class:`~hti_rl.sb3io.safe_pickle.UnsafePickleError`
before it is called::

    model = load_sb3(PPO, "runs/lqr1d/anchors/w=0.1/model.zip", spec.make_env(0.1), spec.hyperparams())
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from hti_rl.errors import FileFormatError, SpaceError
from hti_rl.sb3io.safe_pickle import UnsafePickleError, _Box, _RestrictedUnpickler
from hti_rl.spec.hyperparams import check_policy_kwargs

SERIALIZED = ":serialized:"
MAX_ZIP_BYTES = 2 << 30  # an SB3 MlpPolicy zip is a few MB
MAX_DATA_BYTES = 64 << 20  # its `data` JSON is a few kB
MAX_SPACE_SIZE = 1 << 16  # numbers in an observation or action space


_SCHEDULES = ("learning_rate", "clip_range", "clip_range_vf", "train_freq", "action_noise")


def read_sb3_data(path: str | Path) -> dict[str, Any]:
    """The ``data`` JSON of an SB3 zip, as written (serialized entries left as base64 text; nothing unpickled).

    :raises FileFormatError: the file is missing, not a zip, or has no readable ``data`` entry.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise OSError(f"{path} is not a regular file")
        if path.stat().st_size > MAX_ZIP_BYTES:
            raise FileFormatError(f"{path} is {path.stat().st_size} bytes, over the limit of {MAX_ZIP_BYTES} bytes for an SB3 model zip.")
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("data")
            if info.file_size > MAX_DATA_BYTES:
                raise FileFormatError(f"{path}: its `data` entry declares {info.file_size} bytes, over the limit of {MAX_DATA_BYTES}.")
            with zf.open(info) as f:
                data = json.loads(f.read(MAX_DATA_BYTES + 1))
    except FileFormatError:
        raise
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, RecursionError) as exc:
        raise FileFormatError(f"{path} is not a readable SB3 model zip ({type(exc).__name__}: {exc}); give the .zip that model.save wrote.") from None
    if not isinstance(data, dict):
        raise FileFormatError(f"{path}: the zip's `data` is a {type(data).__name__}, not SB3's settings; give the .zip that model.save wrote.")
    return data


def load_sb3(algo: type, path: str | Path, task_env: Any = None, hyperparams: dict[str, Any] | None = None,
             env: Any = None, device: str = "cpu", **kwargs: Any) -> Any:
    """``algo.load(path, env, device, **kwargs)`` with every serialized entry of the zip's ``data`` replaced.

    :param algo: the SB3 algorithm class (``stable_baselines3.PPO``, ...).
    :param path: the model zip.
    :param task_env: the task's env (or VecEnv): its Box spaces are used when the zip's equal them.
        ``None``: ``env``'s, else the zip's own (read as data).
    :param hyperparams: ``spec.hyperparams()`` of the task the model was trained for, or ``None`` (an
        agent trained elsewhere): the source of the schedules (``learning_rate``, ``clip_range``, ...).
    :param env: the VecEnv to keep training on (resume), or ``None`` for inference.
    :param device: the torch device.
    :param kwargs: more attributes to set on the loaded model (SB3's ``load`` kwargs, e.g. ``tensorboard_log``).
    :raises UnsafePickleError: an entry asks for a class or function outside what is admitted (nothing is run).
    :raises SpaceError: a space is not a Box, or the policy is not ``MlpPolicy``.
    :raises FileFormatError: the zip or an entry is unreadable.
    """
    path = Path(path)
    data = read_sb3_data(path)
    custom = _custom_objects(algo, path, data, task_env if task_env is not None else env, hyperparams)
    try:
        return algo.load(path, env=env, device=device, custom_objects=custom, **kwargs)
    except Exception as exc:  # torch refusing a non-tensor policy.pth, a damaged entry, mismatched shapes, ...
        raise FileFormatError(f"{path}: SB3 could not load it ({_reason(exc)}); re-save the model, or retrain it.") from None


def _reason(exc: BaseException) -> str:
    """One line of why loading failed. Torch's refusal runs to a page and advises ``weights_only=False``,
    which would run the file's code: that advice is never passed on."""
    text = str(exc)
    if "weights_only" in text or "WeightsUnpickler" in text or "Unsupported global" in text:
        return "its policy weights hold objects other than tensors, and were refused without running them"
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _custom_objects(algo: type, path: Path, data: dict[str, Any], task_env: Any, hyperparams: dict[str, Any] | None) -> dict[str, Any]:
    """Every serialized key of ``data`` -> a value built here (see the module docstring); ``env`` -> ``None``."""
    custom: dict[str, Any] = {"env": None}  # a stored env would be built by SB3 (gym.make of a stored id)
    for key, item in data.items():
        if not (isinstance(item, dict) and SERIALIZED in item):
            continue
        if key in ("observation_space", "action_space"):
            custom[key] = _space(path, key, item, getattr(task_env, key, None))
        elif key == "policy_class":
            custom[key] = _policy_class(algo, path, item)
        elif key == "policy_kwargs":
            custom[key] = _unpickle(path, key, item, _policy_kwargs_classes())
            try:
                check_policy_kwargs(custom[key])
            except ValueError as exc:
                raise FileFormatError(f"{path}: the model's `policy_kwargs` {exc}") from None
        elif key == "lr_schedule":
            from stable_baselines3.common.utils import FloatSchedule

            custom[key] = FloatSchedule(_setting(algo, hyperparams, "learning_rate"))  # SB3 rebuilds it from learning_rate
        elif key in _SCHEDULES:
            custom[key] = _setting(algo, hyperparams, key)
        else:
            custom[key] = None
    return custom


def _setting(algo: type, hyperparams: dict[str, Any] | None, key: str) -> Any:
    """The task's value of constructor argument ``key`` (``learning_rate``, ...), else the algorithm's default."""
    given = (hyperparams or {}).get("algo_kwargs", {})
    if key in given:
        value = given[key]
    else:
        parameter = inspect.signature(algo.__init__).parameters.get(key)
        value = None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default
    return tuple(value) if key == "train_freq" and isinstance(value, list) else value  # rl-zoo3 YAML: [1, "episode"]


def _space(path: Path, key: str, item: dict[str, Any], task_space: Any) -> spaces.Box:
    """A serialized Box, read as data -> the task env's space when equal, else a Box with the zip's bounds."""
    record = _unpickle(path, key, item, {})
    if not isinstance(record, _Box) or not isinstance(record.state, dict):
        raise SpaceError(f"{path}: the model's {key} is a {type(record).__name__}; hti-rl needs Box spaces (continuous vectors).")
    state = record.state
    try:
        shape = tuple(state.get("_shape", np.shape(state["low"])))
        if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape) or math.prod(shape) > MAX_SPACE_SIZE:
            raise ValueError(f"shape {str(shape)[:100]} is not a shape of at most {MAX_SPACE_SIZE} numbers")
        low, high = np.asarray(state["low"]), np.asarray(state["high"])
        box = spaces.Box(low=low, high=high, shape=tuple(state.get("_shape", low.shape)), dtype=np.dtype(state.get("dtype", low.dtype)))
    except (KeyError, TypeError, ValueError, AssertionError) as exc:
        raise FileFormatError(f"{path}: the model's {key} is not a readable Box ({type(exc).__name__}: {exc}); re-save the model.") from None
    return task_space if isinstance(task_space, spaces.Box) and task_space == box else box


def _policy_class(algo: type, path: Path, item: dict[str, Any]) -> type:
    """The stored policy class, admitted only as a reference to one of ``algo``'s policy aliases; must be MlpPolicy."""
    aliases = getattr(algo, "policy_aliases", {})
    policy = _unpickle(path, "policy_class", item, {(cls.__module__, cls.__name__): cls for cls in aliases.values()})
    mlp = aliases.get("MlpPolicy")
    if policy is not mlp:
        name = getattr(policy, "__name__", type(policy).__name__)
        raise SpaceError(
            f"{path}: the model's policy is {name}; hti-rl loads {algo.__name__} agents with MlpPolicy "
            "(Box vector observations). Use an agent trained with MlpPolicy."
        )
    return policy


def _policy_kwargs_classes() -> dict[tuple[str, str], type]:
    """Classes a ``policy_kwargs`` may name: torch activations and optimizers, SB3's FlattenExtractor."""
    from stable_baselines3.common.torch_layers import FlattenExtractor

    classes: list[Any] = [getattr(torch.nn, name, None) for name in torch.nn.modules.activation.__all__]
    classes += [getattr(torch.optim, name) for name in dir(torch.optim)]
    admitted = [c for c in classes if inspect.isclass(c) and (issubclass(c, torch.nn.Module) or issubclass(c, torch.optim.Optimizer))]
    return {(c.__module__, c.__name__): c for c in [*admitted, FlattenExtractor]}


class _EntryUnpickler(_RestrictedUnpickler):
    """:mod:`hti_rl.sb3io.safe_pickle`'s unpickler (numpy data, plain builtins, inert Box) plus ``classes``."""

    def __init__(self, file: Any, path: Path, key: str, classes: dict[tuple[str, str], Any]):
        super().__init__(file, path)
        self.key, self.classes = key, classes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.classes:
            return self.classes[(module, name)]
        try:
            return super().find_class(module, name)
        except SpaceError:
            if not self.key.endswith("_space"):
                raise
            what = self.key.removesuffix("_space")
            raise SpaceError(
                f"{self.path}: the model's {what} space is a {name} space; hti-rl needs Box {what}s (continuous vectors), "
                f"so a {name} {what} space cannot be an anchor. Use an agent trained on a Box {what} space."
            ) from None
        except UnsafePickleError:
            raise UnsafePickleError(
                f"{self.path}: refused to load: the model's `{self.key}` setting asks for `{module}.{name}`, which hti-rl "
                "does not admit in an SB3 zip (it admits numpy data, Gymnasium Box spaces, SB3's own policy classes, "
                "torch activations and optimizers). Nothing in the file was run. Do not use this file unless you know "
                "where it came from; an agent with custom classes can be imported as a callable obs -> action."
            ) from None


def _unpickle(path: Path, key: str, item: dict[str, Any], classes: dict[tuple[str, str], Any]) -> Any:
    try:
        blob = base64.b64decode(str(item[SERIALIZED]).encode(), validate=True)
        return _EntryUnpickler(io.BytesIO(blob), path, key, classes).load()
    except (UnsafePickleError, SpaceError):
        raise
    except Exception as exc:  # garbled: binascii.Error, EOFError, UnpicklingError, ValueError, ...
        raise FileFormatError(f"{path}: the model's `{key}` setting is unreadable ({type(exc).__name__}: {exc}); re-save the model.") from None
