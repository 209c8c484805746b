"""Issue 22 item 3: can any interpolator that sees only the anchors beat the multilinear mix at every vector?

On the 2-weight LQR task (envs/lqr2w.yaml: exact Riccati gains, anchors on the 3×3 log grid over [0.1, 10]²)
the optimal action is linear in the state, u = −K(λ)x, so interpolating the anchors' actions is interpolating
their gains. This bench interpolates the nine exact gains four ways, each a tensor product along the axes in
log λ: piecewise linear (the product's own multilinear mix, hti_rl.methods.grid.multilinear), natural cubic,
the parabola through the three anchors, and PCHIP. It prints each one's mean relative action error against
−K(λ)x at the interior vectors of bench/grid_lqr.py, over 2,000 standard-normal states (‖x‖ > 0.3).
No training: a second, exact.

Run: python bench/grid_interpolants.py
"""

import gymnasium as gym
import numpy as np
from scipy.interpolate import CubicSpline, PchipInterpolator

import hti_rl.envs.lqr  # noqa: F401  (registers hti_rl/LQR2D-v0)
from hti_rl.methods.grid import multilinear
from hti_rl.weights import WeightAxis, WeightGrid

ANCHORS = np.array([0.1, 1.0, 10.0])
INTERIOR = [(0.3, 0.3), (0.3, 3.0), (3.0, 0.3), (3.0, 3.0), (0.2, 5.0), (2.0, 0.5), (1.0, 3.0), (3.0, 1.0)]
T = np.log(ANCHORS)  # the anchors' coordinates on each log axis
GRID = WeightGrid((WeightAxis(tuple(ANCHORS), "log"),) * 2, ("ctrl0", "ctrl1"))
CURVED = {  # along one axis: values [3, ...] at the anchors' coordinates T -> the value at coordinate t
    "natural cubic": lambda v, t: CubicSpline(T, v, axis=0, bc_type="natural")(t),
    "parabola": lambda v, t: CubicSpline(T, v, axis=0, bc_type="not-a-knot")(t),
    "pchip": lambda v, t: PchipInterpolator(T, v, axis=0)(t),
}

env = gym.make("hti_rl/LQR2D-v0").unwrapped
gains = np.array([[env.optimal_gain((a, b)) for b in ANCHORS] for a in ANCHORS])  # [3, 3, D, C]
states = np.random.default_rng(0).standard_normal((2000, gains.shape[-1]))
states = states[np.linalg.norm(states, axis=1) > 0.3]


def error(gain: np.ndarray, weight: tuple[float, float]) -> float:
    optimum = states @ -env.optimal_gain(weight).T
    return float(np.mean(np.linalg.norm(states @ -gain.T - optimum, axis=1) / np.linalg.norm(optimum, axis=1)))


def mixed(weight: tuple[float, float]) -> np.ndarray:
    """The product's own multilinear mix (hti_rl.methods.grid.multilinear) of the cell's four corner gains."""
    (i, j), s = GRID.cell(weight)
    return multilinear({(a, b): gains[i + a, j + b] for a in (0, 1) for b in (0, 1)}, s)


def curved(along, weight: tuple[float, float]) -> np.ndarray:
    """A tensor-product interpolant: ``along`` axis 2 on each row of anchors, then along axis 1."""
    t1, t2 = np.log(weight)
    return along(np.array([along(gains[i], t2) for i in range(3)]), t1)


def report(name: str, row: list[float], base: list[float]) -> None:
    worse = sum(e > b + 1e-12 for e, b in zip(row, base))
    print(f"{name:14s} " + " ".join(f"{100 * e:6.2f}%" for e in row) + f"  {100 * np.mean(row):5.2f}%  worse at {worse}/8")


print("scheme         " + " ".join(f"{a:g},{b:g}".rjust(7) for a, b in INTERIOR) + "    mean")
base = [error(mixed(w), w) for w in INTERIOR]
report("multilinear", base, base)
for name, along in CURVED.items():
    report(name, [error(curved(along, w), w) for w in INTERIOR], base)
