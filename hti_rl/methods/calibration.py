"""Calibration: every candidate's measured return on a grid of weights, the choice at each grid weight,
and what a calibrated surrogate deploys at any weight (docs/method.md §10).

The candidates at a grid weight λ are every anchor (``anchor:<w>``), the surrogate at λ (``surrogate``)
and, where the anchors share a start, parameter interpolation at λ (``param_interp``). All are rolled
out from the same reset seeds (paired), on two disjoint episode sets.

**The rule** (:func:`choose`). On the *choosing* set, take each candidate's per-episode difference to
the surrogate, episode by episode. Keep the surrogate unless some candidate is ahead of it with the
95% Student-t interval of that mean difference entirely above zero; then deploy, among the candidates
so ahead, the one with the best mean return on the choosing set. The estimate reported for the choice
(and for every other candidate, for the figure and the report) comes from the *estimating* set, which
made no choice, so selection does not bias it upwards.

**Between grid points** (:meth:`Calibration.deployed_at`): at a grid weight, its choice; strictly
between two neighbouring grid weights, the candidate chosen at both when they agree, else the
surrogate; outside the grid (extrapolation), the surrogate. An anchor is therefore only deployed on
stretches where it was measured ahead at both ends.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from hti_rl.errors import FileFormatError
from hti_rl.evaluate import ComponentReturns, mean_ci, returns_at

FORMAT = "hti-rl-calibration"
VERSION = 1
CONFIDENCE = 0.95
SURROGATE = "surrogate"
PARAM_INTERP = "param_interp"
# Bounds checked before a stored calibration's arrays are built.
MAX_GRID = 10_000
MAX_EPISODES = 100_000
MAX_ANCHORS = 1_000
MAX_COMPONENTS = 100
RULE = ("keep the surrogate unless another candidate is ahead of it on the choosing episodes with the paired 95% CI of "
        "the difference above zero; then take, of those, the one with the best mean; estimates come from the other episodes")
FIX = "Re-run `hti-rl calibrate <spec> --force`, or load the surrogate with calibrated=False (`hti-rl deploy --plain`)."


def weight_text(weight: Any) -> str:
    """``f"{w:g}"``, or a weight vector's ``0.3,3``."""
    return ",".join(f"{float(v):g}" for v in weight) if isinstance(weight, (tuple, list)) else f"{weight:g}"


def weight_key(weight: Any) -> Any:
    """A weight as calibrations hold it: a float, or a tuple of floats (a weight vector, JSON's list)."""
    return tuple(float(v) for v in weight) if isinstance(weight, (tuple, list)) else float(weight)


def weight_json(weight: Any) -> Any:
    """A weight as JSON writes it: a number, or a list of numbers."""
    return list(weight) if isinstance(weight, tuple) else weight


def anchor_name(weight: Any) -> str:
    """The candidate name of the anchor at ``weight``: ``anchor:<w>`` (``f"{w:g}"``; a vector: ``anchor:0.1,10``)."""
    return f"anchor:{weight_text(weight)}"


def choose(returns: Mapping[str, np.ndarray], default: str = SURROGATE) -> tuple[str, str, dict[str, tuple[float, float]]]:
    """The rule: ``returns`` on the choosing episodes -> (chosen candidate, why, paired differences).

    :param returns: candidate -> per-episode returns ``[E]``, all on the same reset seeds.
    :param default: the candidate kept unless another is measurably ahead of it.
    :return: the chosen name, a sentence saying why, and ``{candidate: (mean, ci)}`` of its per-episode
        difference to ``default`` (95% Student-t).
    """
    base = np.asarray(returns[default], dtype=np.float64)
    diffs = {name: mean_ci(np.asarray(r, dtype=np.float64) - base, CONFIDENCE) for name, r in returns.items() if name != default}
    ahead = [name for name, (m, ci) in diffs.items() if m - ci > 0]
    if not ahead:
        return default, f"no candidate is ahead of the {default} with the paired 95% CI above zero", diffs
    best = max(ahead, key=lambda name: float(np.mean(returns[name])))
    m, ci = diffs[best]
    others = f" ({len(ahead) - 1} other(s) also ahead, with lower means)" if len(ahead) > 1 else ""
    return best, f"ahead of the {default} by {m:.4g} ± {ci:.3g} per episode (paired 95% CI above zero){others}", diffs


