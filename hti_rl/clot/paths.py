"""Curves between two outputs, their action, and the amortised path net (docs/method.md §5.5-5.6).

A curve from y0 to y1 is the straight line plus a natural cubic spline correction that is zero at
s = 0 and s = 1 and takes the values ``knots`` [n, D] at the interior nodes s_j = j/(n+1). The spline
is linear in the knot values, so a fixed basis B(s) [n] gives q(s) = y0 + s·(y1 − y0) + B(s)·knots and
q̇(s) = (y1 − y0) + B'(s)·knots in closed form.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from hti_rl.clot.film import FiLMMLP


def _second_derivatives(n: int) -> Tensor:
    """Natural-spline second derivatives at the n + 2 nodes per unit knot value -> [n + 2, n]."""
    h = 1.0 / (n + 1)
    # Interior equations: M_{i-1} + 4 M_i + M_{i+1} = 6/h² (c_{i-1} − 2c_i + c_{i+1}), with M = c = 0 at the ends.
    A = 4 * torch.eye(n, dtype=torch.float64) + torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
    A = A + torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    rhs = (6 / h**2) * (-2 * torch.eye(n, dtype=torch.float64) + torch.diag(torch.ones(n - 1, dtype=torch.float64), 1))
    rhs = rhs + (6 / h**2) * torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)
    M = torch.zeros(n + 2, n, dtype=torch.float64)
    M[1:-1] = torch.linalg.solve(A, rhs)
    return M


class SplineBasis(nn.Module):
    """Basis functions of the zero-ended natural cubic spline with ``n_knots`` interior knots.

    :param n_knots: number of interior knots n (>= 1).
    """

    def __init__(self, n_knots: int):
        super().__init__()
        self.n = n_knots
        values = torch.zeros(n_knots + 2, n_knots, dtype=torch.float64)
        values[1:-1] = torch.eye(n_knots, dtype=torch.float64)
        self.register_buffer("values", values.float())
        self.register_buffer("second", _second_derivatives(n_knots).float())

    def forward(self, s: Tensor) -> tuple[Tensor, Tensor]:
        """s [...] in [0, 1] -> (B(s) [..., n], B'(s) [..., n])"""
        n1 = self.n + 1
        h = 1.0 / n1
        i = (s * n1).floor().long().clamp(0, self.n)  # segment [s_i, s_{i+1}]
        tb = (s - i.to(s.dtype) * h) / h
        ta = 1.0 - tb
        v0, v1, m0, m1 = self.values[i], self.values[i + 1], self.second[i], self.second[i + 1]
        ta, tb = ta.unsqueeze(-1), tb.unsqueeze(-1)
        b = ta * v0 + tb * v1 + (h * h / 6) * ((ta**3 - ta) * m0 + (tb**3 - tb) * m1)
        db = (v1 - v0) / h + (h / 6) * ((1 - 3 * ta**2) * m0 + (3 * tb**2 - 1) * m1)
        return b, db

    def grid(self, n_points: int) -> tuple[Tensor, Tensor, Tensor]:
        """Midpoint quadrature grid -> (s [P], B [P, n], B' [P, n])"""
        s = (torch.arange(n_points, dtype=torch.float32) + 0.5) / n_points
        return (s, *self(s))


def curve(y0: Tensor, y1: Tensor, knots: Tensor, s: Tensor, b: Tensor) -> Tensor:
    """Points at per-sample times. y0, y1 [B, D], knots [B, n, D], s [B], b [B, n] -> q [B, D]

    At s = 0, b = 0 and the result is exactly y0.
    """
    return y0 + s.unsqueeze(-1) * (y1 - y0) + torch.einsum("bn,bnd->bd", b, knots)


def curve_grid(y0: Tensor, y1: Tensor, knots: Tensor, s: Tensor, b: Tensor, db: Tensor) -> tuple[Tensor, Tensor]:
    """Points and velocities on a shared grid.
    y0, y1 [B, D], knots [B, n, D], s [P], b, db [P, n] -> (q [B, P, D], q̇ [B, P, D])"""
    delta = (y1 - y0).unsqueeze(1)
    q = y0.unsqueeze(1) + s[None, :, None] * delta + torch.einsum("pn,bnd->bpd", b, knots)
    v = delta + torch.einsum("pn,bnd->bpd", db, knots)
    return q, v


def action(
    q: Tensor,
    v: Tensor,
    x: Tensor,
    metric: Callable[[Tensor, Tensor, Tensor], Tensor],
    potential: Callable[[Tensor, Tensor], Tensor] | None,
) -> Tensor:
    """∫ ½ q̇ᵀ G(q|x) q̇ − U(q|x) ds by the midpoint rule.
    q, v [B, P, D] (points, velocities on the midpoint grid), x [B, C] -> action [B]

    :param metric: ``metric(q, x, v) -> vᵀ G v`` [B, P].
    :param potential: ``potential(q, x) -> U`` [B, P], or None for no potential.
    """
    lagrangian = 0.5 * metric(q, x, v)
    if potential is not None:
        lagrangian = lagrangian - potential(q, x)
    return lagrangian.mean(-1)


class PathNet(nn.Module):
    """Amortised path S(y0, y1, x) -> knots: the spline correction of the least-action curve.

    With ``max_bend`` set, each knot is ``max_bend · ‖y1 − y0‖ · tanh(net)``: the correction scales
    with the chord (zero between equal ends) and is bounded, so that a condition or pair far from the
    training data cannot send the curve far from its chord. Unbounded (``None``), the knots are the
    net's output.

    :param dim: output dimension D.
    :param cond_dim: condition dimension C.
    :param n_knots: interior knots per curve.
    :param hidden: width.
    :param depth: hidden layers.
    :param max_bend: largest knot offset as a share of the chord's length, or None for unbounded.
    """

    def __init__(self, dim: int, cond_dim: int, n_knots: int, hidden: int, depth: int, max_bend: float | None = None):
        super().__init__()
        self.n_knots, self.dim, self.max_bend = n_knots, dim, max_bend
        self.net = FiLMMLP(2 * dim, cond_dim, n_knots * dim, hidden, depth)

    def forward(self, y0: Tensor, y1: Tensor, x: Tensor) -> Tensor:
        """y0, y1 [B, D], x [B, C] -> knots [B, n, D]"""
        return self.knots(y0, y1, self.net.modulation(x))

    def knots(self, y0: Tensor, y1: Tensor, gb: Tensor) -> Tensor:
        """y0, y1 [B, D], gb [B, 2·depth, hidden] (the conditions' ``net.modulation``) -> knots [B, n, D]"""
        raw = self.net.apply(torch.cat([y0, y1], -1), gb).view(y0.shape[0], self.n_knots, self.dim)
        if self.max_bend is None:
            return raw
        return self.max_bend * (y1 - y0).norm(dim=-1).view(-1, 1, 1) * torch.tanh(raw)
