"""``hti-rl calibrate``: measure every candidate on a grid of weights and store the choices in the surrogate.

At each grid weight (``spec.axis.grid(per_interval, include=spec.held_out)``: every anchor, the held-out
weights and ``per_interval`` points inside each anchor interval) the candidates are every anchor, the
surrogate at that weight and, where the anchors share a start, parameter interpolation. Each candidate
runs the same two disjoint episode sets (:func:`hti_rl.seeds.calibration_seeds`), deterministic actions:
the *choosing* set decides (:func:`hti_rl.methods.calibration.choose`), the *estimating* set gives the
reported returns. An anchor is rolled out once per set and re-weighed at every grid weight (evaluate
once, weigh many); at an anchor weight the surrogate and parameter interpolation *are* that anchor and
are not rolled out again.

Resumable: the anchors' rollouts (``calibration/<name>/anchors.json``) and each grid weight's returns
(``w=<λ>.json``) are written atomically as they finish, keyed by the surrogate's parameters, the spec,
the episodes and the seeds; a rerun reuses every file whose key matches (``force`` recomputes them).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from hti_rl.errors import AnchorError, FileFormatError, HTIError
from hti_rl.evaluate import ComponentReturns, mean_ci, returns_at, rollout_components
from hti_rl.io import write_json
from hti_rl.methods.baselines import ParameterInterpolation, check_shared_start
from hti_rl.methods.calibration import (
    CONFIDENCE,
    PARAM_INTERP,
    RULE,
    SURROGATE,
    Calibration,
    Point,
    anchor_name,
    choose,
    weight_json,
    weight_key,
    weight_text,
)
from hti_rl.methods.surrogate import SurrogatePolicy
from hti_rl.runs import RunDir, spec_hint
from hti_rl.seeds import calibration_seeds
from hti_rl.spec.task import TaskSpec

DEFAULT_PER_INTERVAL = 3
DEFAULT_EPISODES = 30
MAX_PER_INTERVAL = 100
MAX_EPISODES = 1_000  # rollout_components builds one env per episode at once
POINT_FORMAT = "hti-rl-calibration-rollouts"


@dataclass
class Cost:
    """What one calibration run rolled out: episodes, environment steps, wall seconds, grid weights reused."""

    episodes: int = 0
    steps: int = 0
    seconds: float = 0.0
    reused: int = 0

    def add(self, rolls: ComponentReturns) -> None:
        self.episodes += len(rolls.lengths)
        self.steps += int(rolls.lengths.sum())


def check_settings(per_interval: Any, episodes: Any) -> None:
    """Refuse grid and episode settings before anything is loaded or allocated.

    :raises HTIError: ``per_interval`` outside [1, 100] or ``episodes`` outside [2, 1000], with the fix.
    """
    if not isinstance(episodes, (int, np.integer)) or not 2 <= episodes <= MAX_EPISODES:
        raise HTIError(f"episodes per set must be a whole number from 2 to {MAX_EPISODES} (a CI needs two), got {episodes!r}; "
                       f"pass e.g. --episodes {DEFAULT_EPISODES}.")
    if not isinstance(per_interval, (int, np.integer)) or not 1 <= per_interval <= MAX_PER_INTERVAL:
        raise HTIError(f"grid points per anchor interval must be a whole number from 1 to {MAX_PER_INTERVAL}, got {per_interval!r}; "
                       f"pass e.g. --per-interval {DEFAULT_PER_INTERVAL}.")


def calibrate(spec: TaskSpec, run_root: str | Path = "runs", per_interval: int = DEFAULT_PER_INTERVAL, episodes: int = DEFAULT_EPISODES,
              seed: int | None = None, force: bool = False, progress: bool = True) -> tuple[Calibration, Cost]:
    """Calibrate ``runs/<task>/surrogate.zip`` and write it back with the calibration inside, plus the figure
    ``runs/<task>/calibration/surrogate/calibration.png`` and TensorBoard ``runs/<task>/tb/calibrate``.

    :param spec: the task (its surrogate must be fitted: ``hti-rl fit``).
    :param run_root: root of the run directories.
    :param per_interval: grid points inside each anchor interval (besides anchors and held-out weights).
    :param episodes: episodes per set (choosing and estimating), per candidate.
    :param seed: the calibration's seed (default: the spec's).
    :param force: roll everything out again instead of reusing finished grid weights.
    :param progress: show a progress bar.
    :return: the calibration and what this run cost.
    :raises HTIError: bad settings, no surrogate, or a surrogate of another spec.
    """
    from hti_rl.deploy.figure import write_figure

    check_settings(per_interval, episodes)
    run = RunDir.of(spec, run_root)
    if spec.is_vector:  # a grid surrogate (docs/method.md §12): the same rule on a product grid of vectors
        from hti_rl.methods.base import AnchoredPolicy
        from hti_rl.methods.grid_surrogate import GridSurrogatePolicy

        policy = AnchoredPolicy.load(run.surrogate, expect_fingerprint=spec.fingerprint(), calibrated=False)
        if not isinstance(policy, GridSurrogatePolicy):
            raise FileFormatError(f"{run.surrogate} holds a {type(policy).__name__}, not a grid surrogate; refit: `hti-rl fit {spec_hint(spec)} --force`.")
    else:
        policy = SurrogatePolicy.load(run.surrogate, expect_fingerprint=spec.fingerprint(), calibrated=False)
    calibration, cost = calibrate_policy(policy, spec, run, "surrogate", per_interval, episodes, seed, force, progress)
    policy.attach_calibration(calibration)
    policy.save(run.surrogate)
    if spec.grid.dim <= 2:  # the figure draws one weight axis, or two as heat maps
        write_figure(calibration, run.calibration() / "calibration.png")
    return calibration, cost


def calibration_grid(spec: TaskSpec, per_interval: int) -> tuple[Any, ...]:
    """The calibration's weights: ``spec.axis.grid(per_interval, include=held_out)``; on a grid task the product
    of every axis's grid with the held-out vectors' entries on that axis included (so it stays a product)."""
    if not spec.is_vector:
        return spec.axis.grid(per_interval, include=spec.held_out)
    axes = [axis.grid(per_interval, include=[h[i] for h in spec.held_out]) for i, axis in enumerate(spec.grid.axes)]
    return tuple(itertools.product(*axes))


def calibrate_policy(policy: SurrogatePolicy, spec: TaskSpec, run: RunDir, name: str = "surrogate",
                     per_interval: int = DEFAULT_PER_INTERVAL, episodes: int = DEFAULT_EPISODES, seed: int | None = None,
                     force: bool = False, progress: bool = True) -> tuple[Calibration, Cost]:
    """Measure ``policy``'s candidates on the grid and apply the rule (the policy itself is left uncalibrated).

    :param policy: a fitted surrogate of ``spec``.
    :param run: the task's run directory; files go to ``run.calibration(name)``, TensorBoard to ``run.tb("calibrate")``.
    :param name: which surrogate this is (``surrogate``, or a compare method's name).
    :return: (calibration, this run's cost).
    """
    check_settings(per_interval, episodes)
    if policy.header.get("task_fingerprint") != spec.fingerprint() or tuple(policy.weights) != tuple(spec.anchors):
        raise FileFormatError(f"this surrogate was fitted for another spec or other anchors ({policy.weights}) than {spec_hint(spec)} "
                              f"({list(spec.anchors)}); calibrate it with its own spec, or refit: `hti-rl fit {spec_hint(spec)} --force`.")
    seed = spec.seed if seed is None else int(seed)
    grid = calibration_grid(spec, per_interval)
    seeds = calibration_seeds(seed, episodes)
    key = {"surrogate": policy.digest(), "task_fingerprint": spec.fingerprint(), "episodes": episodes, "seeds": list(seeds)}
    rollouts = _Rollouts(spec, key, seeds, episodes, force)
    started = time.perf_counter()
    was = policy.use_calibration
    policy.use_calibration = False
    try:
        anchors = _anchor_rollouts(rollouts, policy, run.calibration(name) / "anchors.json")
        interp = _param_interp(policy)
        movers = {SURROGATE: policy, **({PARAM_INTERP: interp} if interp is not None else {})}
        points = [_decide(w, _returns_at(rollouts, policy.weights, movers, anchors, run.calibration_point(w, name), w))
                  for w in tqdm(grid, desc="calibrate", disable=not progress)]
    finally:
        policy.use_calibration = was
    rollouts.cost.seconds = time.perf_counter() - started
    total = rollouts.total
    calibration = Calibration(
        task=spec.name, task_fingerprint=spec.fingerprint(), anchors=tuple(policy.weights), weight_scale=spec.weight_scale,
        held_out=tuple(spec.held_out), surrogate=key["surrogate"], seed=seed, choose_seed=seeds[0], estimate_seed=seeds[1],
        episodes=episodes, per_interval=per_interval, points=tuple(points), components=anchors["components"],
        weighted=spec.reward.weighted, fixed=dict(spec.reward.fixed), anchor_sums=anchors["sums"][1],
        cost={"episodes": total.episodes, "steps": total.steps, "seconds": round(total.seconds, 2)},
    )
    log_tensorboard(calibration, run.tb("calibrate"))
    return calibration, rollouts.cost


@dataclass
class _Rollouts:
    """One calibration's rollouts: both episode sets of a policy, and the files that keep them, under one key.

    :param cost: what this run rolled out; ``total``: what every file used cost when it was written.
    """

    spec: TaskSpec
    key: dict[str, Any]
    seeds: tuple[int, int]
    episodes: int
    force: bool
    cost: Cost = field(default_factory=Cost)
    total: Cost = field(default_factory=Cost)

    def both_sets(self, policy: Any) -> list[ComponentReturns]:
        """Deterministic rollouts of ``policy`` on the choosing and the estimating set."""
        out = []
        for seed in self.seeds:
            rolls = rollout_components(policy, lambda: self.spec.make_env(self.spec.anchors[0]), self.episodes, seed, deterministic=True)
            self.cost.add(rolls)
            out.append(rolls)
        return out

    def read(self, path: Path, fits: Callable[[dict[str, Any]], bool] = lambda raw: True) -> dict[str, Any] | None:
        """A finished file of this calibration (same key, and ``fits``), or None: missing, forced, stale or unreadable."""
        if self.force or not path.exists():
            return None
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not (isinstance(raw, dict) and raw.get("format") == POINT_FORMAT and raw.get("key") == self.key and fits(raw)):
            return None
        self.cost.reused += "weight" in raw
        self._count(raw["cost"])
        return raw

    def write(self, path: Path, content: dict[str, Any], started: float, before: Cost) -> dict[str, Any]:
        """Write ``content`` with the key and what it cost since ``started``/``before``, atomically."""
        cost = {"episodes": self.cost.episodes - before.episodes, "steps": self.cost.steps - before.steps,
                "seconds": round(time.perf_counter() - started, 3)}
        raw = {"format": POINT_FORMAT, "key": self.key, **content, "cost": cost}
        write_json(path, raw)
        self._count(cost)
        return raw

    def mark(self) -> tuple[float, Cost]:
        return time.perf_counter(), Cost(self.cost.episodes, self.cost.steps)

    def _count(self, cost: dict[str, Any]) -> None:
        self.total.episodes += int(cost["episodes"])
        self.total.steps += int(cost["steps"])
        self.total.seconds += float(cost["seconds"])


def _anchor_rollouts(rollouts: _Rollouts, policy: SurrogatePolicy, path: Path) -> dict[str, Any]:
    """Each anchor's component sums on both sets: ``{"components", "sums": [2, K, E, n_components]}``."""
    raw = rollouts.read(path)
    if raw is None:
        started, before = rollouts.mark()
        per_anchor = [rollouts.both_sets(actor) for actor in policy.actors]
        raw = rollouts.write(path, {"components": list(per_anchor[0][0].names),
                                    "sums": [[sets[i].sums.tolist() for sets in per_anchor] for i in range(2)]}, started, before)
    return {"components": tuple(raw["components"]), "sums": np.asarray(raw["sums"], dtype=np.float64)}


def _param_interp(policy: SurrogatePolicy) -> ParameterInterpolation | None:
    """Parameter interpolation of the surrogate's anchors when they share a start (else not a candidate)."""
    try:
        check_shared_start(policy.actors)
    except AnchorError:
        return None
    return ParameterInterpolation(policy.observation_space, policy.action_space, list(policy.actors), policy.weights, policy.weight_scale,
                                  policy.x_mean.numpy(), policy.x_std.numpy(), header=dict(policy.header))


def _returns_at(rollouts: _Rollouts, anchor_weights: list[float], movers: dict[str, Any], anchors: dict[str, Any], path: Path,
                weight: float) -> dict[str, list[np.ndarray]]:
    """Every candidate's per-episode returns at ``weight``: ``{candidate: [choosing [E], estimating [E]]}``.

    :param movers: the candidates that change with the weight (the surrogate, parameter interpolation).
    """
    spec = rollouts.spec
    weigh = lambda rolls: returns_at(rolls, spec.reward.weighted, spec.reward.fixed, weight)  # noqa: E731
    lengths = np.zeros(rollouts.episodes, dtype=np.int64)
    returns = {anchor_name(a): [weigh(ComponentReturns(anchors["components"], anchors["sums"][i][k], lengths)) for i in range(2)]
               for k, a in enumerate(anchor_weights)}
    at_anchor = next((anchor_name(a) for a in anchor_weights if np.allclose(a, weight, rtol=1e-12, atol=0.0)), None)
    if at_anchor is not None:  # the surrogate and parameter interpolation are that anchor's own actor there
        return {**returns, **{name: returns[at_anchor] for name in movers}}
    raw = rollouts.read(path, lambda raw: raw.get("weight") == weight_json(weight) and set(raw.get("returns", {})) == set(movers))
    if raw is None:
        started, before = rollouts.mark()
        measured = {}
        for name, mover in movers.items():
            mover.set_weight(weight)
            measured[name] = [weigh(rolls).tolist() for rolls in rollouts.both_sets(mover)]
        raw = rollouts.write(path, {"weight": weight_json(weight), "returns": measured}, started, before)
    return {**returns, **{name: [np.asarray(r, dtype=np.float64) for r in raw["returns"][name]] for name in movers}}


def _decide(weight: float, returns: dict[str, list[np.ndarray]]) -> Point:
    """The rule at one grid weight: choose on the first set, estimate every candidate on the second."""
    chosen, reason, versus = choose({name: r[0] for name, r in returns.items()})
    return Point(weight_key(weight), chosen, reason, choosing={n: mean_ci(r[0], CONFIDENCE) for n, r in returns.items()}, versus=versus,
                 estimate={n: mean_ci(r[1], CONFIDENCE) for n, r in returns.items()})


def log_tensorboard(calibration: Calibration, log_dir: Path) -> None:
    """The estimated return of every candidate and of the deployed choice against the grid weight's index
    (scalar ``weight`` gives the weight), the rule, and the figure."""
    from torch.utils.tensorboard import SummaryWriter

    from hti_rl.deploy.figure import calibration_figure

    writer = SummaryWriter(str(log_dir))
    vectors = isinstance(calibration.points[0].weight, tuple)
    for i, point in enumerate(calibration.points):
        for axis, value in enumerate(point.weight if vectors else (point.weight,)):
            writer.add_scalar(f"weight{axis}" if vectors else "weight", value, i)
        for name, (mean, _) in point.estimate.items():
            writer.add_scalar(f"estimate/{name}", mean, i)
        writer.add_scalar("estimate/deployed", point.estimate[point.chosen][0], i)
    writer.add_text("rule", RULE)
    if not vectors:
        writer.add_figure("calibration", calibration_figure(calibration), close=True)
    writer.close()


def summary(calibration: Calibration, cost: Cost) -> list[str]:
    """What was calibrated, the choice and estimates at each grid weight, and the cost, for the terminal."""
    lines = [f"calibrated {calibration.task}: {len(calibration.points)} grid weights ({calibration.per_interval} per anchor interval, "
             f"the anchors, the held-out weights); {calibration.episodes} choosing + {calibration.episodes} estimating episodes per candidate",
             f"rule: {RULE}"]
    for p in calibration.points:
        anchors = {n: s for n, s in p.estimate.items() if n.startswith("anchor:")}
        best = max(anchors, key=lambda n: anchors[n][0])
        m, ci = p.estimate[p.chosen]
        surrogate = p.estimate[SURROGATE]
        shown = weight_text(p.weight) if isinstance(p.weight, tuple) else f"{p.weight:<8.4g}"
        lines.append(f"  λ={shown} deployed {p.chosen:<14} {m:.4g} ± {ci:.3g}   best anchor {best} {anchors[best][0]:.4g} ± "
                     f"{anchors[best][1]:.3g}   surrogate {surrogate[0]:.4g} ± {surrogate[1]:.3g}")
    c = calibration.cost
    lines.append(f"cost: this run {cost.episodes} episodes ({cost.steps} env steps) in {cost.seconds:.1f} s, {cost.reused} grid weights reused; "
                 f"all rollouts behind it {int(c['episodes'])} episodes ({int(c['steps'])} env steps), {c['seconds']:.1f} s")
    return lines
