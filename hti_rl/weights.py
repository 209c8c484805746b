"""WeightAxis: the reward weight's scale, local time, range checks and evaluation grids.

A task weighs one reward component by λ. The surrogate moves between anchor weights
λ_0 < … < λ_K in the task's *weight scale*: ``linear`` (the coordinate is λ) or ``log`` (log λ), see
docs/method.md §2. Everything that turns a weight into a coordinate, an interval and a
local time, or checks that a weight is usable, lives here, so that tasks, wrappers, policies,
baselines and reports agree. A task that weighs several components has one axis per component, and
its weights are vectors on their product: :class:`WeightGrid` (docs/method.md §12).
"""

from __future__ import annotations

import bisect
import itertools
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
        given = set(self.anchors) | {self.check(w) for w in include}
        times = self.times
        spread = [times[k] + i * (times[k + 1] - times[k]) / (per_interval + 1)
                  for k in range(len(times) - 1) for i in range(1, int(per_interval) + 1)]
        # A spread point that rounds to a given weight (10^0 computed as 1.0000000000000004) is that weight.
        near = [self.coord(w) for w in given]
        weights = given | {self.from_coord(t) for t in spread if not np.isclose(near, t, rtol=0.0, atol=1e-9).any()}
        return tuple(sorted(weights))


Vector = tuple[float, ...]


def parse_vector(text: str) -> Vector:
    """``"0.1,0.5"`` -> ``(0.1, 0.5)`` (a weight vector as the command line writes it).

    :raises WeightError: an entry is not a number.
    """
    parts = [p.strip() for p in str(text).split(",")]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise WeightError(f"weight {text!r} is not a number or comma-separated numbers; write e.g. 0.3 or 0.1,0.5.") from None


