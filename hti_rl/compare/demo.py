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

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hti_rl.io import atomic_write, write_json
from hti_rl.runs import DEFAULT_ROOT, RunDir
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage
from hti_rl.training.jobs import CHECKPOINTS_PER_RUN, AnchorJob

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
def run_demo(run_root: str | Path = DEFAULT_ROOT, workers: int = 2, force: bool = False) -> Path:
    """Run every stage of the pipeline on the demo task; return the report's path.

    A stage whose files are up to date is reused, and the report keeps the wall time it took when it
    ran (``demo/timings.json``), marked as from an earlier run.

    :param run_root: where ``demo/`` goes.
    :param workers: anchors trained at once.
    :param force: redo finished stages.
    """
    from hti_rl.cross_eval import stale_reason
    from hti_rl.dataset import PolicyDataset, record
    from hti_rl.methods.surrogate import SurrogatePolicy, clot_config, fit
    from hti_rl.quality import check_anchors
    from hti_rl.quality_report import print_report
    from hti_rl.spec.load import load_task
    from hti_rl.training.anchors import train_anchors

    spec = load_task(write_demo_spec(run_root))
    run_dir = RunDir.of(spec, run_root).path
    clock = _StageClock(run_dir / "demo" / "timings.json")

    with clock("train anchors", reused=not force and all(RunDir.of(spec, run_root).is_finished(w) for w in spec.anchors)):
        train_anchors(spec, run_root, workers=workers, force=force)

    with clock("check anchors", reused=not force and stale_reason(spec, run_root) is None):
        cross = check_anchors(spec, run_root, force=force)
        print_report(cross)

    dataset = _reuse(RunDir.of(spec, run_root).dataset, lambda p: PolicyDataset.load(p, spec), force)
    with clock("record", reused=dataset is not None):
        dataset = dataset if dataset is not None else record(spec, run_root)

    policy = _reuse(RunDir.of(spec, run_root).surrogate, lambda p: SurrogatePolicy.load(p, spec.fingerprint()), force)
    with clock("fit", reused=policy is not None):
        policy = policy if policy is not None else fit(spec, run_root, clot_config(DEMO_CLOT, seed=spec.seed), dataset=dataset)

    job = retrained_job(spec, run_root)
    with clock(f"retrain one agent at λ = {RETRAINED_WEIGHT:g}", reused=not force and (job.directory / "meta.json").exists()):
        train_retrained_agent(job, force)

    with clock("deploy and compare", reused=False):
        results = _compare(spec, run_root, policy)

    report = _write_report(spec, run_dir, results, clock, cross)
    clock.save()
    print(f"\nreport: {report}\nplot:   {report.with_name('demo.png')}\nTensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return report


class _StageClock:
    """Wall time of each demo stage; a reused stage keeps the time it took when it ran (from ``path``).

    :param path: ``timings.json`` of an earlier run (``{stage: seconds}``), read if it exists.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            earlier = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            earlier = {}
        self.earlier = {str(k): float(v) for k, v in earlier.items()} if isinstance(earlier, dict) else {}
        self.seconds: dict[str, float] = {}
        self.reused: set[str] = set()

    @contextlib.contextmanager
    def __call__(self, name: str, reused: bool) -> Iterator[None]:
        print(f"\n== {name}" + (" (up to date, reused)" if reused else ""), flush=True)
        started = time.perf_counter()
        yield
        if reused and name in self.earlier:
            self.seconds[name] = self.earlier[name]
            self.reused.add(name)
        else:  # to the tenth the report prints, so that a rerun prints the same number
            self.seconds[name] = round(time.perf_counter() - started, 1)

    def text(self) -> str:
        """``"train anchors 80.1 s (earlier run), …"``."""
        return ", ".join(f"{k} {v:.1f} s" + (" (earlier run)" if k in self.reused else "") for k, v in self.seconds.items())

    def save(self) -> None:
        write_json(self.path, dict(self.seconds))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _RetrainedJob(AnchorJob):
    """The demo's agent retrained at λ = 3: the one anchor of the spec with ``anchors: [3]``, trained with
    that anchor's seed in ``<task>/retrained/<task>/anchors/w=3`` (where every demo has kept it), logging
    under the task's one TensorBoard root ``<task>/tb`` as ``retrained_w=3``.

    :param task_root: the demo's run root (``<task_root>/<task>/tb`` is the TensorBoard root).
    """

    task_root: str = DEFAULT_ROOT

    @property
    def tb_root(self) -> Path:
        return RunDir.of(self.spec, self.task_root).tb()

    @property
    def tb_name(self) -> str:
        return f"retrained_w={self.weight:g}"


def retrained_job(spec: TaskSpec, run_root: str | Path) -> AnchorJob:
    """The job of the demo's agent retrained at λ = 3 (see :class:`_RetrainedJob`)."""
    retrained_spec = dataclasses.replace(spec, anchors=(RETRAINED_WEIGHT,))
    every = max(int(spec.hyperparams()["n_timesteps"]) // CHECKPOINTS_PER_RUN, 1)
    return _RetrainedJob(spec=retrained_spec, index=0, run_root=str(RunDir.of(spec, run_root).path / "retrained"),
                         checkpoint_every=every, task_root=str(run_root))


def train_retrained_agent(job: Any, force: bool) -> None:
    """Train (or resume, or skip when finished) the demo's retrained agent behind a ``retrain`` progress bar."""
    import shutil

    from hti_rl.io import RunLock
    from hti_rl.training.jobs import checkpoint_steps
    from hti_rl.training.runner import run_jobs

    with RunLock(RunDir.of(job.spec, job.run_root).anchors, "hti-rl demo (retrained agent)"):
        if force:
            (job.directory / "meta.json").unlink(missing_ok=True)
            shutil.rmtree(job.directory / "checkpoints", ignore_errors=True)
        todo = [] if (job.directory / "meta.json").exists() else [job]
        run_jobs(todo, 1, int(job.spec.hyperparams()["n_timesteps"]), True, description="retrain",
                 start={j.key: checkpoint_steps(j) for j in todo})


def _compare(spec: TaskSpec, run_root: str | Path, policy: Any) -> dict[str, Any]:
    """Returns of every method on the weight grid and at the held-out weights, and the action paths."""
    from hti_rl.envs.lqr import OptimalPolicy
    from hti_rl.evaluate import mean_ci, returns_at, rollout_components
    from hti_rl.training.store import load_anchor_actor

    episodes, seed = spec.eval_episodes, spec.seed + 1000
    make_env = lambda: spec.make_env(spec.anchors[0])  # noqa: E731  (the weight does not change the dynamics)
    weigh = lambda comps, w: mean_ci(returns_at(comps, spec.reward.weighted, spec.reward.fixed, w))  # noqa: E731

    anchors = {w: rollout_components(load_anchor_actor(spec, w, run_root), make_env, episodes, seed) for w in spec.anchors}
    job = retrained_job(spec, run_root)
    retrained_actor = load_anchor_actor(job.spec, RETRAINED_WEIGHT, job.run_root)
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
        "eval_seed": seed,
        "sweep": sweep,
        "path_surrogate": np.array(path_surrogate),
        "path_optimum": np.array(path_optimum),
    }


def demo_figure(spec: TaskSpec, results: dict[str, Any]) -> Any:
    """Left: return against weight (anchors re-weighed, optimum, surrogate, retrained agent), anchor and
    held-out weights marked. Right: the surrogate's and the optimal deterministic action at one state as
    λ sweeps the anchor range, anchors and held-out weights labelled with their λ."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows, retrained = results["rows"], results["retrained"]
    fig = Figure(figsize=(11, 4.6))
    FigureCanvasAgg(fig)
    ax_ret, ax_act = fig.subplots(1, 2)
    # Fixed colours: anchors in blues, the surrogate orange, the retrained agent purple, the optimum black.
    blues = ["#9ecae1", "#4292c6", "#08519c", "#08306b"]
    for i, (a, curve) in enumerate(results["anchor_curves"].items()):
        ws = sorted(curve)
        ax_ret.plot(ws, [curve[w][0] for w in ws], lw=0.9, color=blues[i % len(blues)], label=f"anchor λ={a:g} (re-weighed)")
    ws = sorted(rows["optimum"])
    ax_ret.plot(ws, [rows["optimum"][w][0] for w in ws], "--", color="black", lw=1, label="exact optimum")
    ws = sorted(rows["surrogate"])
    ax_ret.plot(ws, [rows["surrogate"][w][0] for w in ws], "o-", color=SURROGATE_COLOUR, ms=4, label="surrogate")
    ax_ret.errorbar([RETRAINED_WEIGHT], [retrained[0]], yerr=[retrained[1]], fmt="s", color=RETRAINED_COLOUR, ms=7, capsize=4,
                    label=f"retrained at λ={RETRAINED_WEIGHT:g} (95% CI)", zorder=5)
    for a in spec.anchors:
        ax_ret.axvline(a, color="grey", lw=0.5, ls=":")
    for i, w in enumerate(spec.held_out):
        ax_ret.axvline(w, color=HELD_OUT_COLOUR, lw=6, alpha=0.25, zorder=0, label="held-out weight" if i == 0 else None)
    ax_ret.set(xscale="log", xlabel="weight λ (dotted: anchors)", ylabel="return at λ", title="Return vs weight")
    ax_ret.legend(fontsize=7)

    ps, po, sweep = results["path_surrogate"], results["path_optimum"], results["sweep"]
    ax_act.plot(po[:, 0], po[:, 1], "--", color="black", lw=1, label="optimal action u*(λ)")
    ax_act.plot(ps[:, 0], ps[:, 1], "-", color=SURROGATE_COLOUR, label="surrogate action")
    for kind, weights, marker, colour in (("anchor", spec.anchors, "o", blues[2]), ("held out", spec.held_out, "D", HELD_OUT_COLOUR)):
        idx = [int(np.argmin(np.abs(np.log(sweep) - np.log(w)))) for w in weights]
        ax_act.plot(ps[idx, 0], ps[idx, 1], marker, color=colour, ms=6, label=f"{kind}s" if kind == "anchor" else kind)
        for w, j in zip(weights, idx):
            ax_act.annotate(f"λ={w:g}", (ps[j, 0], ps[j, 1]), textcoords="offset points", xytext=(6, 4), fontsize=7, color=colour)
    ax_act.set(xlabel="u₁", ylabel="u₂",
               title=f"Deterministic action at x = {np.round(PROBE_STATE, 2).tolist()}\nas λ sweeps {spec.anchors[0]:g} → {spec.anchors[-1]:g}")
    ax_act.legend(fontsize=7)
    fig.tight_layout()
    return fig


SURROGATE_COLOUR, RETRAINED_COLOUR, HELD_OUT_COLOUR = "#e6550d", "#756bb1", "#31a354"


def _write_report(spec: TaskSpec, run_dir: Path, results: dict[str, Any], clock: _StageClock, cross: Any) -> Path:
    """Write ``demo/report.md`` and ``demo/demo.png`` and log both to TensorBoard."""
    from torch.utils.tensorboard import SummaryWriter

    rows, retrained = results["rows"], results["retrained"]
    fig = demo_figure(spec, results)
    out = run_dir / "demo"
    with atomic_write(out / "demo.png") as f:
        fig.savefig(f, format="png", dpi=110)
    ps, po = results["path_surrogate"], results["path_optimum"]
    error = np.linalg.norm(ps - po, axis=1) / np.linalg.norm(po, axis=1)
    seed = results["eval_seed"]

    lines = [
        "# hti-rl demo: 2-D LQR",
        "",
        f"Anchors at λ = {', '.join(f'{a:g}' for a in spec.anchors)} (PPO, {spec.hyperparams()['n_timesteps']} steps each); "
        f"held-out λ = {', '.join(f'{w:g}' for w in spec.held_out)}; {spec.eval_episodes} episodes per entry, mean ± 95% CI.",
        f"Every entry uses the same start states: deterministic actions, episodes reset with seeds {seed}…{seed + spec.eval_episodes - 1}. "
        "`hti-rl check-anchors` evaluates on start states of its own (it prints their seeds), so its numbers for an anchor differ "
        "from this table's by start-state luck.",
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
        "Stage wall times: " + clock.text() + ".",
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
    return report