def state_digest(obj: Any) -> str:
    """A SHA-256 (16 hex) of nested dicts/lists of tensors, arrays, numbers and strings: the identity of a
    policy's parameters, independent of how a file lays them out."""
    h = hashlib.sha256()

    def visit(x: Any) -> None:
        if isinstance(x, Mapping):
            for key in sorted(x, key=str):
                h.update(f"k{key}".encode())
                visit(x[key])
        elif isinstance(x, (list, tuple)):
            h.update(f"l{len(x)}".encode())
            for item in x:
                visit(item)
        elif isinstance(x, torch.Tensor):
            array = x.detach().cpu().contiguous().numpy()
            h.update(f"t{array.dtype}{array.shape}".encode())
            h.update(array.tobytes())
        else:
            h.update(f"v{x!r}".encode())

    visit(obj)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Point:
    """One grid weight: the choice and every candidate's statistics.

    :param weight: the grid weight (a tuple: a weight vector).
    :param chosen: the deployed candidate.
    :param reason: why (from :func:`choose`).
    :param choosing: candidate -> (mean, ci) of its return on the choosing episodes.
    :param versus: candidate -> (mean, ci) of its paired difference to the surrogate there.
    :param estimate: candidate -> (mean, ci) of its return on the estimating episodes.
    """

    weight: Any
    chosen: str
    reason: str
    choosing: dict[str, tuple[float, float]]
    versus: dict[str, tuple[float, float]]
    estimate: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Deployment:
    """What a surrogate deploys at one weight, and what is known of it (:meth:`SurrogatePolicy.deployment`).

    :param weight: the weight.
    :param candidate: ``surrogate``, ``anchor:<w>`` or ``param_interp``.
    :param why: the rule that picked it there.
    :param estimate: (mean, ci) of its return at the weight on the estimating episodes, or ``None`` where
        it was not measured (the surrogate or parameter interpolation between grid points; no calibration).
    :param anchors: each anchor's (mean, ci) at the weight, re-weighed from its estimating rollouts.
    :param episodes: episodes behind each estimate.
    :param calibrated: whether a calibration decided (false: the plain surrogate, as before calibrating).
    """

    weight: Any
    candidate: str
    why: str
    estimate: tuple[float, float] | None = None
    anchors: dict[str, tuple[float, float]] = field(default_factory=dict)
    episodes: int = 0
    calibrated: bool = True

    def lines(self) -> list[str]:
        """The deployment in words, one fact per line."""
        head = f"deployed at weight {weight_text(self.weight)}: {self.candidate} ({self.why})"
        if not self.calibrated:
            return [head]
        est = (f"estimated return {self.estimate[0]:.4g} ± {self.estimate[1]:.3g} (95% CI, {self.episodes} episodes not used to choose)"
               if self.estimate else "estimated return: not measured at this weight (see the neighbouring grid weights)")
        return [head, est, "each anchor at this weight (the estimating episodes, re-weighed):"] + [
            f"  {name}: {m:.4g} ± {ci:.3g}" for name, (m, ci) in self.anchors.items()]


