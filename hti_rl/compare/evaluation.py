"""Phase 4 of ``hti-rl compare``: every agent and method evaluated at the held-out weights.

Returns: deterministic rollouts over every evaluation seed, each policy rolled out once and its
unweighted component sums re-weighed at any weight (evaluate once, weigh many). Distances: per-state
W2 (POT) between each method's action samples and each retrained agent's, on a shared subset of the
dataset's states, beside the retrained seeds' own W2 to each other (the floor below which no method
can be judged), and on LQR to the exact optimum.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from hti_rl.compare.experiment import Experiment
from hti_rl.compare.fitting import Fitted, Trained
from hti_rl.compare.report import SHARED_REFERENCE
from hti_rl.envs.lqr import OptimalPolicy
from hti_rl.errors import HTIError
from hti_rl.evaluate import (
    ComponentReturns,
    Predictor,
    mean_ci,
    per_state_w2,
    returns_at,
    rollout_components,
)
from hti_rl.methods.calibration import anchor_name
from hti_rl.runs import RunDir
from hti_rl.seeds import eval_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.store import load_agent_actor


class RandomPolicy:
    """Uniform random actions in the Box (the bottom of the regret scale)."""

    def __init__(self, action_space: spaces.Box, seed: int):
        self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = False):
        obs = np.asarray(observation)
        shape = (obs.shape[0], *self.low.shape) if obs.ndim > 1 else self.low.shape
        return self.rng.uniform(self.low, self.high, size=shape).astype(np.float32), state


def rollouts(policy: Predictor, spec: TaskSpec, exp: Experiment) -> ComponentReturns:
    """Deterministic rollouts over every evaluation seed, ``eval_episodes`` each, concatenated."""
    make_env = lambda: spec.make_env(spec.anchors[0])  # noqa: E731  (returns are re-weighed afterwards)
    parts = [rollout_components(policy, make_env, exp.eval_episodes, eval_seed(spec, s)) for s in exp.eval_seeds]
    return ComponentReturns(parts[0].names, np.concatenate([p.sums for p in parts]), np.concatenate([p.lengths for p in parts]))


def action_samples(policy: Any, states: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """states [N, C] -> env-action samples [N, M, D] of ``policy`` (re-seeded, so repeatable)."""
    obs = np.repeat(states, samples, axis=0)
    if hasattr(policy, "generator") and isinstance(getattr(policy, "generator"), torch.Generator):
        policy.generator.manual_seed(seed)
    if hasattr(policy, "seed") and callable(policy.seed) and not hasattr(policy, "set_weight"):
        policy.seed(seed)
    actions, _ = policy.predict(obs, deterministic=False)
    return np.asarray(actions, dtype=np.float64).reshape(states.shape[0], samples, -1)


def gamma_of(spec: TaskSpec) -> float:
    """The discount the task's agents optimise (the algorithm's default 0.99 when unset)."""
    return float(spec.hyperparams()["algo_kwargs"].get("gamma", 0.99))


def is_lqr(spec: TaskSpec) -> bool:
    return "LQR" in spec.env_id


@dataclass
class Bench:
    """What every held-out weight is measured against: the W2 states, the random policy's rollouts, the env."""

    spec: TaskSpec
    exp: Experiment
    states: np.ndarray
    random_rolls: ComponentReturns
    env: Any
    anchor_rolls: list[ComponentReturns]

    def returns(self, rolls: ComponentReturns, weight: float) -> np.ndarray:
        return returns_at(rolls, self.spec.reward.weighted, self.spec.reward.fixed, weight)


def evaluate(spec: TaskSpec, exp: Experiment, trained: Trained, fitted: Fitted,
             run_root: str | Path) -> tuple[dict[str, Any], dict[float, dict[str, np.ndarray]]]:
    """Every method and reference at every held-out weight.

    :return: (results for the report, action samples per held-out weight and method for TensorBoard).
    """
    bench, results, histograms = held_out_rows(spec, exp, fitted, run_root)
    grid = np.unique(np.concatenate([spec.axis.even(exp.grid), spec.anchors, spec.held_out]))
    weighted, fixed = spec.reward.weighted, spec.reward.fixed
    anchor_curves = {a: [mean_ci(returns_at(r, weighted, fixed, w)) for w in grid] for a, r in zip(spec.anchors, bench.anchor_rolls)}
    own_weight = {"scratch": {a: anchor_curves[a][list(grid).index(a)] for a in spec.anchors}}
    if trained.shared_spec is not None:
        own_weight["shared"] = {a: mean_ci(returns_at(rollouts(actor, spec, exp), weighted, fixed, a))
                                for a, actor in zip(spec.anchors, fitted.shared_actors)}
    env = bench.env
    optimum_curve = []
    if is_lqr(spec):
        for w in grid:
            r = rollouts(OptimalPolicy(env, float(w), discount=gamma_of(spec)), spec, exp)
            optimum_curve.append(mean_ci(returns_at(r, weighted, fixed, float(w))))
    env.close()
    results.update(grid=grid.tolist(), anchor_curves=anchor_curves, optimum_curve=optimum_curve, own_weight=own_weight,
                   conditioned_metas=trained.conditioned_metas, **agent_metas(spec, exp, run_root))
    return results, histograms


