"""Figures: the surrogate and the retrained agent in different colours, held-out weights marked, anchors
on the action path labelled with their λ, and every title inside the image."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib
import numpy as np
from matplotlib.colors import to_rgba

from hti_rl.compare.demo import GRID, RETRAINED_WEIGHT, demo_figure
from hti_rl.compare.report import returns_figure

matplotlib.use("Agg")


def _demo_results() -> tuple[SimpleNamespace, dict]:
    spec = SimpleNamespace(anchors=(0.1, 1.0, 10.0), held_out=(0.3, 3.0))
    weights = sorted({*GRID.tolist(), *spec.held_out})
    curve = {w: (-5.0 - np.log(w), 1.0) for w in weights}
    sweep = np.geomspace(0.1, 10, 41)
    path = np.stack([np.cos(np.log(sweep)), np.sin(np.log(sweep))], axis=1)
    results = {"rows": {"surrogate": curve, "optimum": curve, "best anchor": curve}, "anchor_curves": {a: curve for a in spec.anchors},
               "retrained": (-6.0, 1.0), "sweep": sweep, "path_surrogate": path, "path_optimum": path * 1.1, "eval_seed": 1000}
    return spec, results


def _titles_inside(fig) -> bool:
    fig.canvas.draw()
    box = fig.bbox
    for ax in fig.axes:
        extent = ax.title.get_window_extent()
        if extent.x0 < box.x0 or extent.x1 > box.x1 or extent.y1 > box.y1:
            return False
    return True


def test_demo_figure_tells_surrogate_retrained_held_out_and_anchors_apart():
    spec, results = _demo_results()
    fig = demo_figure(spec, results)
    ax_ret, ax_act = fig.axes
    surrogate = next(line for line in ax_ret.get_lines() if line.get_label() == "surrogate")
    retrained = next(c for c in ax_ret.containers if c.get_label().startswith("retrained"))
    assert to_rgba(surrogate.get_color()) != to_rgba(retrained.lines[0].get_color())
    assert retrained.lines[0].get_xdata()[0] == RETRAINED_WEIGHT
    held = [line for line in ax_ret.get_lines() if line.get_label() == "held-out weight"]
    assert len(held) == 1 and any(list(line.get_xdata()) == [3.0, 3.0] for line in ax_ret.get_lines())
    labels = {t.get_text() for t in ax_act.texts}
    assert {"λ=0.1", "λ=1", "λ=10", "λ=0.3", "λ=3"} <= labels
    assert _titles_inside(fig)


def test_returns_figure_marks_held_out_weights_and_keeps_the_title_inside():
    from test_report import _results

    fig = returns_figure(_results())
    ax = fig.axes[0]
    held = [line for line in ax.get_lines() if line.get_label() == "held-out weight"]
    assert len(held) == 1 and list(held[0].get_xdata()) == [3.0, 3.0]
    retrained = next(c for c in ax.containers if c.get_label().startswith("retrained"))
    for container in ax.containers:
        if not container.get_label().startswith("retrained"):
            assert to_rgba(container.lines[0].get_color()) != to_rgba(retrained.lines[0].get_color())
    assert _titles_inside(fig)
