"""The calibration figure: estimated return against weight for every candidate (95% CI bands), the
deployed envelope, and the anchor and held-out weights marked. Reads a :class:`Calibration` only."""

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


def write_figure(calibration: Calibration, path: str | Path) -> Path:
    """Write :func:`calibration_figure` to ``path`` (PNG), atomically."""
    import matplotlib.pyplot as plt

    fig = calibration_figure(calibration)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