@dataclass(frozen=True)
class Calibration:
    """A surrogate's calibration; stored inside its file (:class:`~hti_rl.methods.surrogate.SurrogatePolicy`).

    :param task: task name.
    :param task_fingerprint: the spec's fingerprint.
    :param anchors: anchor weights ``[K]`` (weight vectors on a grid task, with one scale per axis; the
        grid of points is then the product of per-axis grids).
    :param weight_scale: ``linear`` or ``log``.
    :param held_out: the spec's held-out weights (marked on the figure).
    :param surrogate: :func:`state_digest` of the calibrated surrogate's parameters.
    :param seed: the calibration's seed; ``choose_seed``/``estimate_seed`` the two sets' base reset seeds.
    :param episodes: episodes per set.
    :param per_interval: grid points inside each anchor interval.
    :param points: one :class:`Point` per grid weight, sorted.
    :param components: reward component names; ``weighted`` carries λ, ``fixed`` weighs the others.
    :param anchor_sums: ``[K, E, n_components]`` each anchor's per-episode component sums on the
        estimating set (an anchor's return at any weight follows from them).
    :param cost: ``{"episodes", "steps", "seconds"}`` of all the rollouts behind it.
    """

    task: str
    task_fingerprint: str
    anchors: tuple[Any, ...]
    weight_scale: Any
    held_out: tuple[Any, ...]
    surrogate: str
    seed: int
    choose_seed: int
    estimate_seed: int
    episodes: int
    per_interval: int
    points: tuple[Point, ...]
    components: tuple[str, ...]
    weighted: Any
    fixed: dict[str, float]
    anchor_sums: np.ndarray
    cost: dict[str, float]

    @property
    def grid(self) -> tuple[float, ...]:
        return tuple(p.weight for p in self.points)

    def reset_seeds(self) -> tuple[range, range]:
        """The reset seeds of the choosing and estimating episodes."""
        return range(self.choose_seed, self.choose_seed + self.episodes), range(self.estimate_seed, self.estimate_seed + self.episodes)

    def anchor_estimates(self, weight: float) -> dict[str, tuple[float, float]]:
        """Each anchor's (mean, ci) at ``weight``, re-weighed from its estimating rollouts."""
        lengths = np.zeros(self.episodes, dtype=np.int64)
        return {anchor_name(a): mean_ci(returns_at(ComponentReturns(self.components, self.anchor_sums[i], lengths), self.weighted,
                                                   self.fixed, weight), CONFIDENCE) for i, a in enumerate(self.anchors)}

    def deployed_at(self, weight: Any) -> tuple[str, str, Point | None]:
        """(candidate, why, the grid point measured at ``weight`` or None) under the rule between grid points."""
        if isinstance(weight, tuple):
            return self._deployed_at_vector(weight)
        grid = np.array(self.grid)
        near = np.flatnonzero(np.isclose(grid, weight, rtol=1e-9, atol=0.0))
        if near.size:
            point = self.points[int(near[0])]
            return point.chosen, f"chosen at this grid weight: {point.reason}", point
        j = int(np.searchsorted(grid, weight))
        if j == 0 or j == len(grid):
            return SURROGATE, f"outside the calibrated grid [{grid[0]:g}, {grid[-1]:g}]: the plain surrogate", None
        left, right = self.points[j - 1], self.points[j]
        if left.chosen == right.chosen:
            return left.chosen, f"chosen at both neighbouring grid weights {left.weight:.4g} and {right.weight:.4g}", None
        return SURROGATE, (f"between grid weights {left.weight:.4g} ({left.chosen}) and {right.weight:.4g} ({right.chosen}), "
                           "which chose differently: the surrogate"), None

    def _deployed_at_vector(self, weight: tuple[float, ...]) -> tuple[str, str, Point | None]:
        """:meth:`deployed_at` on a product grid of vectors: a grid vector's choice; inside a cell of the grid, the
        candidate chosen at every corner of the cell when they agree, else the surrogate."""
        by_weight = {p.weight: p for p in self.points}
        corners_each = []
        for i, w in enumerate(weight):
            values = sorted({p.weight[i] for p in self.points})
            j = bisect.bisect_left(values, w)
            if j < len(values) and math.isclose(values[j], w, rel_tol=1e-9, abs_tol=0.0):
                corners_each.append([values[j]])
            elif j == 0 or j == len(values):
                return SURROGATE, f"outside the calibrated grid on axis {i} [{values[0]:g}, {values[-1]:g}]: the plain surrogate", None
            else:
                corners_each.append([values[j - 1], values[j]])
        corners = [by_weight.get(c) for c in itertools.product(*corners_each)]
        if len(corners) == 1 and corners[0] is not None:
            return corners[0].chosen, f"chosen at this grid weight: {corners[0].reason}", corners[0]
        if any(c is None for c in corners):
            return SURROGATE, "between grid weights not all measured: the surrogate", None
        chosen = {c.chosen for c in corners}
        shown = ", ".join(weight_text(c.weight) for c in corners)
        if len(chosen) == 1:
            return corners[0].chosen, f"chosen at every corner of the grid cell around it ({shown})", None
        return SURROGATE, f"between grid weights {shown}, which chose differently: the surrogate", None

    def deployment(self, weight: Any) -> Deployment:
        """What is deployed at ``weight``, its estimate and every anchor's there."""
        candidate, why, point = self.deployed_at(weight)
        anchors = self.anchor_estimates(weight)
        estimate = point.estimate.get(candidate) if point is not None else anchors.get(candidate)
        return Deployment(weight_key(weight), candidate, why, estimate, anchors, self.episodes)

    def matches(self, task_fingerprint: str | None, anchors: Sequence[float], surrogate: str) -> str | None:
        """Why this calibration does not belong to a surrogate of that spec, anchors and parameters (None: it does)."""
        if task_fingerprint is not None and task_fingerprint != self.task_fingerprint:
            return f"it was made for another spec of task {self.task!r} (fingerprint {self.task_fingerprint}, the surrogate's is {task_fingerprint})"
        if tuple(weight_key(a) for a in anchors) != self.anchors:
            return f"it was made for anchors {list(self.anchors)}, the surrogate has {list(anchors)}"
        if surrogate != self.surrogate:
            return f"it was made for another surrogate (parameters {self.surrogate}, this one's are {surrogate}), e.g. before a refit"
        return None

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "rule": RULE, "confidence": CONFIDENCE,
            "task": self.task, "task_fingerprint": self.task_fingerprint, "anchors": [weight_json(a) for a in self.anchors],
            "weight_scale": weight_json(self.weight_scale), "held_out": [weight_json(w) for w in self.held_out], "surrogate": self.surrogate,
            "seed": self.seed, "choose_seed": self.choose_seed, "estimate_seed": self.estimate_seed,
            "episodes": self.episodes, "per_interval": self.per_interval, "cost": dict(self.cost),
            "points": [{"weight": weight_json(p.weight), "chosen": p.chosen, "reason": p.reason, "choosing": _pairs(p.choosing),
                        "versus": _pairs(p.versus), "estimate": _pairs(p.estimate)} for p in self.points],
            "components": list(self.components), "weighted": weight_json(self.weighted), "fixed": dict(self.fixed),
            "anchor_sums": self.anchor_sums.tolist(),
        }

    @classmethod
    def from_json(cls, raw: Any, where: str = "the surrogate file") -> "Calibration":
        """Read :meth:`to_json`, every field checked and every size bounded before arrays are built.

        :raises FileFormatError: another format or version, a missing or mangled field, inconsistent sizes.
        """
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise FileFormatError(f"{where} holds no hti-rl calibration (format {raw.get('format') if isinstance(raw, dict) else raw!r}). {FIX}")
        if raw.get("version") != VERSION:
            raise FileFormatError(f"{where} holds a calibration of version {raw.get('version')!r}; this hti-rl reads version {VERSION}. {FIX}")
        try:
            return _read(cls, raw)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise FileFormatError(f"{where}: the calibration is damaged ({type(exc).__name__}: {exc}). {FIX}") from None


