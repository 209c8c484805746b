"""Read SB3 VecNormalize pickles without running code from them; keep the statistics as JSON.

A ``vecnormalize.pkl`` is a Python pickle, and ``pickle.load`` of a crafted file runs any code its
author chose. :func:`read_vecnormalize` unpickles with a restricted :class:`pickle.Unpickler` that
admits only what the statistics need: numpy arrays, dtypes and scalars, builtins that are plain data,
and inert stand-ins for SB3's ``VecNormalize`` and ``RunningMeanStd`` and Gymnasium's ``Box`` (their
pickled state is kept as data; none of their methods runs). Anything else is refused with
:class:`UnsafePickleError` before it is called.

The statistics then live in :class:`NormStats` and, on disk, in hti-rl's own format
(``vecnormalize.json``: numbers and lists only)::

    stats = read_vecnormalize("logs/ppo/Pendulum-v1_1/Pendulum-v1/vecnormalize.pkl")
    write_norm_stats(stats, "runs/pendulum/anchors/w=0.1/vecnormalize.json")
    venv = stats.wrap(DummyVecEnv([make_env]))        # a VecNormalize in evaluation mode
"""

from __future__ import annotations

import importlib
import json
import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.errors import FileFormatError, SpaceError
from hti_rl.io import write_json

STATS_FORMAT = "hti-rl-vecnormalize"
STATS_VERSION = 1


class UnsafePickleError(FileFormatError):
    """A pickle asked for a class or function that VecNormalize statistics never need; nothing was run."""


class _Record:
    """Inert stand-in for an admitted class: keeps the constructor arguments and pickled state as data."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Record":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.state = args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _VecNormalize(_Record):
    pass


class _RunningMeanStd(_Record):
    pass


class _Box(_Record):
    pass


class _Ignored(_Record):
    """Random generators a Box may carry (``_np_random``): not needed for the statistics, never built."""


def _ignored(*args: Any, **kwargs: Any) -> _Ignored:
    return _Ignored()


def _numpy(name: str) -> Any:
    """``numpy._core.multiarray._reconstruct`` (numpy 2) or ``numpy.core...`` (numpy 1), by attribute path."""
    module, _, attr = name.rpartition(".")
    for prefix in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{prefix}.{module}"), attr)
        except (ImportError, AttributeError):
            continue
    raise AttributeError(name)


_NUMPY_FUNCTIONS = ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")
_RECORDS: dict[tuple[str, str], type[_Record]] = {
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"): _VecNormalize,
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"): _RunningMeanStd,
    ("gymnasium.spaces.box", "Box"): _Box,
    ("gym.spaces.box", "Box"): _Box,
}


_PLAIN_BUILTINS = {"set", "frozenset", "slice", "range", "complex", "bytearray", "bytes", "bool", "int", "float", "str", "list", "tuple", "dict"}
_OTHER_SPACES = {"Dict", "Discrete", "MultiDiscrete", "MultiBinary", "Tuple", "Sequence", "Graph", "Text", "OneOf"}


MAX_PICKLE_BYTES = 64 << 20  # the largest VecNormalize file read (its statistics take a few kB)
MAX_ELEMENTS = 1 << 22
"""The most elements (or bytes) any constructor a pickle calls may be asked for: the admitted
constructors allocate what their arguments ask, so a 43-byte pickle could ask for gigabytes."""


def _refuse_size(what: str, size: int) -> None:
    if size > MAX_ELEMENTS:
        raise UnsafePickleError(f"refused to load: the pickle asks {what} for {size} elements, over the limit of {MAX_ELEMENTS}; "
                                "nothing was built. VecNormalize statistics are far smaller; save them again.")


def _bounded(fn: Any, name: str) -> Any:
    """``fn`` (a plain builtin) refusing integer arguments or sized arguments over :data:`MAX_ELEMENTS`."""
    def call(*args: Any) -> Any:
        for arg in args:
            if isinstance(arg, int) and not isinstance(arg, bool):
                _refuse_size(name, abs(arg))
            elif hasattr(arg, "__len__"):
                _refuse_size(name, len(arg))
        return fn(*args)

    return call


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's ``_reconstruct`` (what a pickled array is built from), refusing object dtypes and huge shapes."""
    kind = np.dtype(dtype)
    if kind.hasobject:
        raise UnsafePickleError("refused to load: the pickle holds an object array, which VecNormalize statistics never do; nothing was built.")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise UnsafePickleError(f"refused to load: an array of shape {str(shape)[:80]}; nothing was built.")
    _refuse_size("an array", math.prod(shape) * max(kind.itemsize, 1))
    return _numpy("multiarray._reconstruct")(np.ndarray, shape, kind)