@dataclass(frozen=True)
class WeightGrid:
    """Several reward weights at once: a product of :class:`WeightAxis`, one axis per weighted component
    (docs/method.md §12). Anchors sit on every point of the product, in C order (the last axis fastest).

    :param axes: one axis per weighted component, in the spec's ``weighted`` order.
    :param names: the weighted components' names ``[n]``.

    Example::

        grid = WeightGrid((WeightAxis((0.1, 1, 10), "log"), WeightAxis((0.1, 1, 10), "log")), ("ctrl0", "ctrl1"))
        grid.points[1]          # (0.1, 1.0)
        grid.cell((0.3, 3.0))   # ((0, 1), (0.477..., 0.477...))
    """

    axes: tuple[WeightAxis, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", tuple(self.axes))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if not self.axes or len(self.names) != len(self.axes) or len(set(self.names)) != len(self.names):
            raise WeightError(f"a weight grid needs ≥ 1 axis and one distinct name per axis, got {len(self.axes)} axes "
                              f"named {list(self.names)}.")

    @classmethod
    def from_points(cls, points: Sequence[Sequence[float]], scales: Sequence[str], names: Sequence[str]) -> "WeightGrid":
        """The grid whose product is exactly ``points`` ``[K, n]``, given in C order.

        :raises WeightError: a point of the wrong length, a missing grid point (the message names it), a
            repeated point, or points out of C order.
        """
        n = len(names)
        if len(scales) != n:
            raise WeightError(f"{len(scales)} weight scales for {n} weighted components {list(names)}; give one per component.")
        rows = [tuple(float(v) for v in p) for p in points]
        wrong = [list(p) for p in rows if len(p) != n]
        if wrong:
            raise WeightError(f"anchor weight {wrong[0]} has {len(wrong[0])} entries; this grid weighs {n} components "
                              f"({', '.join(names)}), give one number per component.")
        axes = tuple(WeightAxis(tuple(sorted({p[i] for p in rows})), scales[i]) for i in range(n))  # type: ignore[arg-type]
        grid = cls(axes, tuple(names))
        missing = sorted(set(grid.points) - set(rows))
        if missing:
            raise WeightError(f"the anchors do not fill the grid {grid.shape_text()}: {', '.join(f'({grid.label(m)})' for m in missing[:5])} "
                              f"{'is' if len(missing) == 1 else 'are'} missing. Add an anchor at every point of the product "
                              "of the per-axis anchor lists.")
        if len(rows) != len(set(rows)):
            raise WeightError(f"anchor weights repeat a grid point ({len(rows)} given for a {grid.shape_text()} grid); give each once.")
        if rows != list(grid.points):
            raise WeightError(f"anchor weights are not in grid order (the last axis, {names[-1]}, fastest): expected "
                              f"{[list(p) for p in grid.points[:4]]}…; give them in that order.")
        return grid

    @property
    def dim(self) -> int:
        """Number of axes n."""
        return len(self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Anchors per axis."""
        return tuple(len(a.anchors) for a in self.axes)

    @property
    def points(self) -> tuple[Vector, ...]:
        """Every anchor vector ``[K, n]`` in C order."""
        return tuple(itertools.product(*(a.anchors for a in self.axes)))

    @property
    def scales(self) -> tuple[str, ...]:
        return tuple(a.scale for a in self.axes)

    def shape_text(self) -> str:
        return "×".join(map(str, self.shape))

    def flat(self, index: Sequence[int]) -> int:
        """Grid index ``[n]`` -> position in :attr:`points`."""
        return int(np.ravel_multi_index(tuple(int(i) for i in index), self.shape))

    def label(self, weight: Sequence[float]) -> str:
        """``"0.1,1"``: a vector as the command line and folder names write it."""
        return ",".join(exact(float(w)) for w in weight)

    def range_text(self) -> str:
        """``ctrl0 in [0.1, 10] × ctrl1 in [0.1, 10]`` for messages."""
        return " × ".join(f"{n} in {a.range_text()}" for n, a in zip(self.names, self.axes))

    def check(self, weight: object, allow_extrapolation: bool = False) -> Vector:
        """The weight vector as floats, refused unless usable.

        :raises WeightError: a scalar or a vector of the wrong length, an entry that is not a finite number,
            or an entry outside its axis (unless ``allow_extrapolation``); the message names the axis and the fix.
        """
        if isinstance(weight, str):
            parsed = parse_vector(weight)
            weight = parsed[0] if len(parsed) == 1 else parsed  # "0.3" is a scalar, the error says so
        values = np.asarray(weight, dtype=object) if not isinstance(weight, np.ndarray) else weight
        if values.ndim == 0:
            raise WeightError(f"this task weighs {self.dim} components ({', '.join(self.names)}), so a weight is a vector of "
                              f"{self.dim} numbers, not the scalar {reprlib.repr(weight)}; give e.g. "
                              f"{self.label(a.middle() for a in self.axes)} (ranges {self.range_text()}).")
        if values.ndim != 1 or len(values) != self.dim:
            raise WeightError(f"weight {reprlib.repr(weight)} has {values.size} entries; this task weighs {self.dim} components "
                              f"({', '.join(self.names)}), give one number per component in that order.")
        out = []
        for name, axis, value in zip(self.names, self.axes, values):
            try:
                out.append(axis.check(value, allow_extrapolation))
            except WeightError as exc:
                raise WeightError(f"weight of {name}: {exc}") from None
        return tuple(out)

    def cell(self, weight: object, allow_extrapolation: bool = False) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The grid cell holding ``weight``: its lower corner ``[n]`` and the local times ``s [n]`` (each as
        :meth:`WeightAxis.local_time`; an anchor vector has every s in {0, 1}).

        :raises WeightError: as :meth:`check`.
        """
        vector = self.check(weight, allow_extrapolation)
        found = [axis.local_time(v, allow_extrapolation) for axis, v in zip(self.axes, vector)]
        return tuple(k for k, _ in found), tuple(s for _, s in found)

    def corner(self, index: Sequence[int], s: Sequence[float]) -> int | None:
        """The anchor at (cell ``index``, local times ``s``) when every s is 0 or 1, else ``None``."""
        if any(v not in (0.0, 1.0) for v in s):
            return None
        return self.flat([k + int(v) for k, v in zip(index, s)])

    def middle(self) -> Vector:
        """Every axis's middle (:meth:`WeightAxis.middle`)."""
        return tuple(a.middle() for a in self.axes)

    def grid(self, per_interval: int = 3, include: Sequence[Sequence[float]] = ()) -> tuple[Vector, ...]:
        """Evaluation grid: the product of every axis's :meth:`WeightAxis.grid` and the vectors in ``include``,
        sorted, distinct.

        :raises WeightError: as :meth:`WeightAxis.grid`, or a vector of ``include`` outside the grid.
        """
        vectors = set(itertools.product(*(a.grid(per_interval) for a in self.axes)))
        vectors.update(self.check(w) for w in include)
        return tuple(sorted(vectors))
