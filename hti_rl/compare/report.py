"""Comparison reports: markdown tables and the return-vs-weight figure.

Reads the results of :func:`hti_rl.compare.run.run_compare` (plain dicts and lists) and writes
``report.md``, ``returns.png`` and ``results.json`` (:mod:`hti_rl.compare.results`); computes nothing
that needs an env or a policy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hti_rl.compare.results import write_results
from hti_rl.io import atomic_write
from hti_rl.runs import weight_label

TARGET_REGRET = 0.02  # the surrogate's target: within 2% of the retrained-vs-random gap
SHARED_REFERENCE = "shared/fine-tuned"  # an agent trained at the held-out weight: a reference, not a method


def is_reference(name: str) -> bool:
    """Rows that are references rather than methods (the exact optimum, the shared start fine-tuned at λ)."""
    return name.startswith("optimum") or name == SHARED_REFERENCE


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float, digits: int = 4) -> str:
    """A number in ``digits`` significant digits; NaN as ``–``."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def pct(x: float) -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:+.2f}%"


def returns_figure(results: dict[str, Any]) -> Any:
    """Return vs weight: every anchor's curve re-weighed, methods and retrained mean ± CI at held-out weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = results["spec"]
    grid = results["grid"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for a, curve in results["anchor_curves"].items():
        mean = np.array([c[0] for c in curve])
        half = np.array([c[1] for c in curve])
        (line,) = ax.plot(grid, mean, lw=1, alpha=0.8, label=f"anchor λ={a:g} (re-weighed)")
        ax.fill_between(grid, mean - half, mean + half, color=line.get_color(), alpha=0.1)
        ax.plot([a], [mean[grid.index(a)]], "*", color=line.get_color(), ms=12)
    if results.get("optimum_curve"):
        ax.plot(grid, [c[0] for c in results["optimum_curve"]], "k--", lw=1, label=f"exact optimum (γ={results['gamma']:g})")
    ws = results["weights"]
    retrained = results["retrained"]
    ax.errorbar(ws, [retrained[w]["mean"] for w in ws], yerr=[retrained[w]["ci"] for w in ws], fmt="s", color="black",
                ms=7, capsize=4, label="retrained (seeds pooled, 95% CI)", zorder=5)
    for w in ws:
        ax.plot([w] * len(retrained[w]["seed_means"]), retrained[w]["seed_means"], "x", color="grey", ms=6)
    names = list(results["rows"])
    offsets = np.linspace(-0.25, 0.25, len(names)) if len(names) > 1 else [0.0]
    # Colours unlike the anchors' (the default cycle): tab20 from its 9th entry; shared-start rows as diamonds.
    palette = [plt.get_cmap("tab20")(i) for i in range(8, 20)]
    for i, (off, name) in enumerate(zip(offsets, names)):
        rows = results["rows"][name]
        xs = [w * math.exp(0.12 * off) if spec.weight_scale == "log" else w + 0.12 * off for w in ws]
        ax.errorbar(xs, [rows[w]["mean"] for w in ws], yerr=[rows[w]["ci"] for w in ws], fmt="D" if name.startswith("shared/") else "o",
                    ms=4, capsize=2, color=palette[i % len(palette)], label=name)
    for a in spec.anchors:
        ax.axvline(a, color="grey", lw=0.5, ls=":")
    for i, w in enumerate(ws):  # a band behind the methods' points at each held-out weight
        ax.axvline(w, color="#31a354", lw=8, alpha=0.18, zorder=0, label="held-out weight" if i == 0 else None)
    ax.set(xscale="log" if spec.weight_scale == "log" else "linear", xlabel="weight λ (dotted: anchors)", ylabel="return at λ",
           title=f"{spec.name}: return vs weight ({results['episodes']} episodes per point)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def method_table(results: dict[str, Any], w: float) -> str:
    """One held-out weight: every method's return, regret and W2, beside the retrained agents and the floor."""
    retrained = results["retrained"][w]
    lqr = "floor_optimum" in results
    shared = bool(results.get("shared"))
    headers = ["method", "return (95% CI)", "regret", "W2 to retrained"] + (["W2 to optimum"] if lqr else []) \
        + (["W2 to shared fine-tune"] if shared else [])
    rows = []
    for name, by_weight in results["rows"].items():
        r = by_weight[w]
        rows.append([name, f"{fmt(r['mean'])} ± {fmt(r['ci'], 2)}", pct(r["regret"]), fmt(r["w2"], 3)]
                    + ([fmt(r.get("w2_optimum"), 3)] if lqr else []) + ([fmt(r.get("w2_shared"), 3)] if shared else []))
    seeds = ", ".join(fmt(m) for m in retrained["seed_means"])
    rows.append([f"**retrained** ({len(retrained['seed_means'])} seeds: {seeds})", f"{fmt(retrained['mean'])} ± {fmt(retrained['ci'], 2)}",
                 "0 (by definition)", f"{fmt(results['floor'][w], 3)} (seed-to-seed floor)"]
                + ([fmt(results["floor_optimum"][w], 3)] if lqr else []) + (["–"] if shared else []))
    rows.append(["random", fmt(results["random"][w]), "+100% (by definition)", "–"] + (["–"] if lqr else []) + (["–"] if shared else []))
    return markdown_table(headers, rows)


