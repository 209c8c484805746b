"""Issue 22 item 3: can any interpolator that sees only the anchors beat the multilinear mix at every vector?

On the 2-weight LQR task (envs/lqr2w.yaml: exact Riccati gains, anchors on the 3×3 log grid over [0.1, 10]²)
the optimal action is linear in the state, u = −K(λ)x, so interpolating the anchors' actions is interpolating
their gains. This bench interpolates the nine exact gains with four tensor-product schemes along each axis in
log λ (piecewise linear = the multilinear mix; natural cubic; the parabola through the three anchors; PCHIP)
and prints each one's mean relative action error against −K(λ)x at the interior vectors of bench/grid_lqr.py,
over 2,000 standard-normal states (‖x‖ > 0.3). No training: a second, exact.

Run: python bench/grid_interpolants.py
"""

import gymnasium as gym
import numpy as np
from scipy.interpolate import CubicSpline, PchipInterpolator

import hti_rl.envs.lqr  # noqa: F401  (registers hti_rl/LQR2D-v0)

ANCHORS = np.array([0.1, 1.0, 10.0])
INTERIOR = [(0.3, 0.3), (0.3, 3.0), (3.0, 0.3), (3.0, 3.0), (0.2, 5.0), (2.0, 0.5), (1.0, 3.0), (3.0, 1.0)]
T = np.log(ANCHORS)


def piecewise_linear(values: np.ndarray, t: float) -> np.ndarray:
    """values [3, ...] at T -> the linear mix of the two bracketing anchors at t."""
    return np.stack([np.interp(t, T, v) for v in values.reshape(3, -1).T], axis=-1).reshape(values.shape[1:])


SCHEMES = {
    "multilinear": piecewise_linear,
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


print("scheme         " + " ".join(f"{a:g},{b:g}".rjust(7) for a, b in INTERIOR) + "    mean")
base = None
for name, along in SCHEMES.items():
    row = []
    for weight in INTERIOR:
        t1, t2 = np.log(weight)
        rows = np.array([along(gains[i], t2) for i in range(3)])  # axis 2 on each row of anchors
        row.append(error(along(rows, t1), weight))
    base = row if base is None else base
    worse = sum(e > b + 1e-12 for e, b in zip(row, base))
    print(f"{name:14s} " + " ".join(f"{100 * e:6.2f}%" for e in row) + f"  {100 * np.mean(row):5.2f}%  worse at {worse}/8")