def held_out_rows(spec: TaskSpec, exp: Experiment, fitted: Fitted,
                  run_root: str | Path) -> tuple[Bench, dict[str, Any], dict[Any, dict[str, np.ndarray]]]:
    """The bench (every anchor's and the random policy's rollouts, the W2 states, an env) and, at every held-out
    weight, the retrained agents and every method (:func:`retrained_at`, :func:`methods_at`).

    :return: (bench, results with ``weights``, ``rows``, ``floor``, ``retrained``, ``random``, ``deployed``,
        ``w2_states``, ``gamma``; action samples per held-out weight and method). The caller closes ``bench.env``.
    """
    run = RunDir.of(spec, run_root)
    anchor_rolls = [rollouts(a, spec, exp) for a in fitted.actors]
    env = spec.make_env(spec.anchors[0])
    random_rolls = rollouts(RandomPolicy(env.action_space, exp.seed), spec, exp)
    rng = np.random.default_rng(exp.seed)
    dataset = fitted.dataset
    states = dataset.obs[rng.choice(len(dataset.obs), size=min(exp.w2_states, len(dataset.obs)), replace=False)]
    bench = Bench(spec, exp, states, random_rolls, env, anchor_rolls)
    results: dict[str, Any] = {"weights": list(spec.held_out), "rows": {}, "floor": {}, "retrained": {}, "random": {},
                               "w2_states": len(states), "gamma": gamma_of(spec)}
    histograms: dict[Any, dict[str, np.ndarray]] = {}
    for w in spec.held_out:
        actors = [load_agent_actor(spec, run.retrained(w, i), lambda w=w: spec.make_env(w)) for i in range(exp.retrained_seeds)]
        retrained_samples = retrained_at(bench, w, actors, results)
        histograms[w] = {"retrained seed 0": retrained_samples[0]}
        methods_at(bench, w, fitted, retrained_samples, results, histograms[w])
    return bench, results, histograms


def agent_metas(spec: TaskSpec, exp: Experiment, run_root: str | Path) -> dict[str, Any]:
    """``anchor_metas`` (per anchor) and ``retrained_metas`` (per held-out weight, per seed): each run's meta.json."""
    run = RunDir.of(spec, run_root)
    return {"anchor_metas": [json.loads((run.anchor(w) / "meta.json").read_text()) for w in spec.anchors],
            "retrained_metas": {w: [json.loads((run.retrained(w, i) / "meta.json").read_text()) for i in range(exp.retrained_seeds)]
                                for w in spec.held_out}}


def retrained_at(bench: Bench, w: float, actors: list[Any], results: dict[str, Any]) -> list[np.ndarray]:
    """The retrained agents at held-out weight ``w``: pooled return, seed spread, seed-to-seed W2 floor.

    :return: each retrained agent's action samples on the W2 states ``[N, M, D]``.
    """
    exp = bench.exp
    seed_returns = [bench.returns(rollouts(a, bench.spec, exp), w) for a in actors]
    retrained_mean, retrained_ci = mean_ci(np.concatenate(seed_returns))
    random_mean, _ = mean_ci(bench.returns(bench.random_rolls, w))
    seed_means = [float(np.mean(r)) for r in seed_returns]
    samples = [action_samples(a, bench.states, exp.w2_samples, exp.seed + i) for i, a in enumerate(actors)]
    floor = [float(per_state_w2(samples[i], samples[j]).mean()) for i in range(len(samples)) for j in range(i + 1, len(samples))]
    results["retrained"][w] = {"mean": retrained_mean, "ci": retrained_ci, "seed_means": seed_means,
                               "seed_cis": [mean_ci(r)[1] for r in seed_returns], "seed_episodes": [len(r) for r in seed_returns],
                               "seed_spread": float(max(seed_means) - min(seed_means))}
    results["random"][w] = random_mean
    results["floor"][w] = float(np.mean(floor))
    return samples