def verdict(results: dict[str, Any]) -> list[str]:
    """Lines saying, per CLOT variant and held-out weight, whether the target holds, with the numbers."""
    lines = []
    rows = results["rows"]
    baselines = [n for n in rows if not n.startswith("clot/") and not is_reference(n) and n != "deployed"]
    for name in [n for n in rows if n.startswith("clot/")]:
        for w in results["weights"]:
            r = rows[name][w]
            within = r["regret"] <= TARGET_REGRET
            best_base = max(baselines, key=lambda b: rows[b][w]["mean"]) if baselines else None
            beats = best_base is None or r["mean"] > rows[best_base][w]["mean"]
            spread = results["retrained"][w]["seed_spread"]
            lines.append(
                f"- {name} at λ={weight_label(w)}: regret {pct(r['regret'])} ({'within' if within else 'NOT within'} 2%); "
                + (f"{'beats' if beats else 'does NOT beat'} the best baseline ({best_base}: {fmt(rows[best_base][w]['mean'])} vs {fmt(r['mean'])}); "
                   if best_base else "")
                + f"retrained seed spread {fmt(spread, 3)} (= {pct(spread / max(abs(results['retrained'][w]['mean'] - results['random'][w]), 1e-12))} of the gap)."
            )
    return lines


def winners(results: dict[str, Any]) -> list[str]:
    """Lines naming, per held-out weight, the method with the highest mean return (references, the exact
    optimum and the shared start fine-tuned at λ, are left out) and the methods whose 95% CI overlaps its
    CI (not separable from it); then the surrogate against each peer, and on shared-start anchors the
    surrogate against parameter interpolation."""
    rows = results["rows"]
    methods = [n for n in rows if not is_reference(n)]
    lines = []
    for w in results["weights"]:
        if not methods:
            break
        best = max(methods, key=lambda n: rows[n][w]["mean"])
        b = rows[best][w]
        ties = [n for n in methods if n != best and b["mean"] - rows[n][w]["mean"] <= b["ci"] + rows[n][w]["ci"]]
        retrained = results["retrained"][w]
        runner_up = max((n for n in methods if n != best), key=lambda n: rows[n][w]["mean"], default=None)
        lead = f" ahead of {runner_up} by {fmt(b['mean'] - rows[runner_up][w]['mean'])}" if runner_up else ""
        lines.append(
            f"- λ={weight_label(w)}: **{best}** {fmt(b['mean'])} ± {fmt(b['ci'], 2)}{lead} (retrained {fmt(retrained['mean'])} ± "
            f"{fmt(retrained['ci'], 2)}); " + (f"CIs overlap with {', '.join(ties)}." if ties else "its CI overlaps no other method's.")
        )
        surrogate = next((n for n in ("clot/full", *sorted(methods)) if n in methods and n.startswith("clot/")), None)
        shared_surrogate = next((n for n in sorted(methods) if n.startswith("shared/clot/")), None)
        pairs = [(surrogate, peer) for peer in ("conditioned", "conditioned_x2", "shared/param_interp")]
        pairs.append((shared_surrogate, "shared/param_interp"))  # equal anchors
        for a, b in pairs:
            if a and a in methods and b in methods:
                lines.append("  - " + head_to_head(rows, w, a, b))
    return lines


