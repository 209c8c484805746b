"""``hti-rl compare``: the surrogate against retrained agents and baselines at held-out weights.

An experiment (``experiments/<name>.yaml``, :class:`hti_rl.experiment.Experiment`) names a task spec, how many agents
to retrain from scratch at every held-out weight (the ground truth, same budget and hyperparameters
as an anchor; two or more, so the seed-to-seed spread is measured), the evaluation episodes and
seeds, the methods, and the CLOT variants (named config overrides: the ablations).

:func:`run_compare` does every stage, skipping what is already on disk:

1. train the anchors (:func:`hti_rl.anchors.train_anchors`) and the retrained agents with the same
   job machinery (:class:`RetrainJob`, ``runs/<task>/retrained/w=<λ>/seed=<i>/``), all at once
   over ``workers`` processes; then the weight-conditioned peers the experiment lists
   (:func:`hti_rl.conditioned.train_conditioned`, ``runs/<task>/conditioned/f=<F>/``);
   with ``shared_start`` methods, also the shared-start anchors and the base fine-tuned at every
   held-out weight (:mod:`hti_rl.shared_start`, ``runs/<task>/shared/``);
2. cross-evaluate the anchors (:func:`hti_rl.quality.check_anchors`), record the dataset (and the
   shared-start anchors' own dataset);
3. fit every method (CLOT variants and the trainable baselines) to ``runs/<task>/compare/<method>.zip``,
   and every shared-start method on the shared-start anchors (rows ``shared/<method>``,
   ``runs/<task>/shared/compare/``);
4. evaluate: every anchor, retrained agent and the random policy once (their returns at any weight
   follow from one rollout set: evaluate once, weigh many), every method at every held-out weight;
   per-state W2 of every method's action distribution to each retrained agent's on a shared state set
   (the dataset's states, subsampled), beside the retrained agents' seed-to-seed W2 (the floor);
5. write ``experiments/<name>/report.md`` and ``returns.png`` (:mod:`hti_rl.report`) and log to
   TensorBoard (``runs/<task>/tb/compare``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hti_rl.compare.experiment import CONDITIONED, Experiment
from hti_rl.compare.report import SHARED_REFERENCE
from hti_rl.errors import FileFormatError
from hti_rl.evaluate import (
    ComponentReturns,
    mean_ci,
    per_state_w2,
    returns_at,
    rollout_components,
)
from hti_rl.io import write_json
from hti_rl.runs import RunDir
from hti_rl.seeds import eval_seed
from hti_rl.training.anchors import train_anchors
from hti_rl.training.retrained import train_all
from hti_rl.training.store import load_agent_actor


def ensure_method(spec: Any, exp: Experiment, name: str, dataset: Any, actors: list, run_root: str | Path, force: bool, progress: bool) -> tuple[Any, float | None]:
    """Load ``name``'s fitted policy when it matches the dataset and settings, else fit and save it.

    :return: (policy, fit seconds now, or None when loaded).
    """
    from hti_rl.methods.base import AnchoredPolicy
    from hti_rl.methods.baselines import FITS
    from hti_rl.methods.surrogate import clot_config, fit_policy

    path = RunDir.of(spec, run_root).method(name)
    settings = exp.variants[name.split("/", 1)[1]] if name.startswith("clot/") else {}
    # The key holds the fully resolved CLOT config, so a changed pipeline default refits too.
    resolved = dataclasses.asdict(clot_config(settings, seed=spec.seed)) if name.startswith("clot/") else {}
    key = json.dumps({"method": name, "settings": resolved, "seed": exp.seed}, sort_keys=True)
    if path.exists() and not force:
        try:
            policy = AnchoredPolicy.load(path, expect_fingerprint=spec.fingerprint())
        except FileFormatError as error:  # an older format or a damaged file: refit it
            print(f"refitting {name}: {error}", flush=True)
            policy = None
        if policy is not None and policy.header.get("dataset_sha256") == dataset.header.get("checksum") \
                and policy.header.get("compare_key") == key:
            return policy, None
    started = time.perf_counter()
    if name.startswith("clot/"):
        policy = fit_policy(spec, dataset, actors, clot_config(settings, seed=spec.seed), progress=progress)
    else:
        policy = FITS[name](spec, dataset, actors, exp.seed)
    seconds = time.perf_counter() - started
    policy.header["compare_key"] = key
    policy.header["fit_seconds"] = round(seconds, 2)
    policy.save(path)
    return policy, seconds


class RandomPolicy:
    """Uniform random actions in the Box (the bottom of the regret scale)."""

    def __init__(self, action_space: Any, seed: int):
        self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = False):
        obs = np.asarray(observation)
        shape = (obs.shape[0], *self.low.shape) if obs.ndim > 1 else self.low.shape
        return self.rng.uniform(self.low, self.high, size=shape).astype(np.float32), state


def rollouts(policy: Any, spec: Any, exp: Experiment) -> ComponentReturns:
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


def gamma_of(spec: Any) -> float:
    """The discount the task's agents optimise (the algorithm's default 0.99 when unset)."""
    return float(spec.hyperparams()["algo_kwargs"].get("gamma", 0.99))


def is_lqr(spec: Any) -> bool:
    return "LQR" in spec.env_id


def run_compare(exp: Experiment, run_root: str | Path = "runs", workers: int = 1, force: bool = False,
                progress: bool = True, train_only: bool = False, out_dir: str | Path | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every stage of the comparison (see the module docstring); returns the results written to the report.

    :param exp: the experiment.
    :param run_root: root of the run directories.
    :param workers: processes for training anchors and retrained agents.
    :param force: refit the methods and re-evaluate (training and recording are never redone here:
        use ``hti-rl train-anchors/record --force``).
    :param train_only: stop after training (for a many-core machine).
    :param out_dir: where the report goes (``experiments/<name>/`` beside the experiment file by default).
    """
    from hti_rl.compare.report import write_report
    from hti_rl.dataset import PolicyDataset, record
    from hti_rl.quality import check_anchors
    from hti_rl.spec.load import load_task

    # The methods run on anchors from scratch, whatever the task spec says; `shared_start` methods on shared-start ones.
    task = load_task(exp.task)
    spec = dataclasses.replace(task, shared_start=None)
    run_dir = RunDir.of(spec, run_root).path
    timing_path = run_dir / "compare" / "timings.json"
    timings: dict[str, float] = json.loads(timing_path.read_text()) if timing_path.exists() else {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        log(f"== {name}")
        out = fn()
        timings[name] = round(time.perf_counter() - started, 2)
        write_json(timing_path, timings)
        return out

    timed("train anchors + retrained agents", lambda: train_all(spec, exp.retrained_seeds, run_root, workers, progress))
    conditioned = [m for m in exp.methods if m in CONDITIONED]
    conditioned_metas: dict[str, Any] = {}
    if conditioned:
        from hti_rl.training.conditioned import METHODS, train_conditioned

        metas = timed("train conditioned agents", lambda: train_conditioned(spec, [METHODS[m] for m in conditioned], run_root, workers, progress=progress))
        conditioned_metas = dict(zip(conditioned, metas))
    shared_spec = task.with_shared_start() if exp.shared_start else None
    finetuned_metas: dict[float, Any] = {}
    if shared_spec is not None:
        from hti_rl.training.shared_start import train_finetuned

        timed("train shared-start anchors", lambda: train_anchors(shared_spec, run_root, workers=workers, progress=progress))
        metas = timed("fine-tune the shared start at held-out weights",
                      lambda: train_finetuned(shared_spec, spec.held_out, run_root, workers, progress))
        finetuned_metas = dict(zip(spec.held_out, metas))
    if train_only:
        return {}
    # One thread whatever --workers is: fits and rollouts reproduce to the bit only at a fixed thread count
    # (measured: the same LQR no-potential fit scored −15.9 ± 11 with 2 threads, −9.38 ± 3.1 with 1).
    torch.set_num_threads(1)
    cross = timed("check anchors", lambda: check_anchors(spec, run_root, log_warnings=False))
    path = RunDir.of(spec, run_root).dataset
    if path.exists():
        dataset = PolicyDataset.load(path, spec)
    else:
        dataset = timed("record", lambda: record(spec, run_root, progress=progress))
    from hti_rl.training.store import load_anchor_actor

    actors = [load_anchor_actor(spec, w, run_root) for w in spec.anchors]
    names = exp.method_names()
    policies: dict[str, Any] = {}
    fit_seconds: dict[str, float] = {}
    for name in names:
        if name == "optimum":
            continue
        if name in CONDITIONED:  # trained above, nothing to fit
            from hti_rl.methods.conditioned import load_conditioned_policy
            from hti_rl.training.conditioned import METHODS

            policies[name] = load_conditioned_policy(spec, METHODS[name], run_root)
            continue
        log(f"== fit {name}")
        policies[name], seconds = ensure_method(spec, exp, name, dataset, actors, run_root, force, progress)
        fit_seconds[name] = seconds if seconds is not None else float(policies[name].header.get("fit_seconds", float("nan")))
    shared_actors: list[Any] = []
    finetuned_actors: dict[float, Any] = {}
    if shared_spec is not None:

        shared_path = RunDir.of(shared_spec, run_root).dataset
        shared_data = PolicyDataset.load(shared_path, shared_spec) if shared_path.exists() else \
            timed("record shared-start anchors", lambda: record(shared_spec, run_root, progress=progress))
        shared_actors = [load_anchor_actor(shared_spec, w, run_root) for w in spec.anchors]
        for name in exp.shared_method_names():
            log(f"== fit shared/{name}")
            policies[f"shared/{name}"], seconds = ensure_method(shared_spec, exp, name, shared_data, shared_actors, run_root, force, progress)
            fit_seconds[f"shared/{name}"] = seconds if seconds is not None else float(policies[f"shared/{name}"].header.get("fit_seconds", float("nan")))
        finetuned_actors = {w: load_agent_actor(shared_spec, RunDir.of(shared_spec, run_root).finetuned(w), lambda: shared_spec.make_env(w)) for w in spec.held_out}
    timings.update({f"fit {n}": round(s, 2) for n, s in fit_seconds.items()})
    write_json(timing_path, timings)

    started = time.perf_counter()
    log("== evaluate")
    weighted, fixed = spec.reward.weighted, spec.reward.fixed
    anchor_metas = [json.loads((RunDir.of(spec, run_root).anchor(w) / "meta.json").read_text()) for w in spec.anchors]
    retrained_metas = {w: [json.loads((RunDir.of(spec, run_root).retrained(w, i) / "meta.json").read_text()) for i in range(exp.retrained_seeds)]
                       for w in spec.held_out}
    retrained_actors = {w: [load_agent_actor(spec, RunDir.of(spec, run_root).retrained(w, i), lambda: spec.make_env(w)) for i in range(exp.retrained_seeds)] for w in spec.held_out}

    lo, hi = spec.anchors[0], spec.anchors[-1]
    grid = spec.axis.even(exp.grid)
    grid = np.unique(np.concatenate([grid, spec.anchors, spec.held_out]))
    anchor_rolls = [rollouts(a, spec, exp) for a in actors]
    anchor_curves = {a: [mean_ci(returns_at(r, weighted, fixed, w)) for w in grid] for a, r in zip(spec.anchors, anchor_rolls)}
    env = spec.make_env(lo)
    random_rolls = rollouts(RandomPolicy(env.action_space, exp.seed), spec, exp)
    own_weight = {"scratch": {a: anchor_curves[a][list(grid).index(a)] for a in spec.anchors}}
    if shared_spec is not None:
        own_weight["shared"] = {a: mean_ci(returns_at(rollouts(actor, spec, exp), weighted, fixed, a)) for a, actor in zip(spec.anchors, shared_actors)}

    rng = np.random.default_rng(exp.seed)
    states = dataset.obs[rng.choice(len(dataset.obs), size=min(exp.w2_states, len(dataset.obs)), replace=False)]
    M = exp.w2_samples
    results: dict[str, Any] = {"weights": list(spec.held_out), "rows": {}, "floor": {}, "retrained": {}, "random": {}}
    histograms: dict[float, dict[str, np.ndarray]] = {}
    optimum_curve = []
    for w in spec.held_out:
        per_seed = [rollouts(a, spec, exp) for a in retrained_actors[w]]
        seed_returns = [returns_at(r, weighted, fixed, w) for r in per_seed]
        pooled = np.concatenate(seed_returns)
        retrained_mean, retrained_ci = mean_ci(pooled)
        random_mean, _ = mean_ci(returns_at(random_rolls, weighted, fixed, w))
        seed_means = [float(np.mean(r)) for r in seed_returns]
        retrained_samples = [action_samples(a, states, M, exp.seed + i) for i, a in enumerate(retrained_actors[w])]
        floor = [float(per_state_w2(retrained_samples[i], retrained_samples[j]).mean())
                 for i in range(len(retrained_samples)) for j in range(i + 1, len(retrained_samples))]
        results["retrained"][w] = {"mean": retrained_mean, "ci": retrained_ci, "seed_means": seed_means,
                                   "seed_spread": float(max(seed_means) - min(seed_means))}
        results["random"][w] = random_mean
        results["floor"][w] = float(np.mean(floor))
        gap = retrained_mean - random_mean
        optimum_samples = None
        methods_here: dict[str, Any] = dict(policies)
        if is_lqr(spec):
            from hti_rl.envs.lqr import OptimalPolicy

            # Two optima: γ = 1 maximises the (undiscounted) return evaluated here; γ = PPO's gamma is
            # what the anchors' own objective converges to, so W2 is measured against that one.
            discounted = OptimalPolicy(env, w, discount=gamma_of(spec))
            optimum_samples = action_samples(discounted, states, 1, 0)
            if "optimum" in exp.methods:
                methods_here.pop("optimum", None)
                methods_here["optimum γ=1"] = OptimalPolicy(env, w, discount=1.0)
                methods_here[f"optimum γ={gamma_of(spec):g}"] = discounted
        histograms[w] = {"retrained seed 0": retrained_samples[0]}
        shared_samples = None
        if shared_spec is not None:
            methods_here[SHARED_REFERENCE] = finetuned_actors[w]
            shared_samples = action_samples(finetuned_actors[w], states, M, exp.seed)
        for name, policy in methods_here.items():
            if hasattr(policy, "set_weight"):
                policy.set_weight(w)
            returns = returns_at(rollouts(policy, spec, exp), weighted, fixed, w)
            mean, ci = mean_ci(returns)
            samples = action_samples(policy, states, 1 if name.startswith("optimum") else M, exp.seed)  # the optimum is a Dirac
            w2 = [float(per_state_w2(samples, r).mean()) for r in retrained_samples]
            row = {"mean": mean, "ci": ci, "regret": (retrained_mean - mean) / gap if gap else float("nan"),
                   "w2": float(np.mean(w2)), "w2_per_seed": w2}
            if optimum_samples is not None:
                row["w2_optimum"] = float(per_state_w2(samples, optimum_samples).mean())
            if shared_samples is not None:
                row["w2_shared"] = float(per_state_w2(samples, shared_samples).mean())
            results["rows"].setdefault(name, {})[w] = row
            histograms[w][name] = samples
        if optimum_samples is not None:
            results["floor_optimum"] = results.get("floor_optimum", {})
            results["floor_optimum"][w] = float(np.mean([per_state_w2(r, optimum_samples).mean() for r in retrained_samples]))
    if is_lqr(spec):
        from hti_rl.envs.lqr import OptimalPolicy

        for w in grid:
            r = rollouts(OptimalPolicy(env, float(w), discount=gamma_of(spec)), spec, exp)
            optimum_curve.append(mean_ci(returns_at(r, weighted, fixed, float(w))))
    env.close()
    timings["evaluate"] = round(time.perf_counter() - started, 2)
    write_json(timing_path, timings)

    results.update(
        experiment=exp, spec=spec, grid=grid.tolist(), anchor_curves=anchor_curves, optimum_curve=optimum_curve,
        anchor_metas=anchor_metas, retrained_metas=retrained_metas, conditioned_metas=conditioned_metas, timings=dict(timings), cross_warnings=list(cross.warnings),
        own_weight=own_weight, shared=shared_results(shared_spec, finetuned_metas, run_root) if shared_spec is not None else None,
        episodes=exp.eval_episodes * len(exp.eval_seeds), dataset_states=len(dataset.obs), w2_states=len(states),
        gamma=gamma_of(spec), hyperparams=spec.hyperparams(),
    )
    out = Path(out_dir) if out_dir else exp.path.parent / exp.name
    report = write_report(results, out)
    log_tensorboard(results, histograms, run_dir / "tb" / "compare", report)
    log(f"wrote {report} and {report.with_name('returns.png')}; TensorBoard: {run_dir / 'tb' / 'compare'}")
    return results


def shared_results(shared_spec: Any, finetuned_metas: dict[float, Any], run_root: str | Path) -> dict[str, Any]:
    """What the report says of the shared-start anchors: settings, the base's and the anchors' meta data."""
    from hti_rl.training.shared_start import (
        load_base_meta,
        shared_settings,
        total_steps,
    )

    return {
        "settings": shared_settings(shared_spec),
        "base_meta": load_base_meta(shared_spec, run_root),
        "anchor_metas": [json.loads((RunDir.of(shared_spec, run_root).anchor(w) / "meta.json").read_text()) for w in shared_spec.anchors],
        "finetuned_metas": finetuned_metas,
        "total_steps": total_steps(shared_spec),
    }


def log_tensorboard(results: dict[str, Any], histograms: dict[float, dict[str, np.ndarray]], log_dir: Path, report: Path) -> None:
    """Scalars per method and held-out weight (step = the weight's index), action histograms per weight, the report."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    for i, w in enumerate(results["weights"]):
        writer.add_scalar("weight", w, i)
        writer.add_scalar("return/retrained", results["retrained"][w]["mean"], i)
        writer.add_scalar("w2/retrained seed-to-seed (floor)", results["floor"][w], i)
        for name, rows in results["rows"].items():
            row = rows[w]
            writer.add_scalar(f"return/{name}", row["mean"], i)
            writer.add_scalar(f"regret/{name}", row["regret"], i)
            writer.add_scalar(f"w2/{name}", row["w2"], i)
        for name, samples in histograms[w].items():
            writer.add_histogram(f"actions_w={w:g}/{name}", samples.reshape(-1), 0)
    writer.add_text("report", report.read_text())
    writer.close()
