"""The calibration figure: estimated return against weight for every candidate (95% CI bands), the
deployed envelope, and the anchor and held-out weights marked; on a two-axis grid, heat maps over the
weight plane instead. Reads a :class:`Calibration` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.io import atomic_write
from hti_rl.methods.calibration import Calibration


def calibration_figure(calibration: Calibration) -> Any:
    """-> a matplotlib figure of the calibration (estimating episodes, which made no choice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(calibration.points[0].weight, tuple):
        return grid_figure(calibration)

    grid = np.array(calibration.grid)
    fig, ax = plt.subplots(figsize=(8, 5))
    names = sorted({n for p in calibration.points for n in p.estimate}, key=lambda n: (not n.startswith("anchor:"), n))
    for name in names:
        stats = np.array([p.estimate.get(name, (np.nan, np.nan)) for p in calibration.points])
        (line,) = ax.plot(grid, stats[:, 0], lw=1.2 if name.startswith("anchor:") else 1.6, ls="-" if name.startswith("anchor:") else "--",
                          label=name)
        ax.fill_between(grid, stats[:, 0] - stats[:, 1], stats[:, 0] + stats[:, 1], color=line.get_color(), alpha=0.12)
    deployed = np.array([p.estimate[p.chosen] for p in calibration.points])
    ax.plot(grid, deployed[:, 0], color="black", lw=2.5, alpha=0.6, label="deployed (the choice's estimate)", zorder=4)
    for p, (m, _) in zip(calibration.points, deployed):
        if p.chosen != "surrogate":
            ax.annotate(p.chosen.replace("anchor:", "a"), (p.weight, m), fontsize=6, textcoords="offset points", xytext=(0, 6), ha="center")
    for i, a in enumerate(calibration.anchors):
        ax.axvline(a, color="grey", lw=0.6, ls=":", label="anchor weights" if i == 0 else None)
    for i, w in enumerate(calibration.held_out):
        ax.axvline(w, color="tab:red", lw=0.6, ls="--", alpha=0.6, label="held-out weights" if i == 0 else None)
    ax.set(xscale=calibration.weight_scale, xlabel="weight λ", ylabel="estimated return at λ",
           title=f"{calibration.task}: calibration ({calibration.episodes} estimating episodes per point, 95% CI)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def grid_figure(calibration: Calibration) -> Any:
    """Two-axis grid: the estimate of what is deployed and of the plain surrogate at every grid vector (rows: axis 1,
    columns: axis 2), the deployed candidate written in its cell (``a<w>``: an anchor, ``s``: the surrogate)."""
    import matplotlib.pyplot as plt

    weights = [tuple(p.weight) for p in calibration.points]
    if len(weights[0]) != 2:
        raise ValueError(f"the calibration figure draws one or two weight axes, not {len(weights[0])}")
    axes = [sorted({w[i] for w in weights}) for i in range(2)]
    names = list(calibration.weighted) if not isinstance(calibration.weighted, str) else ["axis 1", "axis 2"]
    maps = {"deployed (the choice's estimate)": np.full((len(axes[0]), len(axes[1])), np.nan)}
    maps["plain surrogate"] = np.full_like(maps["deployed (the choice's estimate)"], np.nan)
    chosen = {}
    for p, w in zip(calibration.points, weights):
        i, j = axes[0].index(w[0]), axes[1].index(w[1])
        maps["deployed (the choice's estimate)"][i, j] = p.estimate[p.chosen][0]
        maps["plain surrogate"][i, j] = p.estimate.get("surrogate", (np.nan, np.nan))[0]
        chosen[i, j] = "s" if p.chosen == "surrogate" else p.chosen.replace("anchor:", "a")
    low = min(np.nanmin(m) for m in maps.values())
    high = max(np.nanmax(m) for m in maps.values())
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, (title, values) in zip(panels, maps.items()):
        text = {key: f"{values[key]:.4g}" + (f"\n{name}" if title.startswith("deployed") else "") for key, name in chosen.items()}
        heat_map(ax, values, axes, names, title, text, (low, high))
    fig.suptitle(f"{calibration.task}: calibration ({calibration.episodes} estimating episodes per vector; a<w>: anchor deployed, s: surrogate)")
    fig.tight_layout()
    return fig


def heat_map(ax: Any, values: np.ndarray, axes: list[list[float]], names: list[str], title: str, text: dict[tuple[int, int], str],
             limits: tuple[float, float], cmap: str = "viridis", text_color: str = "white") -> None:
    """One panel over a two-axis weight grid: values [n1, n2] (rows: axis 1's values ``axes[0]``, columns: axis 2's),
    ``text[(i, j)]`` written in cell (i, j), a colour bar over ``limits``."""
    image = ax.imshow(values, origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1], aspect="auto")
    for (i, j), label in text.items():
        ax.text(j, i, label, ha="center", va="center", fontsize=6, color=text_color)
    ax.set_xticks(range(len(axes[1])), [f"{b:g}" for b in axes[1]], fontsize=7)
    ax.set_yticks(range(len(axes[0])), [f"{a:g}" for a in axes[0]], fontsize=7)
    ax.set(title=title, xlabel=f"λ {names[1]}", ylabel=f"λ {names[0]}")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def write_figure(calibration: Calibration, path: str | Path) -> Path:
    """Write :func:`calibration_figure` to ``path`` (PNG), atomically."""
    import matplotlib.pyplot as plt

    fig = calibration_figure(calibration)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