def head_to_head(rows: dict[str, Any], w: float, a: str, b: str) -> str:
    """"a m ± ci vs b m ± ci: <leader> ahead by d (CIs overlap)" at held-out weight ``w``."""
    s, p = rows[a][w], rows[b][w]
    who = a if s["mean"] >= p["mean"] else b
    return (f"{a} {fmt(s['mean'])} ± {fmt(s['ci'], 2)} vs {b} {fmt(p['mean'])} ± {fmt(p['ci'], 2)}: "
            f"{who} ahead by {fmt(abs(s['mean'] - p['mean']))}" + (" (CIs overlap)" if abs(s["mean"] - p["mean"]) <= s["ci"] + p["ci"] else ""))


def shared_section(results: dict[str, Any]) -> list[str]:
    """Shared-start anchors against anchors from scratch: compute and quality (return at their own weight),
    then parameter interpolation against the surrogate on the same shared-start anchors."""
    shared, spec = results["shared"], results["spec"]
    own = results["own_weight"]
    settings = shared["settings"]
    scratch_steps = [m.get("steps", 0) for m in results["anchor_metas"]]
    shared_steps = [m.get("steps", 0) for m in shared["anchor_metas"]]
    base = shared["base_meta"]
    rows = []
    for a, m_scratch, m_shared in zip(spec.anchors, results["anchor_metas"], shared["anchor_metas"]):
        (ms, cs), (mf, cf) = own["scratch"][a], own["shared"][a]
        rows.append([f"{a:g}", m_scratch.get("steps", "–"), f"{fmt(ms)} ± {fmt(cs, 2)}", f"{m_shared.get('steps', '–')} (after the base)",
                     f"{fmt(mf)} ± {fmt(cf, 2)}", f"{fmt(mf - ms, 3)}" + (" (CIs overlap)" if abs(mf - ms) <= cs + cf else "")])
    total_scratch = sum(scratch_steps)
    total_shared = base.get("steps", 0) + sum(shared_steps)
    rows.append(["**total**", total_scratch, "", f"{total_shared} (with the base's {base.get('steps', 0)})", "", ""])
    worse = [a for a in spec.anchors if own["shared"][a][0] + own["shared"][a][1] + own["scratch"][a][1] < own["scratch"][a][0]]
    better = [a for a in spec.anchors if own["shared"][a][0] - own["shared"][a][1] - own["scratch"][a][1] > own["scratch"][a][0]]
    quality = ("of equal quality at every anchor weight (every CI overlaps)" if not worse and not better else
               "; ".join(filter(None, [f"worse at λ = {', '.join(f'{a:g}' for a in worse)}" if worse else "",
                                       f"better at λ = {', '.join(f'{a:g}' for a in better)}" if better else ""])) + " (CIs apart)")
    finetuned = shared.get("finetuned_metas") or {}
    lines = [
        f"Shared start: one base agent at λ = {settings['weight']:g} ({base.get('steps', '–')} steps), "
        f"fine-tuned at each anchor weight for {settings['finetune_steps']} steps with the base's observation normaliser frozen "
        "(`hti-rl train-anchors --shared-start`). Compute in environment steps (wall times depend on what else the machine "
        "ran; they are in the meta.json files); return at the anchor's own weight, on the same episodes as above:",
        "",
        markdown_table(["anchor λ", "from scratch: steps", "return at own λ", "shared start: steps", "return at own λ",
                        "shared − scratch"], rows),
        "",
        f"Compute: the shared-start anchors took {total_shared} environment steps"
        + (f", {100 * total_shared / total_scratch:.0f}% of the from-scratch anchors' {total_scratch}" if total_scratch else "")
        + f"; they are {quality}.",
    ]
    if finetuned:
        lines += ["", f"`{SHARED_REFERENCE}` is the same base fine-tuned at the held-out weight itself ({settings['finetune_steps']} steps): "
                      "the agent a shared-start method stands in for, and the target of the column `W2 to shared fine-tune` (one "
                      "solution family, so W2 there measures error rather than a different gait)."]
    pairs = [("shared/" + n, "shared/param_interp") for n in results["rows"] if n.startswith("clot/")]
    pairs = [(a, b) for a, b in pairs if a in results["rows"] and b in results["rows"]]
    if pairs:
        lines += ["", "Parameter interpolation against the surrogate on the same shared-start anchors:", ""]
        lines += [f"- λ={w:g}: " + head_to_head(results["rows"], w, a, b) for a, b in pairs for w in results["weights"]]
    return lines


