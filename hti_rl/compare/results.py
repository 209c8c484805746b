"""``results.json``: a comparison's numbers, machine-readable, beside its ``report.md`` (schema: README, "results.json").

For each method and held-out weight ``mean``, ``ci95`` (half-width of the 95% Student-t interval) and
``episodes``; every anchor re-weighed at each held-out weight as ``anchor:<weight>``; each retrained seed
as ``retrained:<seed>`` and the seeds pooled as ``retrained``. Weights key their entries as ``f"{λ:g}"`` (a weight
vector: its entries joined by commas, ``"0.03,1"``); a grid comparison adds ``weight_names`` and ``plane``.
Computes nothing: it reads the results :func:`hti_rl.compare.run.run_compare` hands the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hti_rl.io import write_json
from hti_rl.runs import weight_label

FORMAT = "hti-rl-results"
VERSION = 1


def results_document(results: dict[str, Any]) -> dict[str, Any]:
    """The ``results.json`` document of a comparison's results."""
    exp, spec = results["experiment"], results["spec"]
    methods: dict[str, dict[str, dict[str, float | int]]] = {}

    def put(name: str, weight: float, mean: float, ci: float, episodes: int) -> None:
        methods.setdefault(name, {})[weight_label(weight)] = {"mean": float(mean), "ci95": float(ci), "episodes": int(episodes)}

    for name, by_weight in results["rows"].items():
        for w, row in by_weight.items():
            put(name, w, row["mean"], row["ci"], results["episodes"])
    anchor_at = results.get("anchor_at")
    if anchor_at is None:  # a scalar comparison: each anchor's curve holds every held-out weight
        grid = list(results["grid"])
        anchor_at = {a: {w: curve[grid.index(w)] for w in results["weights"]} for a, curve in results["anchor_curves"].items()}
    for anchor, by_weight in anchor_at.items():
        for w, (mean, ci) in by_weight.items():
            put(f"anchor:{weight_label(anchor)}", w, mean, ci, results["episodes"])
    for w, retrained in results["retrained"].items():
        for i, (mean, ci, n) in enumerate(zip(retrained["seed_means"], retrained["seed_cis"], retrained["seed_episodes"])):
            put(f"retrained:{i}", w, mean, ci, n)
        put("retrained", w, retrained["mean"], retrained["ci"], sum(retrained["seed_episodes"]))
    deployed = {weight_label(w): {k: check[k] for k in ("candidate", "why", "best_anchor", "difference", "difference_ci", "holds")}
                for w, check in (results.get("deployed") or {}).items()}
    compute = {name: {weight_label(w): {"steps": (m or {}).get("steps"), "wall_time_s": (m or {}).get("wall_time_s")} for w, m in by_weight.items()}
               for name, by_weight in (results.get("refine_metas") or {}).items()}
    for m in results["anchor_metas"]:
        compute.setdefault("anchors", {})[weight_label(m["weight"])] = {"steps": m.get("steps"), "wall_time_s": m.get("wall_time_s")}
    for w, metas in results["retrained_metas"].items():
        for i, m in enumerate(metas):
            compute.setdefault(f"retrained:{i}", {})[weight_label(w)] = {"steps": m.get("steps"), "wall_time_s": m.get("wall_time_s")}
    return {
        "format": FORMAT, "version": VERSION, "experiment": exp.name, "task": spec.name, "env_id": spec.env_id,
        "task_fingerprint": spec.fingerprint(), "weight_scale": spec.weight_scale, "anchors": list(spec.anchors),
        "held_out": list(spec.held_out), "confidence": 0.95, "deterministic": True, "methods": methods,
        **({"deployed": deployed} if deployed else {}), "compute": compute,
        **({"weight_names": list(spec.grid.names)} if spec.is_vector else {}),
        **({"plane": plane_document(results["plane"], results["episodes"])} if results.get("plane") else {}),
    }


def plane_document(plane: dict[str, Any], episodes: int) -> dict[str, Any]:
    """The weight plane of a grid comparison: per calibration grid vector, ``deployed`` (and what it deployed), the
    best anchor there (and which) and, on LQR, the exact optimum, each ``{mean, ci95, episodes}``."""
    def entry(stat: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"mean": float(stat["mean"]), "ci95": float(stat["ci"]), "episodes": int(episodes), **extra}

    return {
        "weights": [list(w) for w in plane["weights"]],
        "deployed": [entry(d, candidate=d["candidate"]) for d in plane["deployed"]],
        "best_anchor": [entry(b, anchor=b["name"]) for b in plane["best_anchor"]],
        **({"optimum": [entry(o) for o in plane["optimum"]]} if "optimum" in plane else {}),
    }


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/results.json`` atomically; return its path."""
    path = Path(out_dir) / "results.json"
    write_json(path, results_document(results))
    return path
