"""RewardWeightWrapper: the env's reward rebuilt from unweighted components and a weight λ;
WeightInObservation: that weight appended to the observation (weight-conditioned agents)."""

from __future__ import annotations

import math
import reprlib
from typing import Any, Callable, Mapping, Sequence, Union

import gymnasium as gym
import numpy as np

from hti_rl.errors import HTIError, SpecError, WeightError
from hti_rl.seeds import WEIGHT_DRAWS
from hti_rl.weights import SCALES, WeightAxis

ComponentFn = Callable[[np.ndarray, np.ndarray, np.ndarray], float]
Source = Union[str, int, ComponentFn]
"""Where a component is read: a key of ``info`` (str), an index of a vector reward (int), or ``fn(obs, action, next_obs)``."""


COMPONENTS_KEY = "hti_rl/components"
WEIGHT_KEY = "hti_rl/weight"


class RewardWeightWrapper(gym.Wrapper):
    """Replace the reward by ``Σ fixed[c]·component[c] + λ·component[weighted]``.

    Each component is read *unweighted*, as a reward (costs negative), from one of three sources: a key
    of the step's ``info`` (str), an index of the env's vector reward (int; MO-Gymnasium envs), or a
    function ``fn(obs, action, next_obs) -> float`` of the observation before the step, the action given
    to ``step`` and the observation after it. Every ``info`` (of ``reset`` and ``step``) gets the current
    weight under ``"hti_rl/weight"``; every step's ``info`` also gets the dict of unweighted components
    under ``"hti_rl/components"``. The weight holds for a whole episode: :meth:`set_weight` takes effect
    at the next ``reset``, so under a VecEnv (``venv.env_method("set_weight", λ)``) each copy switches
    between its episodes.

    :param env: the env to wrap.
    :param components: component name -> source.
    :param weighted: name of the component multiplied by λ, or several names (a task weighing several
        components: then ``weight`` is a vector, one entry per name, and the reward is Σ fixed·c + Σ λ_i·c_i).
    :param weight: λ of the first episode; any finite number (a vector of them with several names).
    :param fixed: weights of the other components; a component not named here has weight 1.

    Example::

        env = RewardWeightWrapper(
            gym.make("Reacher-v5", reward_control_weight=1),
            components={"dist": "reward_dist", "ctrl": "reward_ctrl"},
            weighted="ctrl",
            weight=3.0,
        )
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        # reward == info["hti_rl/components"]["dist"] + 3.0 * info["hti_rl/components"]["ctrl"]
        env.set_weight(5.0)  # from the next episode on
    """

    def __init__(
        self,
        env: gym.Env,
        components: Mapping[str, Source],
        weighted: str | Sequence[str],
        weight: float | Sequence[float],
        fixed: Mapping[str, float] | None = None,
    ):
        super().__init__(env)
        fixed = dict(fixed or {})
        names = (weighted,) if isinstance(weighted, str) else tuple(weighted)
        for name in names:
            if name not in components:
                raise SpecError(f"weighted component {name!r} is not one of the components {sorted(components)}; name one of them.")
        extra = set(fixed) - (set(components) - set(names))
        if extra:
            raise SpecError(
                f"fixed weights given for {sorted(extra)}, which are not unweighted components; "
                f"fixed weights apply to {sorted(set(components) - set(names))}."
            )
        for name, source in components.items():
            if isinstance(source, bool) or not (isinstance(source, (str, int)) or callable(source)):
                raise SpecError(f"component {name!r} has source {source!r}; use an info key (str), a vector index (int) or a function.")
        self.components = dict(components)
        self.weighted = weighted if isinstance(weighted, str) else names
        self.coefficients = {name: fixed.get(name, 1.0) for name in components if name not in names}
        self._weight = self._checked_weight(weight)
        self._next_weight = self._weight
        self._obs: np.ndarray | None = None
        self._step = 0

    @property
    def weight(self) -> float | tuple[float, ...]:
        """λ of the current episode (a tuple, one per weighted component, when several are weighted)."""
        return self._weight

    def set_weight(self, weight: float | Sequence[float]) -> None:
        """Use ``weight`` from the next ``reset`` on.

        :param weight: the new λ; any finite number (a vector of them when several components are weighted).
        :raises WeightError: ``weight`` is NaN or infinite, or a vector of the wrong length.
        """
        self._next_weight = self._checked_weight(weight)

    def _checked_weight(self, weight: Any) -> Any:
        if isinstance(self.weighted, str):
            return _check_weight(weight)
        names = self.weighted
        if np.ndim(weight) != 1 or len(weight) != len(names):
            raise WeightError(f"reward weight {reprlib.repr(weight)} must be a vector of {len(names)} numbers, one per weighted "
                              f"component ({', '.join(names)}).")
        return tuple(_check_weight(w) for w in weight)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._weight = self._next_weight
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs, self._step = obs, 0
        return obs, {**info, WEIGHT_KEY: self._weight}

    def step(self, action):
        next_obs, env_reward, terminated, truncated, info = self.env.step(action)
        values = {name: self._read(name, source, env_reward, info, action, next_obs) for name, source in self.components.items()}
        if isinstance(self.weighted, str):
            reward = self._weight * values[self.weighted] + sum(c * values[n] for n, c in self.coefficients.items())
        else:
            reward = sum(w * values[n] for w, n in zip(self._weight, self.weighted)) + sum(c * values[n] for n, c in self.coefficients.items())
        self._obs = next_obs
        self._step += 1
        return next_obs, reward, terminated, truncated, {**info, COMPONENTS_KEY: values, WEIGHT_KEY: self._weight}

    def _read(self, name: str, source: Source, env_reward: Any, info: dict, action: Any, next_obs: Any) -> float:
        if isinstance(source, str):
            if source not in info:
                raise SpecError(
                    f"reward component {name!r} reads info[{source!r}], but {self.env.spec.id if self.env.spec else self.env} "
                    f"gives info keys {sorted(info)}; set the component's `info` to one of them."
                )
            value = info[source]
        elif isinstance(source, int):
            vector = np.asarray(env_reward)
            if vector.ndim != 1 or not -vector.size <= source < vector.size:
                raise SpecError(
                    f"reward component {name!r} reads index {source} of the env's vector reward, but the reward "
                    f"is {env_reward!r} (shape {vector.shape}); use an index below {vector.size} or read it another way."
                )
            value = vector[source]
        else:
            value = source(self._obs, action, next_obs)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise SpecError(
                f"reward component {name!r} is {reprlib.repr(value)} at step {self._step} of the episode, not a number; "
                "read a scalar reward (an info key holding a number, a vector index, or a function returning a float)."
            ) from None
        if not math.isfinite(value):
            raise HTIError(
                f"reward component {name!r} is {value} at step {self._step} of the episode (weight {self._weight if isinstance(self._weight, tuple) else format(self._weight, 'g')}); "
                "the env or the component function produced a non-finite value. Fix the env or the function."
            )
        return value


