"""WeightGrid (hti_rl/weights.py) and vector task specs (hti_rl/spec/grid.py): the grid, its cells, and
the errors of bad input (issue 22 item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hti_rl.errors import SpecError, WeightError
from hti_rl.spec.load import load_task
from hti_rl.weights import WeightAxis, WeightGrid, parse_vector

ROOT = Path(__file__).resolve().parents[1]
LOG3 = WeightAxis((0.1, 1.0, 10.0), "log")


def grid2() -> WeightGrid:
    return WeightGrid((LOG3, WeightAxis((0.0, 1.0), "linear")), ("a", "b"))


def test_points_in_c_order_and_flat_index():
    grid = grid2()
    assert grid.shape == (3, 2) and grid.dim == 2
    assert grid.points == ((0.1, 0.0), (0.1, 1.0), (1.0, 0.0), (1.0, 1.0), (10.0, 0.0), (10.0, 1.0))
    assert all(grid.points[grid.flat((i, j))] == (LOG3.anchors[i], (0.0, 1.0)[j]) for i in range(3) for j in range(2))


def test_cell_and_corner():
    grid = grid2()
    index, s = grid.cell((3.0, 0.25))
    assert index == (1, 0) and s[0] == pytest.approx(0.47712125) and s[1] == pytest.approx(0.25)
    assert grid.corner(index, s) is None
    assert grid.corner(*grid.cell((10.0, 1.0))) == 5 and grid.corner(*grid.cell((1.0, 0.0))) == 2
    assert grid.cell("3,0.25") == (index, s)


def test_from_points_round_trip_and_one_axis_reduces_to_the_axis():
    grid = grid2()
    assert WeightGrid.from_points(grid.points, grid.scales, grid.names) == grid
    line = WeightGrid((LOG3,), ("ctrl",))
    assert line.cell((3.0,)) == ((1,), (LOG3.local_time(3.0)[1],))


@pytest.mark.parametrize("weight, words", [
    (0.3, "not the scalar 0.3"),
    ((0.3,), "has 1 entries"),
    ((0.3, 0.5, 0.5), "has 3 entries"),
    ((30.0, 0.5), "weight of a: weight 30 is outside the anchor range [0.1, 10]"),
    ((1.0, float("nan")), "weight of b: weight must be finite"),
    (("x", 0.5), "weight of a: weight must be a number"),
    ("0.3;0.5", "not a number or comma-separated numbers"),
])
def test_bad_vectors_are_named(weight, words):
    with pytest.raises(WeightError, match=None) as info:
        grid2().check(weight)
    assert words in str(info.value)


def test_extrapolation_only_when_asked():
    assert grid2().check((30.0, 0.5), allow_extrapolation=True) == (30.0, 0.5)


def test_missing_repeated_and_unordered_points():
    points = list(grid2().points)
    with pytest.raises(WeightError, match=r"\(10,1\) is missing"):
        WeightGrid.from_points(points[:-1], ("log", "linear"), ("a", "b"))
    with pytest.raises(WeightError, match="not in grid order"):
        WeightGrid.from_points(points[::-1], ("log", "linear"), ("a", "b"))
    with pytest.raises(WeightError, match="has 1 entries; this grid weighs 2"):
        WeightGrid.from_points([(0.1,), (1.0,)], ("log", "linear"), ("a", "b"))


def test_evaluation_grid_holds_anchors_and_held_out():
    grid = grid2()
    vectors = grid.grid(per_interval=1, include=[(3.0, 0.25)])
    assert set(grid.points) <= set(vectors) and (3.0, 0.25) in vectors
    assert len(vectors) == 5 * 3 + 1
    assert parse_vector("0.1, 0.5") == (0.1, 0.5)


# ------------------------------------------------------------------ specs
def write_spec(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((ROOT / "envs/lqr2w.yaml").read_text())
    raw["hyperparams_file"] = str(ROOT / "agents/ppo.yml")
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_vector_spec_loads_as_a_grid():
    spec = load_task(ROOT / "envs/lqr2w.yaml")
    assert spec.is_vector and spec.grid.shape == (3, 3) and spec.grid.names == ("ctrl0", "ctrl1")
    assert spec.anchors == spec.grid.points and spec.held_out[1] == (0.3, 3.0)
    with pytest.raises(WeightError, match="weighs several components"):
        spec.axis


def test_scalar_specs_keep_their_fingerprints():
    """The fingerprints of the shipped scalar specs, as before weight vectors existed."""
    assert load_task(ROOT / "envs/lqr1d.yaml").fingerprint() == "dcb9b3e388ca99a7"
    assert load_task(ROOT / "envs/lqr2d.yaml").fingerprint() == "2d9e01c97d15a930"
    scalar = load_task(ROOT / "envs/lqr2d.yaml")
    assert not scalar.is_vector and scalar.grid.points == tuple((w,) for w in scalar.anchors)


def test_anchor_vectors_listed_one_by_one(tmp_path):
    points = [[a, b] for a in (0.1, 10) for b in (0.1, 10)]
    spec = load_task(write_spec(tmp_path, anchors=points[::-1], held_out=[[1, 1]]))
    assert spec.grid.shape == (2, 2) and spec.anchors[0] == (0.1, 0.1)


@pytest.mark.parametrize("changes, words", [
    ({"anchors": {"ctrl1": [0.1, 10], "ctrl0": [0.1, 10]}}, "lists the axes in the order ['ctrl1', 'ctrl0']"),
    ({"anchors": {"ctrl0": [0.1, 10]}}, "missing ctrl1"),
    ({"anchors": {"ctrl0": [0.1, 10], "ctrl1": [10, 0.1]}}, "anchors.ctrl1"),
    ({"anchors": [[0.1, 0.1], [0.1, 10], [10, 0.1]]}, "(10,10) is missing"),
    ({"anchors": [0.1, 1, 10]}, "give one anchor list per component"),
    ({"held_out": [0.3, 3]}, "not the scalar 0.3"),
    ({"held_out": [[0.3, 3, 1]]}, "has 3 entries"),
    ({"held_out": [[30, 3]]}, "outside the anchor range"),
    ({"weight_scale": ["log"]}, "one per weighted component"),
    ({"shared_start": True}, "not supported yet"),
])
def test_bad_vector_specs_name_the_field(tmp_path, changes, words):
    with pytest.raises(SpecError) as info:
        load_task(write_spec(tmp_path, **changes))
    assert words in str(info.value) and "field `" in str(info.value)
