"""WeightAxis: the reward weight's scale, local time, range checks and evaluation grids.

A task weighs one reward component by λ. The surrogate moves between anchor weights
λ_0 < … < λ_K in the task's *weight scale*: ``linear`` (the coordinate is λ) or ``log`` (log λ), see
docs/method.md §2. Everything that turns a weight into a coordinate, an interval and a
local time, or checks that a weight is usable, lives here, so that tasks, wrappers, policies,
baselines and reports agree.
"""

from __future__ import annotations

import bisect
import math
import numbers
import reprlib
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from hti_rl.errors import WeightError

SCALES = ("linear", "log")


def exact(weight: float) -> str:
    """A weight as text that reads back as the same float: ``f"{λ:g}"`` where it does (``0.1``, ``10``),
    else the shortest exact form (``10.000000000000002``, not a misleading ``10``)."""
    short = f"{weight:g}"
    return short if float(short) == weight else repr(float(weight))


@dataclass(frozen=True)
class WeightAxis:
    """The anchor weights on one axis and the scale in which local time is measured.

    :param anchors: anchor weights, strictly increasing, at least 2 (positive on a log scale).
    :param scale: ``"linear"`` or ``"log"``.

    Example::

        axis = WeightAxis((0.1, 1.0, 10.0), "log")
        axis.local_time(3.0)   # (1, 0.477...): interval [1, 10], s = log10(3)
    """

    anchors: tuple[float, ...]
    scale: Literal["linear", "log"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "anchors", tuple(float(w) for w in self.anchors))
        if self.scale not in SCALES:
            raise WeightError(f"weight scale {self.scale!r} is not one of {', '.join(SCALES)}.")
        if len(self.anchors) < 2 or any(b <= a for a, b in zip(self.anchors, self.anchors[1:])):
            raise WeightError(f"anchor weights {list(self.anchors)} must be ≥ 2 strictly increasing numbers.")
        if self.scale == "log" and self.anchors[0] <= 0:
            raise WeightError(f"anchor weights {list(self.anchors)} must be > 0 on a log weight scale.")

    @property
    def low(self) -> float:
        return self.anchors[0]

    @property
    def high(self) -> float:
        return self.anchors[-1]

    def range_text(self) -> str:
        """``[λ_0, λ_K]`` for messages."""
        return f"[{exact(self.low)}, {exact(self.high)}]"

    @property
    def times(self) -> tuple[float, ...]:
        """The anchors' coordinates ``[K + 1]``."""
        return tuple(self.coord(w) for w in self.anchors)

    def coord(self, weight: float) -> float:
        """The weight's coordinate: ``λ`` (linear) or ``log λ`` (log).

        :raises WeightError: NaN, infinite, or ≤ 0 on a log scale.
        """
        weight = float(weight)
        if not math.isfinite(weight):
            raise WeightError(f"weight must be finite, got {weight}; the anchors span {self.range_text()}.")
        if self.scale == "log" and weight <= 0:
            raise WeightError(f"weight must be > 0 on this task's log weight scale, got {weight:g}.")
        return math.log(weight) if self.scale == "log" else weight

    def from_coord(self, t: float) -> float:
        """Inverse of :meth:`coord`."""
        return math.exp(t) if self.scale == "log" else float(t)

    def check(self, weight: object, allow_extrapolation: bool = False) -> float:
        """The weight as a float, refused unless usable.

        :raises WeightError: not a number, NaN/inf, ≤ 0 on a log scale, or outside the anchor range
            (unless ``allow_extrapolation``); the message names the range and the fix.
        """
        is_real = isinstance(weight, numbers.Real) or (isinstance(weight, np.ndarray) and weight.ndim == 0 and weight.dtype.kind in "iuf")
        if not is_real or isinstance(weight, (bool, np.bool_)):
            raise WeightError(f"weight must be a number, got {reprlib.repr(weight)} ({type(weight).__name__}); "
                              f"the anchors span {self.range_text()}.")
        try:
            value = float(weight)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            raise WeightError(f"weight must be a number, got {reprlib.repr(weight)}; the anchors span {self.range_text()}.") from None
        self.coord(value)
        if not (self.low <= value <= self.high) and not allow_extrapolation:
            raise WeightError(
                f"weight {exact(value)} is outside the anchor range {self.range_text()}. Pick a weight in range, "
                "train an anchor beyond it, or pass allow_extrapolation=True (--allow-extrapolation on the "
                "command line) to accept an untested extrapolation."
            )
        return value

    def local_time(self, weight: float, allow_extrapolation: bool = False) -> tuple[int, float]:
        """The interval ``k`` holding ``weight`` and the local time ``s`` within it.

        ``s = (t − t_k) / (t_{k+1} − t_k)`` with ``t`` the coordinate; an anchor weight λ_k (k < K)
        gives ``(k, 0.0)`` and the last anchor ``(K − 1, 1.0)``. ``s`` leaves [0, 1] only when
        extrapolating, in the end intervals.

        :raises WeightError: as :meth:`check`.
        """
        t = self.coord(self.check(weight, allow_extrapolation))
        times = self.times
        k = min(max(bisect.bisect_right(times, t) - 1, 0), len(times) - 2)
        s = (t - times[k]) / (times[k + 1] - times[k])
        return k, float(s)

    def middle(self) -> float:
        """The middle of the anchor range in the weight scale (geometric mean on a log scale), 3 digits."""
        middle = math.sqrt(self.low * self.high) if self.scale == "log" else (self.low + self.high) / 2
        return float(f"{middle:.3g}")

    def even(self, n: int) -> np.ndarray:
        """``n`` weights evenly spaced in the coordinate over the anchor range ``[n]``."""
        return np.geomspace(self.low, self.high, n) if self.scale == "log" else np.linspace(self.low, self.high, n)

    def grid(self, per_interval: int = 3, include: Sequence[float] = ()) -> tuple[float, ...]:
        """Evaluation grid: every anchor, ``per_interval`` points evenly spaced (in the coordinate) inside
        each anchor interval, and the weights in ``include`` (e.g. held-out weights), sorted, distinct.

        :raises WeightError: ``per_interval`` < 0, or a weight of ``include`` outside the anchor range.
        """
        if int(per_interval) < 0:
            raise WeightError(f"points per interval must be ≥ 0, got {per_interval}.")
        weights = set(self.anchors)
        times = self.times
        for k in range(len(times) - 1):
            for i in range(1, int(per_interval) + 1):
                weights.add(self.from_coord(times[k] + i * (times[k + 1] - times[k]) / (per_interval + 1)))
        weights.update(self.check(w) for w in include)
        return tuple(sorted(weights))