def _check_weight(weight: float) -> float:
    try:
        weight = float(weight)
    except (TypeError, ValueError, OverflowError):
        raise WeightError(f"reward weight {reprlib.repr(weight)} is not a number; give a finite number.") from None
    if not math.isfinite(weight):
        raise WeightError(f"reward weight {weight} is not finite; give a finite number.")
    return weight


class _WeightObserved(gym.Wrapper):
    """What both weight-in-observation wrappers share: each ``reset`` takes the episode's weight (``fixed``, else
    :meth:`_draw` from the wrapper's own generator, reseeded by ``reset(seed=...)``), hands it to the wrapped
    :class:`RewardWeightWrapper` and appends its coordinates (:meth:`_coordinates`) to every observation."""

    fixed: Any
    _weight: Any

    def _extend(self, box: gym.spaces.Space, low: Sequence[float], high: Sequence[float]) -> None:
        """The observation space: the 1-D Box ``box`` with the coordinates' bounds ``low``, ``high`` appended."""
        if not isinstance(box, gym.spaces.Box) or len(box.shape) != 1:
            raise SpecError(f"{type(self).__name__} needs a 1-D Box observation space, got {box}.")
        self.observation_space = gym.spaces.Box(low=np.append(box.low, np.asarray(low, dtype=box.dtype)),
                                                high=np.append(box.high, np.asarray(high, dtype=box.dtype)), dtype=box.dtype)

    def _draw(self) -> Any:
        """The weight of an episode without a fixed one, from ``self._rng``."""
        raise NotImplementedError

    def _coordinates(self, weight: Any) -> list[float]:
        """The observed coordinates of ``weight``."""
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng = np.random.default_rng([seed, WEIGHT_DRAWS])
        weight = self.fixed if self.fixed is not None else self._draw()
        self.env.get_wrapper_attr("set_weight")(weight)
        self._weight = weight
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._observe(obs), reward, terminated, truncated, info

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        return np.append(obs, np.asarray(self._coordinates(self._weight), dtype=self.observation_space.dtype))