def _ndarray(*args: Any) -> Any:
    """``numpy.ndarray`` as a pickle names it (only as :func:`_reconstruct`'s subtype); a call would allocate."""
    raise UnsafePickleError("refused to load: the pickle calls numpy.ndarray directly, which VecNormalize statistics never do; nothing was built.")


def _dtype(*args: Any) -> np.dtype:
    kind = np.dtype(*args)
    if kind.hasobject:
        raise UnsafePickleError("refused to load: the pickle asks for an object dtype, which VecNormalize statistics never use; nothing was built.")
    return kind


class _RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` admits numpy data, plain builtins and the stand-ins above; refuses the rest."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _RECORDS:
            return _RECORDS[(module, name)]
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name in ("ndarray", "dtype"):
            return _ndarray if name == "ndarray" else _dtype
        for function in _NUMPY_FUNCTIONS:
            sub, _, attr = function.partition(".")
            if module in (f"numpy.core.{sub}", f"numpy._core.{sub}") and name == attr:
                return _reconstruct if attr == "_reconstruct" else _numpy(function)
        if module == "numpy" and hasattr(np, name) and isinstance(getattr(np, name), type) and issubclass(getattr(np, name), np.generic):
            return getattr(np, name)  # scalar types such as numpy.float64, used as dtype arguments
        if module.startswith("numpy.random.") and (name.startswith("__") or name in ("PCG64", "MT19937", "Philox", "SFC64", "SeedSequence")):
            return _ignored if name.startswith("__") else _Ignored
        if module == "builtins" and name in _PLAIN_BUILTINS:
            return _bounded(getattr(__import__("builtins"), name), name)
        if module.startswith(("gymnasium.spaces", "gym.spaces")) and name in _OTHER_SPACES:
            raise SpaceError(
                f"{self.path} holds a {name} space; hti-rl needs Box observation and action spaces (continuous "
                "vectors). Use an agent trained on a Box observation space with a Box action space."
            )
        raise UnsafePickleError(
            f"{self.path}: refused to load: the pickle asks for `{module}.{name}`, which VecNormalize statistics never "
            "need (hti-rl admits numpy arrays and dtypes, SB3's VecNormalize and RunningMeanStd, Gymnasium Box spaces "
            "and plain builtins). Nothing in the file was run. Do not use this file unless you know where it came "
            "from; if it is yours, save the statistics again with SB3's VecNormalize.save."
        )


@dataclass(frozen=True)
class NormStats:
    """VecNormalize's statistics and settings, as plain data.

    :param obs_mean: running mean of the observations ``[C]`` (``None`` when observations are not normalised).
    :param obs_var: running variance ``[C]``.
    :param obs_count: samples behind the running moments.
    :param ret_mean: running mean of the discounted return (a number), for ``norm_reward``.
    :param ret_var: its variance.
    :param ret_count: samples behind it.
    :param norm_obs: whether observations are normalised.
    :param norm_reward: whether rewards are normalised (training only; evaluation never is).
    :param clip_obs: normalised observations are clipped to ``[-clip_obs, clip_obs]``.
    :param clip_reward: the same for rewards.
    :param gamma: discount of the return statistics.
    :param epsilon: added to the variance before the square root.
    """

    obs_mean: tuple[float, ...] | None
    obs_var: tuple[float, ...] | None
    obs_count: float
    ret_mean: float
    ret_var: float
    ret_count: float
    norm_obs: bool
    norm_reward: bool
    clip_obs: float
    clip_reward: float
    gamma: float
    epsilon: float

    @classmethod
    def from_vecnormalize(cls, vecnormalize: Any) -> "NormStats":
        """The statistics of a live SB3 ``VecNormalize`` (e.g. ``model.get_vec_normalize_env()``)."""
        if isinstance(getattr(vecnormalize, "obs_rms", None), dict):
            raise SpaceError("VecNormalize over a Dict observation space is not supported; hti-rl needs Box (vector) observations.")
        obs_rms, ret_rms = getattr(vecnormalize, "obs_rms", None), vecnormalize.ret_rms
        norm_obs = bool(vecnormalize.norm_obs) and obs_rms is not None
        return _check(cls(
            obs_mean=tuple(np.asarray(obs_rms.mean, dtype=np.float64).reshape(-1).tolist()) if norm_obs else None,
            obs_var=tuple(np.asarray(obs_rms.var, dtype=np.float64).reshape(-1).tolist()) if norm_obs else None,
            obs_count=float(obs_rms.count) if obs_rms is not None else 0.0,
            ret_mean=float(np.asarray(ret_rms.mean).reshape(-1)[0]), ret_var=float(np.asarray(ret_rms.var).reshape(-1)[0]),
            ret_count=float(ret_rms.count), norm_obs=norm_obs, norm_reward=bool(vecnormalize.norm_reward),
            clip_obs=float(vecnormalize.clip_obs), clip_reward=float(vecnormalize.clip_reward),
            gamma=float(vecnormalize.gamma), epsilon=float(vecnormalize.epsilon),
        ), "the VecNormalize")

    @property
    def obs_dim(self) -> int | None:
        return None if self.obs_mean is None else len(self.obs_mean)

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """raw obs [..., C] -> normalised obs [..., C] float32, as ``VecNormalize.normalize_obs``."""
        if not self.norm_obs or self.obs_mean is None:
            return np.asarray(obs)
        x = (np.asarray(obs, dtype=np.float64) - np.asarray(self.obs_mean)) / np.sqrt(np.asarray(self.obs_var) + self.epsilon)
        return np.clip(x, -self.clip_obs, self.clip_obs).astype(np.float32)

    def wrap(self, venv: Any, training: bool = False) -> Any:
        """``venv`` wrapped in an SB3 ``VecNormalize`` holding these statistics.

        :param venv: a VecEnv whose observations match ``obs_dim``.
        :param training: keep updating the statistics (resumed training); otherwise evaluation mode,
            with rewards left unnormalised.
        """
        from stable_baselines3.common.running_mean_std import RunningMeanStd
        from stable_baselines3.common.vec_env import VecNormalize

        vecnormalize = VecNormalize(
            venv, training=training, norm_obs=self.norm_obs, norm_reward=self.norm_reward and training,
            clip_obs=self.clip_obs, clip_reward=self.clip_reward, gamma=self.gamma, epsilon=self.epsilon,
        )
        if self.obs_mean is not None:
            shape = venv.observation_space.shape
            if len(self.obs_mean) != math.prod(shape):
                raise SpaceError(f"the VecNormalize statistics normalise {len(self.obs_mean)} observation values, the env gives "
                                 f"{shape}; use the statistics saved with this agent.")
            vecnormalize.obs_rms = RunningMeanStd(shape=shape)
            vecnormalize.obs_rms.mean = np.asarray(self.obs_mean, dtype=np.float64).reshape(shape)
            vecnormalize.obs_rms.var = np.asarray(self.obs_var, dtype=np.float64).reshape(shape)
            vecnormalize.obs_rms.count = self.obs_count
        vecnormalize.ret_rms.mean = np.float64(self.ret_mean)
        vecnormalize.ret_rms.var = np.float64(self.ret_var)
        vecnormalize.ret_rms.count = self.ret_count
        return vecnormalize


def read_vecnormalize(path: str | Path) -> NormStats:
    """Read an SB3 ``vecnormalize.pkl`` with the restricted unpickler.

    :param path: a file written by ``VecNormalize.save`` (or ``pickle.dump`` of a VecNormalize).
    :raises UnsafePickleError: the pickle asks for anything but the statistics' data (nothing is run).
    :raises SpaceError: it normalises a Dict observation space, or holds a non-Box space.
    :raises FileFormatError: the file is missing, truncated, or not a VecNormalize pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no VecNormalize file at {path}; fix the path (rl-zoo3 keeps it in <run>/<env id>/vecnormalize.pkl).")
    if path.stat().st_size > MAX_PICKLE_BYTES:
        raise FileFormatError(f"{path} is {path.stat().st_size} bytes, over the limit of {MAX_PICKLE_BYTES} bytes for VecNormalize statistics.")
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, path).load()
    except (UnsafePickleError, SpaceError):
        raise
    except Exception as exc:  # truncated or garbled: EOFError, UnpicklingError, ValueError, ...
        raise FileFormatError(f"{path} is not a readable VecNormalize pickle ({type(exc).__name__}: {exc}); save it again with VecNormalize.save.") from None
    if not isinstance(obj, _VecNormalize) or not isinstance(obj.state, dict):
        raise FileFormatError(f"{path} holds a {type(obj).__name__}, not a pickled VecNormalize; give the file VecNormalize.save wrote.")
    return _stats_from_state(obj.state, path)


def _stats_from_state(state: dict[str, Any], path: Path) -> NormStats:
    obs_rms, ret_rms = state.get("obs_rms"), state.get("ret_rms")
    if isinstance(obs_rms, dict):
        raise SpaceError(f"{path} normalises a Dict observation space; hti-rl needs Box (vector) observations.")
    norm_obs = bool(state.get("norm_obs", True))
    mean = var = None
    obs_count = 0.0
    if isinstance(obs_rms, _RunningMeanStd):
        mean, var, obs_count = _moments(obs_rms, path, "obs_rms")
    elif norm_obs:
        raise FileFormatError(f"{path} normalises observations but holds no `obs_rms` statistics; save the statistics again.")
    if not norm_obs:
        mean = var = None
    ret = _moments(ret_rms, path, "ret_rms") if isinstance(ret_rms, _RunningMeanStd) else ((0.0,), (1.0,), 0.0)
    try:
        stats = NormStats(
            obs_mean=mean, obs_var=var, obs_count=float(obs_count),
            ret_mean=float(ret[0][0]), ret_var=float(ret[1][0]), ret_count=float(ret[2]),
            norm_obs=norm_obs, norm_reward=bool(state.get("norm_reward", False)),
            clip_obs=float(state.get("clip_obs", 10.0)), clip_reward=float(state.get("clip_reward", 10.0)),
            gamma=float(state.get("gamma", 0.99)), epsilon=float(state.get("epsilon", 1e-8)),
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise FileFormatError(f"{path}: a VecNormalize setting has an unexpected value ({exc}); save the statistics again.") from None
    return _check(stats, path)


def _moments(rms: Any, path: Path, name: str) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    """A RunningMeanStd stand-in -> (mean [C], var [C], count), flattened, float64."""
    if not isinstance(rms, _RunningMeanStd) or not isinstance(rms.state, dict):
        raise FileFormatError(f"{path}: `{name}` is a {type(rms).__name__}, not SB3's RunningMeanStd; save the statistics again.")
    try:
        mean = np.asarray(rms.state["mean"], dtype=np.float64).reshape(-1)
        var = np.asarray(rms.state["var"], dtype=np.float64).reshape(-1)
        count = float(rms.state.get("count", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: `{name}` lacks usable mean/var arrays ({exc}); save the statistics again.") from None
    if mean.shape != var.shape:
        raise FileFormatError(f"{path}: `{name}` has mean of shape {mean.shape} but var of shape {var.shape}; save the statistics again.")
    return tuple(mean.tolist()), tuple(var.tolist()), count


def _check(stats: NormStats, path: Path | str) -> NormStats:
    """Finite numbers, non-negative variances, positive clip and epsilon."""
    numbers = [*(stats.obs_mean or ()), *(stats.obs_var or ()), stats.ret_mean, stats.ret_var, stats.clip_obs, stats.epsilon, stats.gamma]
    if not all(math.isfinite(v) for v in numbers):
        raise FileFormatError(f"{path}: the VecNormalize statistics hold NaN or inf; the agent's normaliser is broken, retrain or re-save it.")
    if any(v < 0 for v in (stats.obs_var or ())) or stats.ret_var < 0 or stats.clip_obs <= 0 or stats.epsilon < 0:
        raise FileFormatError(f"{path}: negative variance, clip_obs ≤ 0 or epsilon < 0 in the VecNormalize statistics; re-save them.")
    return stats


def write_norm_stats(stats: NormStats, path: str | Path) -> None:
    """Write ``stats`` as hti-rl's ``vecnormalize.json`` (atomically; floats round-trip exactly)."""
    write_json(path, {"format": STATS_FORMAT, "version": STATS_VERSION, **asdict(stats)})


def read_norm_stats(path: str | Path) -> NormStats:
    """Read a ``vecnormalize.json`` written by :func:`write_norm_stats`.

    :raises FileFormatError: missing, not JSON, another format or version, or bad values.
    """
    path = Path(path)
    fix = "re-import the anchor with `hti-rl import-anchors <spec> ... --force`."
    try:
        if not path.is_file() or path.stat().st_size > MAX_PICKLE_BYTES:
            raise OSError(f"not a regular file of at most {MAX_PICKLE_BYTES} bytes")
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{path} is missing or not JSON ({exc}); {fix}") from None
    if not isinstance(raw, dict) or raw.get("format") != STATS_FORMAT or raw.get("version") != STATS_VERSION:
        raise FileFormatError(f"{path} is not an hti-rl VecNormalize statistics file of version {STATS_VERSION}; {fix}")
    missing = [k for k in NormStats.__dataclass_fields__ if k not in raw]
    if missing:
        raise FileFormatError(f"{path} lacks the fields {', '.join(missing)}; {fix}")
    fields = {k: raw[k] for k in NormStats.__dataclass_fields__}
    try:
        for key in ("obs_mean", "obs_var"):
            fields[key] = None if fields[key] is None else tuple(float(v) for v in fields[key])
        for key in ("obs_count", "ret_mean", "ret_var", "ret_count", "clip_obs", "clip_reward", "gamma", "epsilon"):
            if isinstance(fields[key], bool) or not isinstance(fields[key], (int, float)):
                raise TypeError(f"`{key}` is {str(fields[key])[:40]}, not a number")
            fields[key] = float(fields[key])
        for key in ("norm_obs", "norm_reward"):
            if not isinstance(fields[key], bool):
                raise TypeError(f"`{key}` is {str(fields[key])[:40]}, not true or false")
        if (fields["obs_mean"] is None) != (fields["obs_var"] is None) or len(fields["obs_mean"] or ()) != len(fields["obs_var"] or ()):
            raise ValueError("`obs_mean` and `obs_var` differ in length")
        stats = NormStats(**fields)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: bad field ({exc}); {fix}") from None
    return _check(stats, path)


def load_vecnormalize(path: str | Path, venv: Any, training: bool = False) -> Any:
    """What ``VecNormalize.load(path, venv)`` does, through :func:`read_vecnormalize` (``.pkl``) or
    :func:`read_norm_stats` (``.json``): ``venv`` wrapped with the file's statistics."""
    path = Path(path)
    stats = read_norm_stats(path) if path.suffix == ".json" else read_vecnormalize(path)
    return stats.wrap(venv, training=training)
