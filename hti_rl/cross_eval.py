"""CrossEval: every anchor evaluated at every anchor weight from one rollout set per anchor (evaluate
once, weigh many), saved as ``runs/<task>/anchors/cross_eval.json`` with a hash of every anchor's
``meta.json``, so that a changed anchor makes it stale. The checks that read it live in :mod:`hti_rl.quality`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.errors import FileFormatError
from hti_rl.evaluate import (
    ComponentReturns,
    format_mean_ci,
    mean_ci,
    returns_at,
    rollout_components,
)
from hti_rl.io import sha256_bytes, write_json
from hti_rl.runs import DEFAULT_ROOT, RunDir, weight_label
from hti_rl.seeds import cross_eval_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.store import load_anchor_actor

FORMAT = "hti-rl-cross-eval"
FORMAT_VERSION = 1
MIN_EPISODES = 10  # episodes per anchor, at least
CONFIDENCE = 0.95



def anchor_hashes(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT) -> dict[str, str | None]:
    """``{"w=<λ>": SHA-256 (16 hex) of its meta.json, or None when missing}`` for every anchor weight."""
    hashes = {}
    for weight in spec.anchors:
        meta = RunDir.of(spec, run_root).anchor(weight) / "meta.json"
        hashes[f"w={weight_text(weight)}"] = sha256_bytes(meta.read_bytes())[:16] if meta.exists() else None
    return hashes


def weight_text(weight: Any) -> str:
    """A weight in messages and tables: ``f"{λ:g}"``, or a vector's ``0.1,10``."""
    return weight_label(weight) if isinstance(weight, tuple) else f"{weight:g}"