def deployed_section(results: dict[str, Any]) -> list[str]:
    """Per held-out weight: what ``deployed`` (the calibrated surrogate) deployed and why, and whether it is at least
    the best anchor there (paired difference on the comparison's episodes, 95% CI)."""
    lines = ["`deployed` is the first CLOT variant calibrated by `hti-rl calibrate` (docs/method.md §10): at each weight of a grid "
             "it keeps the surrogate unless another candidate is ahead on the calibration's choosing episodes with the paired 95% CI "
             "above zero. The calibration's episodes are disjoint from this comparison's; the check below uses this comparison's "
             "episodes, against the anchor with the best mean on them (which favours the anchor).", ""]
    rows = []
    for w, check in results["deployed"].items():
        est = check["estimate"]
        rows.append([weight_label(w), check["candidate"], check["why"], f"{fmt(est[0])} ± {fmt(est[1], 2)}" if est else "–",
                     f"{check['best_anchor']} ({fmt(check['best_anchor_mean'])})",
                     f"{fmt(check['difference'], 3)} ± {fmt(check['difference_ci'], 2)}", "yes" if check["holds"] else "**NO**"])
    cost = results.get("calibration_cost")
    if cost:
        lines[0] += (f" The calibration cost {int(cost['episodes'])} episodes ({int(cost['steps'])} environment steps), "
                     f"{fmt(cost['seconds'], 3)} s of rollouts.")
    return lines + [markdown_table(["λ", "deployed", "why", "calibration estimate", "best anchor here", "deployed − best anchor",
                                    "≥ best anchor (95% CI)"], rows)]