def methods_at(bench: Bench, w: float, fitted: Fitted, retrained_samples: list[np.ndarray], results: dict[str, Any],
                histograms: dict[str, np.ndarray]) -> None:
    """Every method (and the LQR optimum, and the shared start's fine-tune) at held-out weight ``w``:
    return, regret, W2 to the retrained agents, to the optimum and to the fine-tune."""
    spec, exp = bench.spec, bench.exp
    retrained_mean = results["retrained"][w]["mean"]
    gap = retrained_mean - results["random"][w]
    methods_here: dict[str, Any] = dict(fitted.policies)
    optimum_samples = None
    if is_lqr(spec):
        # Two optima: γ = 1 maximises the (undiscounted) return evaluated here; γ = PPO's gamma is
        # what the anchors' own objective converges to, so W2 is measured against that one.
        discounted = OptimalPolicy(bench.env, w, discount=gamma_of(spec))
        optimum_samples = action_samples(discounted, bench.states, 1, 0)
        if "optimum" in exp.methods:
            methods_here.pop("optimum", None)
            methods_here["optimum γ=1"] = OptimalPolicy(bench.env, w, discount=1.0)
            methods_here[f"optimum γ={gamma_of(spec):g}"] = discounted
    shared_samples = None
    if fitted.finetuned_actors:
        methods_here[SHARED_REFERENCE] = fitted.finetuned_actors[w]
        shared_samples = action_samples(fitted.finetuned_actors[w], bench.states, exp.w2_samples, exp.seed)
    for name, policy in methods_here.items():
        if hasattr(policy, "set_weight"):
            policy.set_weight(w)
        returns = bench.returns(rollouts(policy, spec, exp), w)
        mean, ci = mean_ci(returns)
        if name == "deployed":
            results.setdefault("deployed", {})[w] = deployed_check(bench, w, policy, returns)
        samples = action_samples(policy, bench.states, 1 if name.startswith("optimum") else exp.w2_samples, exp.seed)  # the optimum is a Dirac
        w2 = [float(per_state_w2(samples, r).mean()) for r in retrained_samples]
        row = {"mean": mean, "ci": ci, "regret": (retrained_mean - mean) / gap if gap else float("nan"),
               "w2": float(np.mean(w2)), "w2_per_seed": w2}
        if optimum_samples is not None:
            row["w2_optimum"] = float(per_state_w2(samples, optimum_samples).mean())
        if shared_samples is not None:
            row["w2_shared"] = float(per_state_w2(samples, shared_samples).mean())
        results["rows"].setdefault(name, {})[w] = row
        histograms[name] = samples
    if optimum_samples is not None:
        results.setdefault("floor_optimum", {})[w] = float(np.mean([per_state_w2(r, optimum_samples).mean() for r in retrained_samples]))


def deployed_check(bench: Bench, w: float, policy: Any, returns: np.ndarray) -> dict[str, Any]:
    """``deployed`` against the best anchor at ``w``, episode by episode on the comparison's own episodes (the
    anchor with the best mean on these same episodes: a choice that favours the anchor, so the check is strict).

    :raises HTIError: the calibration's episodes overlap the comparison's (they must be disjoint).
    """
    spec, exp = bench.spec, bench.exp
    calibration = policy.calibration
    ours = {eval_seed(spec, s) + i for s in exp.eval_seeds for i in range(exp.eval_episodes)}
    if ours & {seed for seeds in calibration.reset_seeds() for seed in seeds}:
        raise HTIError("the calibration's reset seeds overlap the comparison's evaluation episodes; calibrate with another --seed.")
    anchors = {anchor_name(a): bench.returns(r, w) for a, r in zip(spec.anchors, bench.anchor_rolls)}
    best = max(anchors, key=lambda n: float(anchors[n].mean()))
    diff, diff_ci = mean_ci(returns - anchors[best])
    deployment = policy.deployment(w)
    return {"candidate": deployment.candidate, "why": deployment.why, "estimate": deployment.estimate,
            "calibration_episodes": calibration.episodes, "best_anchor": best, "best_anchor_mean": float(anchors[best].mean()),
            "difference": diff, "difference_ci": diff_ci, "holds": bool(diff + diff_ci >= 0)}