@dataclass(frozen=True)
class CrossEval:
    """Every anchor's rollouts, re-weighed at every anchor weight.

    :param task: task name.
    :param task_fingerprint: the spec's fingerprint when evaluated.
    :param weights: anchor weights ``[K]`` (anchor i was trained at ``weights[i]``).
    :param components: component names, the last axis of ``sums``.
    :param weighted: the component multiplied by λ (several, a tuple, on a grid task; ``weights`` are then vectors).
    :param fixed: fixed weights of the other components.
    :param sums: ``[K, E, n_components]`` per-episode unweighted component sums of anchor i.
    :param seed: base reset seed of the E episodes (the same for every anchor).
    :param anchors: ``{"w=<λ>": meta.json hash}`` of the anchors evaluated (see :func:`anchor_hashes`).
    :param monotone: whether the weighted component's sum must be non-decreasing in the anchor weight.
    """

    task: str
    task_fingerprint: str
    weights: tuple[Any, ...]
    components: tuple[str, ...]
    weighted: str | tuple[str, ...]
    fixed: dict[str, float]
    sums: np.ndarray
    seed: int
    anchors: dict[str, str | None]
    monotone: bool = True

    @property
    def episodes(self) -> int:
        return int(self.sums.shape[1])

    def returns(self, anchor: int, weight: float) -> np.ndarray:
        """Episode returns ``[E]`` of anchor ``anchor`` (an index) at reward weight ``weight``."""
        lengths = np.zeros(self.episodes, dtype=np.int64)  # returns_at does not read them
        return returns_at(ComponentReturns(self.components, self.sums[anchor], lengths), self.weighted, self.fixed, weight)

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [K, K], ci [K, K])``: row i = anchor i, column j = evaluated at ``weights[j]``."""
        stats = [[mean_ci(self.returns(i, w), CONFIDENCE) for w in self.weights] for i in range(len(self.weights))]
        array = np.array(stats)
        return array[..., 0], array[..., 1]

    def weighted_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [K], ci [K])`` of each anchor's per-episode sum of the unweighted weighted component (of all
        of them, added, on a grid task)."""
        names = (self.weighted,) if isinstance(self.weighted, str) else self.weighted
        total = self.sums[:, :, [self.components.index(n) for n in names]].sum(-1)
        array = np.array([mean_ci(total[i], CONFIDENCE) for i in range(len(self.weights))])
        return array[:, 0], array[:, 1]

    def beaten(self) -> list[tuple[int, int, float, float]]:
        """``(i, j, mean, ci)`` for every anchor j whose return at λ_i beats anchor i's own there: the
        per-episode difference j − i has mean ``mean`` and 95% CI ``± ci`` above zero."""
        found = []
        for i, own in enumerate(self.weights):
            for j in range(len(self.weights)):
                if j != i:
                    mean, ci = mean_ci(self.returns(j, own) - self.returns(i, own), CONFIDENCE)
                    if mean - ci > 0:
                        found.append((i, j, float(mean), float(ci)))
        return found

    @property
    def warnings(self) -> list[str]:
        """One message per failed check (naming the anchors and the numbers); empty when all pass."""
        mean, ci = self.matrix()
        found = [
            f"anchor w={weight_text(self.weights[i])} is beaten at its own weight λ={weight_text(self.weights[i])} by anchor "
            f"w={weight_text(self.weights[j])}: {format_mean_ci(mean[j, i], ci[j, i])} against its own {format_mean_ci(mean[i, i], ci[i, i])}; "
            f"episode by episode (same start states) it scores {format_mean_ci(diff, diff_ci)} more (95% CI over "
            f"{self.episodes} episodes)"
            for i, j, diff, diff_ci in self.beaten()
        ]
        if self.monotone:
            found += self._monotone_warnings()
        return found

    def _monotone_warnings(self) -> list[str]:
        """Each weighted component's per-episode sum must not fall as its own weight rises (the other entries
        of a weight vector equal)."""
        found = []
        names = (self.weighted,) if isinstance(self.weighted, str) else self.weighted
        for axis, name in enumerate(names):
            column = self.components.index(name)
            sums = self.sums[:, :, column]
            means = [mean_ci(sums[i], CONFIDENCE) for i in range(len(self.weights))]
            for i, low in enumerate(self.weights):
                for j in range(i + 1, len(self.weights)):
                    high = self.weights[j]
                    if isinstance(low, tuple) and not (all(a == b for k, (a, b) in enumerate(zip(low, high)) if k != axis)
                                                       and low[axis] < high[axis]):
                        continue
                    diff, diff_ci = mean_ci(sums[j] - sums[i], CONFIDENCE)
                    if diff + diff_ci < 0:
                        found.append(
                            f"the weighted component `{name}` is not monotone in the anchor weight: anchor "
                            f"w={weight_text(high)} sums {format_mean_ci(*means[j])} per episode, below anchor w={weight_text(low)}'s "
                            f"{format_mean_ci(*means[i])} (episode by episode {format_mean_ci(diff, diff_ci)}, 95% CI); an "
                            f"anchor trained at a higher weight should not have less of it (set "
                            f"monotone_weighted_component: false where this is expected)"
                        )
        return found

    # ------------------------------------------------------------------ file
    def to_json(self) -> dict[str, Any]:
        mean, ci = self.matrix()
        wmean, wci = self.weighted_sums()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "task_fingerprint": self.task_fingerprint,
            "weights": [list(w) if isinstance(w, tuple) else w for w in self.weights],
            "episodes": self.episodes,
            "seed": self.seed,
            "confidence": CONFIDENCE,
            "deterministic": True,
            "return_mean": mean.tolist(),
            "return_ci": ci.tolist(),
            "weighted": self.weighted if isinstance(self.weighted, str) else list(self.weighted),
            "weighted_sum_mean": wmean.tolist(),
            "weighted_sum_ci": wci.tolist(),
            "monotone_weighted_component": self.monotone,
            "warnings": self.warnings,
            "anchors": self.anchors,
            "components": list(self.components),
            "fixed": self.fixed,
            "sums": self.sums.tolist(),
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` atomically."""
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "CrossEval":
        """Read a ``cross_eval.json``.

        :raises FileFormatError: missing, not JSON, another format or version, or inconsistent arrays.
        """
        path = Path(path)
        fix = "run `hti-rl check-anchors <spec> --force` to write it again"
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FileFormatError(f"{path} cannot be read ({exc}); {fix}.") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise FileFormatError(f"{path} is not an hti-rl cross-evaluation of version {FORMAT_VERSION}; {fix}.")
        try:
            cross = cls(
                task=str(raw["task"]),
                task_fingerprint=str(raw["task_fingerprint"]),
                weights=tuple(tuple(float(v) for v in w) if isinstance(w, list) else float(w) for w in raw["weights"]),
                components=tuple(raw["components"]),
                weighted=tuple(map(str, raw["weighted"])) if isinstance(raw["weighted"], list) else str(raw["weighted"]),
                fixed={str(k): float(v) for k, v in raw["fixed"].items()},
                sums=np.asarray(raw["sums"], dtype=np.float64),
                seed=int(raw["seed"]),
                anchors=dict(raw["anchors"]),
                monotone=bool(raw["monotone_weighted_component"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FileFormatError(f"{path} misses or mangles field {exc}; {fix}.") from exc
        k, n = len(cross.weights), len(cross.components)
        if cross.sums.ndim != 3 or cross.sums.shape[0] != k or cross.sums.shape[2] != n or not set((cross.weighted,) if isinstance(cross.weighted, str) else cross.weighted) <= set(cross.components):
            raise FileFormatError(f"{path}: sums of shape {cross.sums.shape} do not fit {k} anchors and components {cross.components}; {fix}.")
        return cross


def cross_evaluate(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT, episodes: int | None = None, seed: int | None = None) -> CrossEval:
    """Roll out every anchor once and keep its per-episode component sums.

    :param spec: the task spec; all its anchors must be trained.
    :param run_root: root of the run directories.
    :param episodes: deterministic episodes per anchor; ``max(spec.eval_episodes, 10)`` when ``None``.
    :raises AnchorError: an anchor is missing or belongs to another version of the spec.
    """
    episodes = int(episodes or max(spec.eval_episodes, MIN_EPISODES))
    seed = cross_eval_seed(spec) if seed is None else int(seed)
    hashes = anchor_hashes(spec, run_root)
    sums, names = [], None
    for weight in spec.anchors:
        actor = load_anchor_actor(spec, weight, run_root)
        result = rollout_components(actor, lambda w=weight: spec.make_env(w), episodes, seed, deterministic=True)
        names = result.names
        sums.append(result.sums)
    return CrossEval(
        task=spec.name,
        task_fingerprint=spec.fingerprint(),
        weights=tuple(spec.anchors),
        components=tuple(names),
        weighted=spec.reward.weighted,
        fixed=dict(spec.reward.fixed),
        sums=np.stack(sums),
        seed=seed,
        anchors=hashes,
        monotone=spec.monotone_weighted_component,
    )


def stale_reason(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT) -> str | None:
    """Why ``cross_eval.json`` must be computed again (missing, unreadable, another spec or episode
    count, an anchor's ``meta.json`` changed since), or ``None`` when it is up to date."""
    path = RunDir.of(spec, run_root).cross_eval
    if not path.exists():
        return f"{path} does not exist"
    try:
        cross = CrossEval.load(path)
    except FileFormatError as exc:
        return str(exc)
    if cross.task_fingerprint != spec.fingerprint() or cross.weights != tuple(spec.anchors):
        return f"{path} was written for another version of task {spec.name!r}"
    if cross.episodes != max(spec.eval_episodes, MIN_EPISODES):
        return f"{path} has {cross.episodes} episodes per anchor, the spec asks for {max(spec.eval_episodes, MIN_EPISODES)}"
    changed = [w for w, h in anchor_hashes(spec, run_root).items() if cross.anchors.get(w) != h]
    if changed:
        return f"anchors {', '.join(changed)} changed after {path} was written"
    return None