def _pairs(stats: Mapping[str, tuple[float, float]]) -> dict[str, list[float]]:
    return {name: [float(m), float(ci)] for name, (m, ci) in stats.items()}


def _stats(raw: Any, names: set[str]) -> dict[str, tuple[float, float]]:
    if not isinstance(raw, dict) or len(raw) > MAX_ANCHORS + 2 or not set(raw) <= names:
        raise ValueError(f"candidate statistics {sorted(raw) if isinstance(raw, dict) else raw!r} name unknown candidates")
    out = {}
    for name, pair in raw.items():
        m, ci = (float(v) for v in pair)
        if not (math.isfinite(m) and math.isfinite(ci) and ci >= 0):
            raise ValueError(f"{name}: non-finite statistics {pair}")
        out[str(name)] = (m, ci)
    return out


def _read(cls: type[Calibration], raw: dict[str, Any]) -> Calibration:
    anchors = tuple(weight_key(a) for a in raw["anchors"][:MAX_ANCHORS + 1])
    episodes, points_raw = int(raw["episodes"]), raw["points"]
    components = tuple(str(c) for c in raw["components"][:MAX_COMPONENTS + 1])
    if not (2 <= len(anchors) <= MAX_ANCHORS and 1 <= episodes <= MAX_EPISODES and 1 <= len(points_raw) <= MAX_GRID
            and 1 <= len(components) <= MAX_COMPONENTS):
        raise ValueError(f"sizes out of range: {len(anchors)} anchors, {episodes} episodes, {len(points_raw)} grid weights")
    names = {SURROGATE, PARAM_INTERP, *(anchor_name(a) for a in anchors)}
    points = []
    for p in points_raw:
        chosen = str(p["chosen"])
        estimate = _stats(p["estimate"], names)
        if chosen not in estimate:
            raise ValueError(f"the choice {chosen!r} at weight {p['weight']} has no estimate")
        points.append(Point(weight_key(p["weight"]), chosen, str(p["reason"]), _stats(p["choosing"], names), _stats(p["versus"], names), estimate))
    if any(b.weight <= a.weight for a, b in zip(points, points[1:])):
        raise ValueError("grid weights are not strictly increasing")
    sums_raw = raw["anchor_sums"]
    if len(sums_raw) != len(anchors) or any(len(e) != episodes or any(len(c) != len(components) for c in e) for e in sums_raw):
        raise ValueError(f"anchor_sums is not [{len(anchors)}, {episodes}, {len(components)}]")
    sums = np.asarray(sums_raw, dtype=np.float64)
    weighted = tuple(map(str, raw["weighted"])) if isinstance(raw["weighted"], list) else str(raw["weighted"])
    if not np.all(np.isfinite(sums)) or not set((weighted,) if isinstance(weighted, str) else weighted) <= set(components):
        raise ValueError("anchor_sums holds non-finite values, or the weighted component is not among the components")
    return cls(
        task=str(raw["task"]), task_fingerprint=str(raw["task_fingerprint"]), anchors=anchors,
        weight_scale=tuple(map(str, raw["weight_scale"])) if isinstance(raw["weight_scale"], list) else str(raw["weight_scale"]),
        held_out=tuple(weight_key(w) for w in raw["held_out"][:MAX_GRID]), surrogate=str(raw["surrogate"]), seed=int(raw["seed"]),
        choose_seed=int(raw["choose_seed"]), estimate_seed=int(raw["estimate_seed"]), episodes=episodes,
        per_interval=int(raw["per_interval"]), points=tuple(points), components=components, weighted=weighted,
        fixed={str(k): float(v) for k, v in dict(raw["fixed"]).items()}, anchor_sums=sums,
        cost={str(k): float(v) for k, v in dict(raw["cost"]).items()},
    )
