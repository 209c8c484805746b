"""The weight plane of a grid comparison (:func:`hti_rl.compare.grid.plane`): heat maps and their section.

``plane.png``: the return of ``deployed``, of the best anchor re-weighed there and their difference at every
calibration grid vector (on LQR also the exact optimum), one cell per vector, anchors starred and held-out
vectors ringed. Computes nothing that needs an env or a policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.compare.report import fmt, markdown_table
from hti_rl.deploy.figure import heat_map
from hti_rl.io import atomic_write

FIGURE = "plane.png"


def plane_arrays(results: dict[str, Any]) -> tuple[list[list[float]], dict[str, np.ndarray]]:
    """(the per-axis values [2 lists], maps name -> [n1, n2] array) of the plane's vectors (a product grid)."""
    plane = results["plane"]
    weights = [tuple(w) for w in plane["weights"]]
    axes = [sorted({w[i] for w in weights}) for i in range(2)]
    maps = {"deployed": np.full((len(axes[0]), len(axes[1])), np.nan), "best anchor": np.full((len(axes[0]), len(axes[1])), np.nan)}
    if "optimum" in plane:
        maps["exact optimum (γ=1)"] = np.full_like(maps["deployed"], np.nan)
    for k, w in enumerate(weights):
        i, j = axes[0].index(w[0]), axes[1].index(w[1])
        maps["deployed"][i, j] = plane["deployed"][k]["mean"]
        maps["best anchor"][i, j] = plane["best_anchor"][k]["mean"]
        if "optimum" in plane:
            maps["exact optimum (γ=1)"][i, j] = plane["optimum"][k]["mean"]
    maps["deployed − best anchor"] = maps["deployed"] - maps["best anchor"]
    return axes, maps


def plane_figure(results: dict[str, Any]) -> Any:
    """Heat maps over the weight plane (rows: axis 1, columns: axis 2), values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = results["spec"]
    names = spec.grid.names
    axes, maps = plane_arrays(results)
    anchors = {tuple(a) for a in spec.anchors}
    held_out = {tuple(h) for h in spec.held_out}
    shared = [m for m in maps if m != "deployed − best anchor"]
    low = min(np.nanmin(maps[m]) for m in shared)
    high = max(np.nanmax(maps[m]) for m in shared)
    fig, panels = plt.subplots(1, len(maps), figsize=(4.6 * len(maps), 4.4), squeeze=False)
    for ax, (title, values) in zip(panels[0], maps.items()):
        difference = title == "deployed − best anchor"
        bound = float(np.nanmax(np.abs(values))) or 1.0
        text = {(i, j): ("★ " if (a, b) in anchors else "○ " if (a, b) in held_out else "") + fmt(values[i, j], 3)
                for i, a in enumerate(axes[0]) for j, b in enumerate(axes[1])}
        heat_map(ax, values, axes, list(names), title, text, (-bound, bound) if difference else (low, high),
                 cmap="RdBu" if difference else "viridis", text_color="black" if difference else "white")
    fig.suptitle(f"{spec.name}: return over the weight plane ({results['episodes']} episodes per cell; ★ anchor, ○ held out)")
    fig.tight_layout()
    return fig


def write_plane_figure(results: dict[str, Any], out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig = plane_figure(results)
    path = out / FIGURE
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def short_label(weight: Any) -> str:
    """A weight vector for people: each entry to 4 significant digits (results.json keeps them exact)."""
    return ",".join(f"{float(x):.4g}" for x in weight)


def plane_section(results: dict[str, Any]) -> list[str]:
    """The report's section: what was measured, where ``deployed`` is below the best anchor (95% CIs apart), the table."""
    plane = results["plane"]
    shortcut = plane["shortcut"]
    rows, below = [], []
    for k, w in enumerate(plane["weights"]):
        d, b = plane["deployed"][k], plane["best_anchor"][k]
        diff = d["mean"] - b["mean"]
        if diff + d["ci"] + b["ci"] < 0:
            below.append(short_label(w))
        rows.append([short_label(w), d["candidate"], f"{fmt(d['mean'])} ± {fmt(d['ci'], 2)}", f"{b['name']} {fmt(b['mean'])} ± {fmt(b['ci'], 2)}",
                     fmt(diff, 3)] + ([f"{fmt(plane['optimum'][k]['mean'])}"] if "optimum" in plane else []))
    lines = [
        f"At every vector of the deployed policy's calibration grid ({len(plane['weights'])} vectors, the product of the axes' grids), "
        f"on this comparison's {results['episodes']} episodes: the return of `deployed` and of the anchor with the best mean there "
        "(a choice made on these episodes, so it favours the anchor). Where `deployed` deploys an anchor, its episodes are that "
        f"anchor's rollouts (the same deterministic actions): checked at {shortcut['checked']} held-out vectors where it deploys an "
        f"anchor and rolled out itself ({shortcut['held']} equal; where one differs, e.g. float differences between the two code paths "
        f"that a chaotic simulator amplifies, every plane vector is rolled out); {shortcut['rolled_out']} plane vectors were rolled out with `deployed`.",
        "",
        f"`deployed` below the best anchor with the two CIs apart at: {', '.join(below) if below else 'no vector'}.",
        "",
        markdown_table(["λ", "deployed deploys", "deployed", "best anchor here", "deployed − best"] + (["exact optimum (γ=1)"] if "optimum" in plane else []), rows),
        "",
        f"![return over the weight plane]({FIGURE})",
    ]
    return lines
