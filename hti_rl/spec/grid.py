"""The weight fields of a task spec that weighs several components: ``weight_scale``, ``anchors`` and
``held_out`` as a grid of vectors (docs/method.md §12). Example (``envs/lqr2w.yaml``)::

    reward:
      components: {state: {info: reward_state}, ctrl0: {info: reward_ctrl_0}, ctrl1: {info: reward_ctrl_1}}
      weighted: [ctrl0, ctrl1]
    weight_scale: log             # one scale for every axis, or a list: [log, linear]
    anchors:                      # one anchor list per weighted component, in `weighted` order
      ctrl0: [0.1, 1, 10]
      ctrl1: [0.1, 1, 10]
    held_out: [[0.3, 3], [3, 0.3]]

``anchors`` may also list every vector of the grid (``[[0.1, 0.1], [0.1, 1], …]``); either way the anchors
are the whole product of the per-axis lists, in C order (the last axis fastest).
"""

from __future__ import annotations

from typing import Any

from hti_rl.errors import WeightError
from hti_rl.spec.fields import REQUIRED, Fields, is_finite_number
from hti_rl.weights import SCALES, Vector, WeightAxis, WeightGrid


def read_grid(top: Fields, names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[Vector, ...], tuple[Vector, ...]]:
    """(weight scales [n], anchor vectors [K, n] in C order, held-out vectors [H, n]) of a spec weighing ``names``.

    :raises SpecError: naming the field: a scale per axis missing, axes in another order than ``weighted``,
        an axis list that is not ≥ 2 increasing numbers, a grid with a missing point, a held-out weight of
        the wrong length or outside the grid.
    """
    scales = _scales(top, names)
    raw = top.get("anchors", REQUIRED)
    if isinstance(raw, dict):
        axes = _axes(top, raw, names, scales)
        grid = WeightGrid(axes, names)
    elif isinstance(raw, list) and raw and all(isinstance(p, list) for p in raw):
        if not all(is_finite_number(v) for p in raw for v in p):
            raise top.error("anchors", f"is {raw!r}; give lists of finite numbers, one per weighted component ({', '.join(names)}).")
        points = sorted(tuple(float(v) for v in p) for p in raw)
        try:
            grid = WeightGrid.from_points(points, scales, names)
        except WeightError as exc:
            raise top.error("anchors", f"does not form a grid: {exc}") from None
    else:
        raise top.error("anchors", f"is {raw!r}; this spec weighs {', '.join(names)}, so give one anchor list per component "
                                   f"({{{names[0]}: [0.1, 1, 10], …}}) or a list of vectors ([[0.1, 0.1], …]).")
    held_raw = top.get("held_out", REQUIRED)
    if not isinstance(held_raw, list):
        raise top.error("held_out", f"is {held_raw!r}; give a list of weight vectors, e.g. [{grid.label(grid.middle())}] as [[…], …].")
    held_out = []
    for i, vector in enumerate(held_raw):
        try:
            held_out.append(grid.check(vector))
        except WeightError as exc:
            raise top.error(f"held_out[{i}]", f"is {vector!r}: {exc}") from None
    return grid.scales, grid.points, tuple(held_out)


def _scales(top: Fields, names: tuple[str, ...]) -> tuple[str, ...]:
    raw = top.get("weight_scale", REQUIRED)
    scales = [raw] * len(names) if isinstance(raw, str) else raw
    if not isinstance(scales, list) or len(scales) != len(names) or any(s not in SCALES for s in scales):
        raise top.error("weight_scale", f"is {raw!r}; give one of {', '.join(SCALES)} for every axis, or a list of "
                                        f"{len(names)} of them, one per weighted component ({', '.join(names)}).")
    return tuple(scales)


def _axes(top: Fields, raw: dict[str, Any], names: tuple[str, ...], scales: tuple[str, ...]) -> tuple[WeightAxis, ...]:
    keys = tuple(raw)
    if set(keys) != set(names):
        missing, extra = sorted(set(names) - set(keys)), sorted(set(keys) - set(names), key=str)
        raise top.error("anchors", f"names the axes {list(keys)}, but `reward.weighted` is {list(names)}"
                                   f"{'; missing ' + ', '.join(missing) if missing else ''}{'; unknown ' + ', '.join(map(str, extra)) if extra else ''}. "
                                   "Give one anchor list per weighted component.")
    if keys != names:
        raise top.error("anchors", f"lists the axes in the order {list(keys)}, but `reward.weighted` is {list(names)}; "
                                   "list them in the order of `weighted` (the order of a weight vector's entries).")
    axes = []
    for name, scale in zip(names, scales):
        values = Fields(top.file, raw, where="anchors.").floats(name)
        try:
            axes.append(WeightAxis(values, scale))  # type: ignore[arg-type]
        except WeightError as exc:
            raise top.error(f"anchors.{name}", f"is {list(values)}: {exc}") from None
    return tuple(axes)
