"""How a cross-evaluation (:class:`hti_rl.quality.CrossEval`) is shown: heat map, TensorBoard, console table.

Reads a ``CrossEval`` through its methods only (``matrix``, ``weighted_sums``, ``beaten``, ``warnings``),
so it imports nothing of :mod:`hti_rl.quality`, which uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.cross_eval import weight_text
from hti_rl.evaluate import format_mean_ci


def heatmap(cross: Any) -> Any:
    """A matplotlib figure of the matrix: colour = return relative to the column's best and worst
    anchor (columns differ in scale), text = mean ± CI, own-weight cells outlined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    mean, ci = cross.matrix()
    spread = mean.max(axis=0) - mean.min(axis=0)
    relative = (mean - mean.min(axis=0)) / np.where(spread > 0, spread, 1.0)
    k = len(cross.weights)
    figure = Figure(figsize=(1.6 * k + 2.0, 1.0 * k + 1.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(relative, cmap="RdYlGn", vmin=0.0, vmax=1.0)
    labels = [weight_text(w) for w in cross.weights]
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("evaluated at weight λ")
    ax.set_ylabel("anchor trained at weight")
    ax.set_title(f"{cross.task}: return, mean ± 95% CI ({cross.episodes} episodes)", fontsize=9)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, format_mean_ci(mean[i, j], ci[i, j]).replace(" ± ", "\n± "), ha="center", va="center", fontsize=7)
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, linewidth=2))
    figure.colorbar(image, ax=ax, label="worst → best anchor in the column")
    figure.tight_layout()
    return figure


def log_tensorboard(cross: Any, log_dir: Path, figure: Any) -> None:
    """Each anchor's return against the weight index, the heat map and the warnings."""
    from torch.utils.tensorboard import SummaryWriter

    mean, _ = cross.matrix()
    writer = SummaryWriter(str(log_dir))
    try:
        for i, weight in enumerate(cross.weights):
            for j in range(len(cross.weights)):
                writer.add_scalar(f"cross_eval/anchor_w={weight_text(weight)}", mean[i, j], global_step=j)
        writer.add_figure("cross_eval/heatmap", figure, close=False)
        writer.add_text("cross_eval/warnings", "\n".join(f"- {m}" for m in cross.warnings) or "none")
    finally:
        writer.close()


def start_states(cross: Any) -> str:
    """Which episodes the matrix was measured on, in one line (other evaluations use other start states)."""
    return (f"episodes: {cross.episodes} per anchor, deterministic actions, reset seeds {cross.seed}…{cross.seed + cross.episodes - 1} "
            "(the same start states for every anchor; other evaluations, such as the demo's report, use their own, so their "
            "numbers differ by start-state luck; `hti-rl check-anchors --episodes N --seed S` evaluates on others)")


def print_report(cross: Any, console: Any = None) -> None:
    """Print the matrix as a rich table (own-weight cells bold, red where beaten; the best anchor
    of each column green) followed by the warnings.

    :param console: a ``rich.console.Console``; a new one on stdout when ``None``.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    mean, ci = cross.matrix()
    wmean, wci = cross.weighted_sums()
    table = Table(title=f"{cross.task}: anchors (rows) at anchor weights (columns), return mean ± 95% CI, {cross.episodes} episodes")
    table.add_column("anchor w")
    for w in cross.weights:
        table.add_column(f"at λ={weight_text(w)}", justify="right")
    table.add_column(f"Σ {cross.weighted} / episode", justify="right")
    best = mean.argmax(axis=0)
    beaten = {i for i, *_ in cross.beaten()}
    for i, w in enumerate(cross.weights):
        cells = []
        for j in range(len(cross.weights)):
            style = "green" if best[j] == i else ""
            if i == j:
                style = "bold red" if i in beaten else f"bold {style}".strip()
            text = format_mean_ci(mean[i, j], ci[i, j])
            cells.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(weight_text(w), *cells, format_mean_ci(wmean[i], wci[i]))
    console.print(table)
    console.print(start_states(cross), highlight=False, soft_wrap=True)
    for message in cross.warnings:
        console.print(f"[bold red]warning:[/] {escape(message)}", highlight=False)
    if not cross.warnings:
        console.print("anchor check passed: no anchor is beaten at its own weight" + (", weighted component monotone" if cross.monotone else ""))
