"""``hti-rl demo``: the whole pipeline on a small built-in task, in a few minutes on 2 cores.

The task is the 2-D linear-quadratic regulator (``hti_rl/LQR2D-v0``) with reward −(xᵀQx + λ·uᵀRu),
anchors at λ = 0.1, 1, 10 and held-out weights 0.3 and 3. Its optimal policy at every weight is known
(Riccati), and the optimal action at a fixed state bends along a curve as λ moves, so the report can
show both what the surrogate returns and where its actions go, against the exact answer.

Stages: train anchors → check them → record → fit → deploy at held-out weights → compare with an
agent retrained at one held-out weight, the two neighbouring anchors and the exact optimum → report
(markdown + plot) and TensorBoard.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.io import atomic_write, write_json
from hti_rl.runs import RunDir
from hti_rl.threads import stage

DEMO_SPEC = """\
# hti-rl demo task: 2-D LQR, reward −(xᵀQx + λ·uᵀRu).
name: demo
env_id: hti_rl/LQR2D-v0
reward:
  components:
    state: {info: reward_state}
    ctrl: {info: reward_ctrl}
  weighted: ctrl
weight_scale: log
anchors: [0.1, 1, 10]
held_out: [0.3, 3]
algo: ppo
hyperparams_file: ../agents/ppo.yml
seed: 0
record: {episodes: 10, samples: 16, max_states: 1000}
eval_episodes: 20
"""


DEMO_PPO = """\
demo:
  n_timesteps: 150000
  policy: MlpPolicy
  n_envs: 4
  n_steps: 200
  batch_size: 100
  n_epochs: 10
  gamma: 0.98
  gae_lambda: 0.9
  learning_rate: !!float 3e-3
  ent_coef: 0.0
  policy_kwargs: "dict(net_arch=dict(pi=[32], vf=[32]), log_std_init=-1.0)"