class WeightInObservation(_WeightObserved):
    """Append the reward weight, in the task's weight-scale coordinate, to a Box observation.

    The coordinate is ``log λ`` on a ``"log"`` scale and ``λ`` on a ``"linear"`` one, so a network sees
    a well-scaled input. Each ``reset`` picks the episode's weight and passes it to the wrapped
    :class:`RewardWeightWrapper` (``set_weight``) before resetting it: uniformly in the coordinate over
    ``weight_range`` (training), uniformly from ``choices`` when given, or always ``fixed`` (evaluation;
    :meth:`fix` sets it later). Draws come from the wrapper's own generator, reseeded by
    ``reset(seed=...)``. The observation space gains one dimension, bounded by the coordinate's range.

    :param env: a :class:`RewardWeightWrapper` (or an env wrapping one; ``set_weight`` is looked up).
    :param weight_range: ``(λ_lo, λ_hi)``: the sampling range and the bounds of the extra dimension.
    :param scale: ``"log"`` or ``"linear"``.
    :param choices: weights to draw from (uniformly) instead of the range.
    :param fixed: a weight used in every episode (overrides sampling).
    :param seed: seeds the weight draws until a ``reset(seed=...)`` reseeds them.

    Example::

        env = WeightInObservation(spec.make_env(0.1), weight_range=(0.1, 10), scale="log")
        obs, info = env.reset(seed=0)   # obs[-1] == log(info["hti_rl/weight"]), λ ~ exp(U(log 0.1, log 10))
        env.fix(3.0)                    # from the next reset on: λ = 3, obs[-1] == log 3
    """

    def __init__(
        self,
        env: gym.Env,
        weight_range: tuple[float, float],
        scale: str = "linear",
        choices: Sequence[float] | None = None,
        fixed: float | None = None,
        seed: int | None = None,
    ):
        super().__init__(env)
        if scale not in SCALES:
            raise SpecError(f"weight scale {scale!r} is not 'log' or 'linear'.")
        self.scale = scale
        lo, hi = (_check_weight(w) for w in weight_range)
        if not lo < hi:
            raise WeightError(f"weight range ({lo:g}, {hi:g}) is empty; give (low, high) with low < high.")
        if scale == "log" and lo <= 0:
            raise WeightError(f"reward weight {lo:g} must be > 0 on a log weight scale.")
        self.axis = WeightAxis((lo, hi), scale)  # type: ignore[arg-type]
        self.weight_range = (lo, hi)
        self.coordinate_range = (self.coordinate(lo), self.coordinate(hi))
        self.choices = None if choices is None else [_check_weight(w) for w in choices]
        if self.choices is not None:
            for w in self.choices:
                self.coordinate(w)  # a log scale refuses weights ≤ 0 here
            if not self.choices:
                raise WeightError("choices is empty; give at least one weight, or None to sample the range.")
        self.fixed = None if fixed is None else self._checked(fixed)
        self._rng = np.random.default_rng(seed)
        self._weight = self.fixed if self.fixed is not None else lo
        self._extend(env.observation_space, [self.coordinate_range[0]], [self.coordinate_range[1]])

    def coordinate(self, weight: float) -> float:
        """λ -> the observed coordinate: ``log λ`` (log scale) or ``λ``.

        :raises WeightError: NaN/inf, or ≤ 0 on a log scale.
        """
        weight = _check_weight(weight)
        if self.scale == "log" and weight <= 0:
            raise WeightError(f"reward weight {weight:g} must be > 0 on a log weight scale.")
        return self.axis.coord(weight)

    @property
    def weight(self) -> float:
        """λ of the current episode."""
        return self._weight

    def fix(self, weight: float | None) -> None:
        """Use ``weight`` in every episode from the next ``reset`` on (``None``: sample again)."""
        self.fixed = None if weight is None else self._checked(weight)

    def _draw(self) -> float:
        if self.choices is not None:
            return self.choices[int(self._rng.integers(len(self.choices)))]
        return self.axis.from_coord(self._rng.uniform(*self.coordinate_range))

    def _coordinates(self, weight: float) -> list[float]:
        return [self.coordinate(weight)]

    def _checked(self, weight: float) -> float:
        weight = _check_weight(weight)
        self.coordinate(weight)
        return weight