def training_section(results: dict[str, Any]) -> list[str]:
    """How the anchors and the retrained agents were trained."""
    spec, hp = results["spec"], results["hyperparams"]
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(hp["algo_kwargs"].items()))
    anchors = [[weight_label(m['weight']), m.get("steps", "–"), m.get("seed", "–"), fmt(m.get("wall_time_s"), 3)] for m in results["anchor_metas"]]
    retrained = [[f"{weight_label(m['weight'])} seed {i}", m.get("steps", "–"), m.get("seed", "–"), fmt(m.get("wall_time_s"), 3)]
                 for w, metas in results["retrained_metas"].items() for i, m in enumerate(metas)]
    conditioned = [[f"{name} (λ ~ U in {m.get('weight_scale', spec.weight_scale)} λ over [{m['weight_range'][0]:g}, {m['weight_range'][1]:g}], "
                    f"budget {m['budget_factor']:g} × {len(spec.anchors)} anchors)", m.get("steps", "–"), m.get("seed", "–"), fmt(m.get("wall_time_s"), 3)]
                   for name, m in results.get("conditioned_metas", {}).items()]
    return [
        f"Anchors and retrained agents: {spec.algo.upper()} ({spec.hyperparams_key} entry of {Path(spec.hyperparams_file).name}), "
        f"{hp['n_timesteps']} steps, {hp['n_envs']} envs, normalize={hp['normalize']}, seeds_per_anchor={spec.seeds_per_anchor}; "
        f"hyperparameters: {kwargs}.",
        "",
        markdown_table(["agent (λ)", "steps", "training seed", "wall time (s)"], anchors + retrained + conditioned),
    ] + ([
        "",
        "Conditioned agents: the same algorithm and hyperparameters, one agent whose observation carries the weight "
        f"({'log λ' if spec.weight_scale == 'log' else 'λ'}), drawn per episode; budget = factor × anchors × n_timesteps.",
    ] if conditioned else [])


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/report.md`` and ``out_dir/returns.png``; return the report's path."""
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    exp, spec = results["experiment"], results["spec"]
    if not spec.is_vector:  # a grid task's figure is the weight plane's heat maps (hti_rl.compare.grid_report)
        fig = returns_figure(results)
        with atomic_write(out / "returns.png") as f:
            fig.savefig(f, format="png", dpi=110)
        plt.close(fig)
    sep = "; " if spec.is_vector else ", "
    axes = f" per axis; weight vectors ({', '.join(spec.grid.names)})" if spec.is_vector else ""
    scale = "/".join(spec.weight_scale) if spec.is_vector else spec.weight_scale

    lines = [
        f"# {exp.name}: surrogate vs retrained agents and baselines ({spec.name}, {spec.env_id})",
        "",
        f"Experiment `{exp.path}`, task `{spec.path}`. Anchors λ = {sep.join(weight_label(a) for a in spec.anchors)} "
        f"({scale} weight scale{axes}); held-out λ = {sep.join(weight_label(w) for w in spec.held_out)}. "
        f"Returns: deterministic actions, {exp.eval_episodes} episodes × {len(exp.eval_seeds)} evaluation seeds = {results['episodes']} "
        f"episodes per entry, reward at that λ, mean ± 95% Student-t CI. Regret = (retrained − method) / (retrained − random), "
        f"target ≤ {TARGET_REGRET:.0%}; the retrained return pools {exp.retrained_seeds} seeds. W2: per-state exact W2 (POT) between env-action "
        f"distributions ({exp.w2_samples} samples per state) on {results['w2_states']} of the dataset's {results['dataset_states']} states, "
        "mean over states, averaged over the retrained seeds; the retrained seeds' W2 to each other is the floor below which no method can be judged.",
    ]
    if "floor_optimum" in results:
        lines += ["", f"LQR: `optimum γ=1` is the undiscounted Riccati gain (maximises the return evaluated here); "
                  f"`optimum γ={results['gamma']:g}` uses PPO's discount (what the anchors' objective converges to), and "
                  "`W2 to optimum` is measured against that one (a Dirac at −K(λ)x)."]
    for w in results["weights"]:
        lines += ["", f"## λ = {weight_label(w)}", "", method_table(results, w)]
    lines += ["", "## Best method per held-out weight", "", *winners(results)]
    if results.get("deployed"):
        lines += ["", "## Deployed: the calibrated surrogate", "", *deployed_section(results)]
    if results.get("shared"):
        lines += ["", "## Shared-start anchors and parameter interpolation (rewarded soups)", "", *shared_section(results)]
    for title, body in results.get("sections", []):  # e.g. the refining rows (hti_rl.compare.refining)
        lines += ["", f"## {title}", "", *body]
    lines += ["", "## Verdict (target: regret ≤ 2% and above every baseline)", "", *verdict(results)]
    lines += ["", "## Training", "", *training_section(results)]
    if results["cross_warnings"]:
        lines += ["", "Anchor check warnings (`hti-rl check-anchors`):", "", *[f"- {x}" for x in results["cross_warnings"]]]
    lines += ["", "## Stage wall times", "", "Of the run that wrote this report (`runs/<task>/compare/timings.json`): a stage that an earlier run "
              "finished is skipped and shows about 0 here; what every agent cost is in the training line below (meta.json).", "", markdown_table(["stage", "seconds"], [[k, fmt(v, 4)] for k, v in results["timings"].items()])]
    anchor_s = sum(m.get("wall_time_s", float("nan")) for m in results["anchor_metas"])
    retrain_s = [m.get("wall_time_s", float("nan")) for ms in results["retrained_metas"].values() for m in ms]
    conditioned_s = "".join(f", {name} {fmt(m.get('wall_time_s', float('nan')), 4)} s" for name, m in results.get("conditioned_metas", {}).items())
    lines += ["", f"Training, summed over agents (meta.json): anchors {fmt(anchor_s, 4)} s, retrained agents {fmt(sum(retrain_s), 4)} s "
              f"({fmt(float(np.mean(retrain_s)), 3)} s per agent){conditioned_s}."]
    if getattr(exp, "notes", ""):
        lines += ["", "## Notes", "", exp.notes.strip()]
    lines += [""] if spec.is_vector else ["", "![return vs weight](returns.png)", ""]
    report = out / "report.md"
    with atomic_write(report, "w") as f:
        f.write("\n".join(lines))
    write_results(results, out)
    return report
