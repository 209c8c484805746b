"""``hti-rl suggest``: the weights where a refined anchor would help most, from the calibration alone.

The rule: at every calibrated grid weight λ that is not an anchor, the *gap* is the interpolation, in the
weight coordinate, of the two bracketing anchors' returns at their own weights, minus the deployed
candidate's estimated return at λ (both from the calibration's estimating episodes). The anchors show what
a policy trained for a weight reaches there; where the deployed policy falls furthest below that line,
a policy trained for λ is likely to gain most. A heuristic, stated as one: returns at different weights
are on different scales, and the line is only a guide.
"""

from __future__ import annotations

from dataclasses import dataclass

from hti_rl.errors import HTIError
from hti_rl.methods.calibration import Calibration, anchor_name
from hti_rl.weights import WeightAxis


@dataclass(frozen=True)
class Suggestion:
    """One grid weight's case for a refine.

    :param weight: λ.
    :param gap: ``interpolated - deployed`` (larger: a refine likely helps more).
    :param deployed: the deployed candidate's estimated return at λ.
    :param interpolated: the bracketing anchors' own-weight returns, interpolated at λ.
    :param candidate: what is deployed at λ.
    """

    weight: float
    gap: float
    deployed: float
    interpolated: float
    candidate: str


def suggest(calibration: Calibration) -> list[Suggestion]:
    """Every calibrated grid weight that is not an anchor, best case for a refine first."""
    axis = WeightAxis(calibration.anchors, calibration.weight_scale)  # type: ignore[arg-type]
    own = {a: calibration.anchor_estimates(a)[anchor_name(a)][0] for a in calibration.anchors}
    out = []
    for point in calibration.points:
        if point.weight in calibration.anchors or point.chosen not in point.estimate:
            continue
        k, s = axis.local_time(point.weight)
        line = (1 - s) * own[calibration.anchors[k]] + s * own[calibration.anchors[k + 1]]
        deployed = point.estimate[point.chosen][0]
        out.append(Suggestion(point.weight, line - deployed, deployed, line, point.chosen))
    if not out:
        raise HTIError("the calibration has no grid weight between anchors; calibrate with --per-interval ≥ 1 first.")
    return sorted(out, key=lambda s: (-s.gap, s.weight))


def table(suggestions: list[Suggestion]) -> list[str]:
    """The ranking as text lines."""
    lines = [f"{'rank':>4}  {'weight':>10}  {'gap':>10}  {'deployed':>10}  {'anchor line':>11}  deployed candidate"]
    for i, s in enumerate(suggestions, 1):
        lines.append(f"{i:>4}  {s.weight:>10.4g}  {s.gap:>10.4g}  {s.deployed:>10.4g}  {s.interpolated:>11.4g}  {s.candidate}")
    return lines
