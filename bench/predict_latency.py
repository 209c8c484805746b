"""Predict latency of the surrogate vs SB3's own PPO policy, on the same observations, in one run.

    python bench/predict_latency.py --run-root runs            # the demo task (run `hti-rl demo` first) + the 6-D task
    python bench/predict_latency.py --json latency.json        # the table as JSON too
    python bench/predict_latency.py --spec envs/lqr2d.yaml --surrogate runs/lqr2d/compare/clot-full.zip

Two tasks: the demo task (2-D LQR: its trained anchors and surrogate from ``hti-rl demo``) and a task
with HalfCheetah-v5's spaces (17-D observations, 6-D actions) whose surrogate is built without
training: three untrained SB3 PPO policies as anchors at λ = 0.1, 1, 10, their action samples at 1,000
random states, a 200-step CLOT fit with the pipeline's settings. For each, at batch 1 and 256,
deterministic and stochastic: the median time per call of SB3's PPO ``model.predict`` (the first
anchor's), the surrogate's ``predict`` at an anchor weight and at a held-out weight, and onnxruntime
on the graph ``hti-rl export`` writes (deterministic only: the graph has no noise input), with the
ratios to SB3. Calls are timed in interleaved rounds, so that load on a shared machine hits every
column alike. When the task's shared-start anchors and their dataset exist, also parameter
interpolation of those anchors at the held-out weight.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.surrogate import SurrogatePolicy  # noqa: F401  (registers the class AnchoredPolicy.load reads)


def interleaved(calls: dict[str, Callable[[], Any]], repeat: int, rounds: int = 6) -> dict[str, float]:
    """Median seconds per call of each function, timed in ``rounds`` alternating rounds of ``repeat // rounds``."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        for _ in range(10):
            fn()
    for _ in range(rounds):
        for name, fn in calls.items():
            for _ in range(max(1, repeat // rounds)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def onnx_session(policy: Any, path: Path, weight: float, tmp: Path) -> Any:
    """An onnxruntime session (one thread) on the exported graph at ``weight``, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from hti_rl.methods.export import export

    out = export(path, weight, "onnx", tmp / f"{path.stem}.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])


def demo_task(args: argparse.Namespace) -> dict[str, Any] | None:
    """The demo task's SB3 model, surrogate and held-out weight (None when the demo has not run)."""
    from hti_rl.dataset import PolicyDataset
    from hti_rl.methods.baselines import fit_param_interp
    from hti_rl.runs import RunDir
    from hti_rl.spec.load import load_task
    from hti_rl.training.store import load_anchor, load_anchor_actor

    spec_path = Path(args.spec or Path(args.run_root) / "demo" / "spec" / "envs" / "demo.yaml")
    if not spec_path.exists():
        print(f"no task spec at {spec_path}: run `hti-rl demo --run-root {args.run_root}` first; timing the 6-D task only", file=sys.stderr)
        return None
    spec = load_task(spec_path)
    path = Path(args.surrogate) if args.surrogate else RunDir.of(spec, args.run_root).surrogate
    if not path.exists():
        print(f"no surrogate at {path}: run the pipeline for {spec_path} first; timing the 6-D task only", file=sys.stderr)
        return None
    interp = None
    shared = spec.with_shared_start()
    if all(RunDir.of(shared, args.run_root).is_finished(w) for w in spec.anchors) and RunDir.of(shared, args.run_root).dataset.exists():
        actors = [load_anchor_actor(shared, w, args.run_root) for w in spec.anchors]
        interp = fit_param_interp(shared, PolicyDataset.load(RunDir.of(shared, args.run_root).dataset, shared), actors)
    model, vecnormalize = load_anchor(spec, spec.anchors[0], args.run_root)
    env = spec.make_env(spec.anchors[0])
    held_out = spec.held_out[0] if spec.held_out else float(np.sqrt(spec.anchors[0] * spec.anchors[1]))
    return dict(name=spec.name, path=path, surrogate=AnchoredPolicy.load(path, expect_fingerprint=spec.fingerprint()), sb3=model,
                vecnormalize=vecnormalize, space=env.observation_space, anchor=spec.anchors[0], held_out=held_out, interp=interp)


def six_d_task(tmp: Path, steps: int) -> dict[str, Any]:
    """A surrogate with HalfCheetah-v5's spaces on untrained SB3 PPO anchors (no env steps taken)."""
    import gymnasium as gym
    from gymnasium import spaces
    from stable_baselines3 import PPO

    from hti_rl.clot import CLOTData, fit_clot
    from hti_rl.methods.base import standardiser
    from hti_rl.methods.surrogate import clot_config
    from hti_rl.sb3io.actor import actor_from_sb3

    try:
        env = gym.make("HalfCheetah-v5")
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
    except Exception:  # no MuJoCo: the same spaces
        obs_space = spaces.Box(-np.inf, np.inf, (17,), np.float64)
        act_space = spaces.Box(-1.0, 1.0, (6,), np.float32)

    class Spaces(gym.Env):
        observation_space, action_space = obs_space, act_space

    models = [PPO("MlpPolicy", Spaces(), seed=i, device="cpu", n_steps=64, batch_size=64) for i in range(3)]
    actors = [actor_from_sb3(m) for m in models]
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1000, obs_space.shape[0])).astype(np.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        samples = []
        for actor in actors:
            mean, log_std = actor.distribution(torch.from_numpy(obs))
            samples.append(mean[:, None] + log_std.exp()[:, None] * torch.randn(1000, 8, act_space.shape[0], generator=gen))
    x_mean, x_std = standardiser(obs)
    weights = [0.1, 1.0, 10.0]
    data = CLOTData(x=torch.from_numpy((obs - x_mean) / x_std), times=torch.log(torch.tensor(weights)), y=torch.stack(samples))
    clot = fit_clot(data, clot_config({"steps": steps}), progress=False)
    surrogate = SurrogatePolicy(obs_space, act_space, actors, weights, "log", x_mean, x_std,
                                header={"task": "halfcheetah-spaces", "task_fingerprint": "halfcheetah-spaces", "seed": 0}, clot=clot)
    path = tmp / "halfcheetah_spaces.zip"
    surrogate.save(path)
    return dict(name="halfcheetah-spaces (17-D obs, 6-D actions, untrained anchors)", path=path, surrogate=surrogate, sb3=models[0],
                vecnormalize=None, space=obs_space, anchor=weights[0], held_out=3.0, interp=None)


def time_task(task: dict[str, Any], repeat: int, tmp: Path) -> list[dict[str, Any]]:
    """The rows of one task: per batch size and mode, µs per call and ratios to SB3."""
    surrogate, sb3, norm = task["surrogate"], task["sb3"], task["vecnormalize"]
    session = onnx_session(surrogate, task["path"], task["held_out"], tmp)
    at_anchor = AnchoredPolicy.load(task["path"])  # a second copy, so that the two weights keep their traces
    at_anchor.set_weight(task["anchor"])
    surrogate.set_weight(task["held_out"])
    rng = np.random.default_rng(0)
    rows = []
    for batch in (1, 256):
        obs = np.stack([task["space"].sample() for _ in range(batch)]).astype(np.float32)
        obs = np.clip(obs, -3, 3)  # unbounded boxes sample huge values; keep observations realistic
        rng.shuffle(obs)
        sb3_obs = norm.normalize_obs(obs) if norm is not None else obs
        single, sb3_single = (obs[0], sb3_obs[0]) if batch == 1 else (obs, sb3_obs)
        for deterministic in (True, False):
            calls = {
                "sb3": lambda: sb3.predict(sb3_single, deterministic=deterministic),
                "surrogate_anchor": lambda: at_anchor.predict(single, deterministic=deterministic),
                "surrogate_held_out": lambda: surrogate.predict(single, deterministic=deterministic),
            }
            if session is not None and deterministic:
                calls["onnxruntime_held_out"] = lambda: session.run(None, {"obs": obs})
            if task["interp"] is not None:
                task["interp"].set_weight(task["held_out"])
                calls["param_interp_held_out"] = lambda: task["interp"].predict(single, deterministic=deterministic)
            us = {name: t * 1e6 for name, t in interleaved(calls, repeat).items()}
            rows.append({
                "task": task["name"], "batch": batch, "mode": "deterministic" if deterministic else "stochastic",
                "held_out_weight": task["held_out"], "us": {k: round(v, 1) for k, v in us.items()},
                "ratio_to_sb3": {k: round(v / us["sb3"], 2) for k, v in us.items() if k != "sb3"},
            })
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=None, help="task spec (default: <run-root>/demo/spec/envs/demo.yaml)")
    parser.add_argument("--run-root", default="runs")
    parser.add_argument("--surrogate", default=None, help="a fitted policy file (default: the task's surrogate.zip)")
    parser.add_argument("--repeat", type=int, default=600, help="calls timed per cell (default: 600)")
    parser.add_argument("--fit-steps", type=int, default=200, help="CLOT steps of the 6-D task's surrogate (default: 200)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the table as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [t for t in (demo_task(args), six_d_task(Path(tmp), args.fit_steps)) if t is not None]
        for task in tasks:
            rows += time_task(task, args.repeat, Path(tmp))
    print("torch threads 1, onnxruntime threads 1; µs per call (median), ratio to SB3 PPO predict in brackets")
    columns = ["surrogate_anchor", "surrogate_held_out", "onnxruntime_held_out", "param_interp_held_out"]
    columns = [c for c in columns if any(c in r["us"] for r in rows)]
    print(f"{'task':<34} {'batch':>5} {'mode':>13} {'SB3 PPO':>9} " + " ".join(f"{c:>26}" for c in columns))
    for r in rows:
        cells = [f"{r['us'][c]:>17.1f} ({r['ratio_to_sb3'][c]:>5.2f})" if c in r["us"] else f"{'-':>26}" for c in columns]
        print(f"{r['task'][:34]:<34} {r['batch']:>5} {r['mode']:>13} {r['us']['sb3']:>9.1f} " + " ".join(cells))
    worst = max(r["ratio_to_sb3"]["surrogate_held_out"] for r in rows)
    print(f"largest surrogate@held-out / SB3 ratio: {worst:.2f} (goal <= 1.5)")
    if args.json:
        from hti_rl.io import write_json

        write_json(args.json, {"rows": rows, "torch_threads": 1, "command": " ".join(sys.argv)})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