"""


RETRAINED_WEIGHT = 3.0


DEMO_CLOT: dict[str, Any] = {}  # CLOT settings over the pipeline's defaults (the demo's test shortens the fit)


GRID = np.geomspace(0.1, 10, 9)


PROBE_STATE = np.array([1.0, 1.0], dtype=np.float32) / np.sqrt(2)


def write_demo_spec(run_root: str | Path) -> Path:
    """Write the built-in spec and its PPO settings under ``<run_root>/demo/spec/``; return the spec path."""
    root = Path(run_root) / "demo" / "spec"
    for name, text in (("envs/demo.yaml", DEMO_SPEC), ("agents/ppo.yml", DEMO_PPO)):
        with atomic_write(root / name, "w") as f:
            f.write(text)
    return root / "envs" / "demo.yaml"


def _reuse(path: Path, load: Any, force: bool) -> Any:
    """``load(path)`` when the file exists and loads; ``None`` (make it again) when forced, missing, or
    unusable (written by an older hti-rl, or damaged): the demo redoes that stage rather than stopping."""
    from hti_rl.errors import FileFormatError

    if force or not path.exists():
        return None
    try:
        return load(path)
    except FileFormatError as error:
        print(f"redoing this stage: {error}", flush=True)
        return None


@stage
def run_demo(run_root: str | Path = "runs", workers: int = 2, force: bool = False) -> Path:
    """Run every stage of the pipeline on the demo task; return the report's path.

    :param run_root: where ``demo/`` goes.
    :param workers: anchors trained at once.
    :param force: redo finished stages.
    """
    from hti_rl.dataset import PolicyDataset, record
    from hti_rl.methods.surrogate import SurrogatePolicy, clot_config, fit
    from hti_rl.quality import check_anchors, print_report
    from hti_rl.spec.load import load_task
    from hti_rl.training.anchors import train_anchors

    spec = load_task(write_demo_spec(run_root))
    run_dir = RunDir.of(spec, run_root).path
    seconds: dict[str, float] = {}

    def stage(name: str) -> None:
        print(f"\n== {name}", flush=True)
        seconds[name] = time.perf_counter()

    def done(name: str) -> None:
        seconds[name] = time.perf_counter() - seconds[name]

    stage("train anchors")
    train_anchors(spec, run_root, workers=workers, force=force)
    done("train anchors")

    stage("check anchors")
    cross = check_anchors(spec, run_root, force=force)
    print_report(cross)
    done("check anchors")

    stage("record")
    dataset = _reuse(RunDir.of(spec, run_root).dataset, lambda p: PolicyDataset.load(p, spec), force)
    dataset = dataset if dataset is not None else record(spec, run_root)
    done("record")

    stage("fit")
    policy = _reuse(RunDir.of(spec, run_root).surrogate, lambda p: SurrogatePolicy.load(p, spec.fingerprint()), force)
    policy = policy if policy is not None else fit(spec, run_root, clot_config(DEMO_CLOT, seed=spec.seed), dataset=dataset)
    done("fit")

    stage(f"retrain one agent at λ = {RETRAINED_WEIGHT:g}")
    retrained_spec = dataclasses.replace(spec, anchors=(RETRAINED_WEIGHT,))
    train_anchors(retrained_spec, run_dir / "retrained", workers=1, force=force)
    done(f"retrain one agent at λ = {RETRAINED_WEIGHT:g}")

    stage("deploy and compare")
    results = _compare(spec, run_root, policy)
    done("deploy and compare")

    report = _write_report(spec, run_dir, results, seconds, cross)
    write_json(report.with_name("timings.json"), {k: round(v, 2) for k, v in seconds.items()})
    print(f"\nreport: {report}\nplot:   {report.with_name('demo.png')}\nTensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return report


def _compare(spec: Any, run_root: str | Path, policy: Any) -> dict[str, Any]:
    """Returns of every method on the weight grid and at the held-out weights, and the action paths."""
    from hti_rl.envs.lqr import OptimalPolicy
    from hti_rl.evaluate import mean_ci, returns_at, rollout_components
    from hti_rl.training.store import load_anchor_actor

    episodes, seed = spec.eval_episodes, spec.seed + 1000
    make_env = lambda: spec.make_env(spec.anchors[0])  # noqa: E731  (the weight does not change the dynamics)
    weigh = lambda comps, w: mean_ci(returns_at(comps, spec.reward.weighted, spec.reward.fixed, w))  # noqa: E731

    anchors = {w: rollout_components(load_anchor_actor(spec, w, run_root), make_env, episodes, seed) for w in spec.anchors}
    retrained_actor = load_anchor_actor(dataclasses.replace(spec, anchors=(RETRAINED_WEIGHT,)), RETRAINED_WEIGHT, RunDir.of(spec, run_root).path / "retrained")
    retrained = rollout_components(retrained_actor, make_env, episodes, seed)
    rows: dict[str, dict[float, tuple[float, float]]] = {"surrogate": {}, "optimum": {}, "best anchor": {}}
    for w in sorted({*GRID.tolist(), *spec.held_out}):
        policy.set_weight(w)
        rows["surrogate"][w] = weigh(rollout_components(policy, make_env, episodes, seed), w)
        rows["optimum"][w] = weigh(rollout_components(OptimalPolicy(make_env(), w), make_env, episodes, seed), w)
        rows["best anchor"][w] = max((weigh(c, w) for c in anchors.values()), key=lambda mc: mc[0])
    anchor_curves = {a: {w: weigh(c, w) for w in rows["surrogate"]} for a, c in anchors.items()}

    # Where the deterministic action at one state goes as λ sweeps the range: surrogate vs optimum.
    sweep = np.geomspace(spec.anchors[0], spec.anchors[-1], 41)
    env = make_env()
    path_surrogate, path_optimum = [], []
    for w in sweep:
        policy.set_weight(w)
        path_surrogate.append(policy.predict(PROBE_STATE, deterministic=True)[0])
        path_optimum.append(OptimalPolicy(env, w).predict(PROBE_STATE)[0])
    return {
        "rows": rows,
        "anchor_curves": anchor_curves,
        "retrained": weigh(retrained, RETRAINED_WEIGHT),
        "sweep": sweep,
        "path_surrogate": np.array(path_surrogate),
        "path_optimum": np.array(path_optimum),
    }


def _write_report(spec: Any, run_dir: Path, results: dict[str, Any], seconds: dict[str, float], cross: Any) -> Path:
    """Write ``demo/report.md`` and ``demo/demo.png`` and log both to TensorBoard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    rows, retrained = results["rows"], results["retrained"]
    fig, (ax_ret, ax_act) = plt.subplots(1, 2, figsize=(11, 4.2))
    for a, curve in results["anchor_curves"].items():
        ws = sorted(curve)
        ax_ret.plot(ws, [curve[w][0] for w in ws], lw=0.8, alpha=0.6, label=f"anchor λ={a:g} (re-weighed)")
    for name, style in (("optimum", "k--"), ("surrogate", "o-")):
        ws = sorted(rows[name])
        ax_ret.plot(ws, [rows[name][w][0] for w in ws], style, label=name, ms=4)
    ax_ret.errorbar([RETRAINED_WEIGHT], [retrained[0]], yerr=[retrained[1]], fmt="s", color="red", label="retrained")
    for a in spec.anchors:
        ax_ret.axvline(a, color="grey", lw=0.5, ls=":")
    ax_ret.set(xscale="log", xlabel="weight λ", ylabel="return at λ", title="Return vs weight")
    ax_ret.legend(fontsize=7)

    ps, po = results["path_surrogate"], results["path_optimum"]
    ax_act.plot(po[:, 0], po[:, 1], "k--", label="optimal action u*(λ)")
    ax_act.plot(ps[:, 0], ps[:, 1], "-", color="C1", label="surrogate action")
    idx = [int(np.argmin(np.abs(results["sweep"] - a))) for a in spec.anchors]
    ax_act.plot(ps[idx, 0], ps[idx, 1], "o", color="C0", label="anchors")
    ax_act.set(xlabel="u₁", ylabel="u₂", title=f"Deterministic action at x = {np.round(PROBE_STATE, 2).tolist()} as λ sweeps 0.1 → 10")
    ax_act.legend(fontsize=7)
    fig.tight_layout()

    out = run_dir / "demo"
    with atomic_write(out / "demo.png") as f:
        fig.savefig(f, format="png", dpi=110)
    error = np.linalg.norm(ps - po, axis=1) / np.linalg.norm(po, axis=1)

    lines = [
        "# hti-rl demo: 2-D LQR",
        "",
        f"Anchors at λ = {', '.join(f'{a:g}' for a in spec.anchors)} (PPO, {spec.hyperparams()['n_timesteps']} steps each); "
        f"held-out λ = {', '.join(f'{w:g}' for w in spec.held_out)}; {spec.eval_episodes} episodes per entry, mean ± 95% CI.",
        "",
        "| λ | surrogate | best anchor at λ | exact optimum |",
        "|---|---|---|---|",
    ]
    for w in sorted(rows["surrogate"]):
        cells = [f"{rows[n][w][0]:.2f} ± {rows[n][w][1]:.2f}" for n in ("surrogate", "best anchor", "optimum")]
        mark = " (held out)" if w in spec.held_out else ""
        lines.append(f"| {w:.3g}{mark} | " + " | ".join(cells) + " |")
    sur = rows["surrogate"][RETRAINED_WEIGHT]
    lines += [
        "",
        f"Retrained PPO agent at λ = {RETRAINED_WEIGHT:g} (same budget as an anchor): {retrained[0]:.2f} ± {retrained[1]:.2f}; "
        f"surrogate there: {sur[0]:.2f} ± {sur[1]:.2f}.",
        "",
        f"Deterministic action at x = {np.round(PROBE_STATE, 3).tolist()}: relative distance to the optimal action, "
        f"median {np.median(error):.1%}, max {error.max():.1%} over λ in [{spec.anchors[0]:g}, {spec.anchors[-1]:g}] "
        "(the anchors are PPO agents, so their own error is included).",
        "",
        "Stage wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + ".",
        "",
        "![return and action vs weight](demo.png)",
    ]
    if cross.warnings:
        lines += ["", "Anchor check warnings:", *[f"- {w}" for w in cross.warnings]]
    report = out / "report.md"
    with atomic_write(report, "w") as f:
        f.write("\n".join(lines) + "\n")

    writer = SummaryWriter(str(run_dir / "tb" / "demo"))
    for i, w in enumerate(sorted(rows["surrogate"])):
        for name in rows:
            writer.add_scalar(f"return/{name}", rows[name][w][0], i)
        writer.add_scalar("weight", w, i)
    writer.add_figure("demo", fig)
    writer.add_text("report", "\n".join(lines))
    writer.close()
    plt.close(fig)
    return report