class GridWeightInObservation(_WeightObserved):
    """Append a weight vector, each entry in its axis's coordinate (``log λ_i`` on a log axis), to a Box
    observation: :class:`WeightInObservation` for a task that weighs several components (docs/method.md §12).

    Each ``reset`` picks the episode's vector, every entry uniformly in its coordinate over its axis (training),
    or ``fixed`` (evaluation; :meth:`fix`), and passes it to the wrapped :class:`RewardWeightWrapper`.

    :param env: a :class:`RewardWeightWrapper` weighing the grid's components (or an env wrapping one).
    :param grid: the task's :class:`~hti_rl.weights.WeightGrid`: the sampling box and the extra dimensions' bounds.
    :param fixed: a weight vector used in every episode (overrides sampling).
    :param seed: seeds the draws until a ``reset(seed=...)`` reseeds them.

    Example::

        env = GridWeightInObservation(spec.make_env((0.1, 0.1)), spec.grid)
        obs, info = env.reset(seed=0)   # obs[-2:] == log of info["hti_rl/weight"]
    """

    def __init__(self, env: gym.Env, grid: Any, fixed: Sequence[float] | None = None, seed: int | None = None):
        super().__init__(env)
        self.grid = grid
        self.fixed = None if fixed is None else grid.check(fixed)
        self._rng = np.random.default_rng(seed)
        self._weight = self.fixed if self.fixed is not None else grid.points[0]
        self.coordinate_range = [(min(a.times), max(a.times)) for a in grid.axes]
        self._extend(env.observation_space, [lo for lo, _ in self.coordinate_range], [hi for _, hi in self.coordinate_range])

    @property
    def weight(self) -> tuple[float, ...]:
        """The weight vector of the current episode."""
        return self._weight

    def fix(self, weight: Sequence[float] | None) -> None:
        """Use ``weight`` in every episode from the next ``reset`` on (``None``: sample again)."""
        self.fixed = None if weight is None else self.grid.check(weight)

    def _draw(self) -> tuple[float, ...]:
        return tuple(a.from_coord(self._rng.uniform(lo, hi)) for a, (lo, hi) in zip(self.grid.axes, self.coordinate_range))

    def _coordinates(self, weight: Sequence[float]) -> list[float]:
        return [a.coord(w) for a, w in zip(self.grid.axes, weight)]
