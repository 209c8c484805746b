"""Spline paths: basis, closed-form derivative, action; the straight line is the Euclidean minimum."""

import math

import torch

from hti_rl.clot.metric import Metric
from hti_rl.clot.paths import PathNet, SplineBasis, action, curve, curve_grid


def test_basis_interpolates_knots_and_vanishes_at_the_ends():
    basis = SplineBasis(5)
    b, _ = basis(torch.arange(1, 6) / 6)
    torch.testing.assert_close(b, torch.eye(5), atol=1e-6, rtol=0)
    b_ends, _ = basis(torch.tensor([0.0, 1.0]))
    assert torch.equal(b_ends[0], torch.zeros(5))
    assert b_ends[1].abs().max() < 1e-6


def test_derivative_matches_finite_differences():
    basis = SplineBasis(4)
    s = torch.linspace(0.01, 0.99, 50, dtype=torch.float32)
    h = 1e-3  # the third derivative jumps at knots, so the difference step must be small
    _, db = basis(s)
    fd = (basis(s + h)[0] - basis(s - h)[0]) / (2 * h)
    torch.testing.assert_close(db, fd, atol=1e-3, rtol=0)


def test_natural_spline_second_derivative_is_zero_at_the_ends():
    basis = SplineBasis(3)
    assert torch.equal(basis.second[0], torch.zeros(3)) and torch.equal(basis.second[-1], torch.zeros(3))


def test_curve_at_zero_is_exactly_the_start():
    y0, y1, knots = torch.randn(8, 3), torch.randn(8, 3), torch.randn(8, 6, 3)
    basis = SplineBasis(6)
    s = torch.zeros(8)
    assert torch.equal(curve(y0, y1, knots, s, basis(s)[0]), y0)


def test_grid_points_agree_with_per_sample_evaluation():
    basis = SplineBasis(4)
    y0, y1, knots = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 4, 2)
    s, b, db = basis.grid(9)
    q, _ = curve_grid(y0, y1, knots, s, b, db)
    for p in range(9):
        sp = s[p].expand(3)
        torch.testing.assert_close(q[:, p], curve(y0, y1, knots, sp, basis(sp)[0]))


def test_constant_metric_straight_line_action():
    # A straight line under a constant metric G costs ½ Δᵀ G Δ; here G = diag(0.5, 1.5) from the network.
    metric = Metric(2, 1, 8, 1, floor=0.1)
    with torch.no_grad():
        metric.net.out.bias.copy_(torch.tensor([0.0, math.log(3.0), 0.0]))
    basis = SplineBasis(3)
    s, b, db = basis.grid(10)
    y0, y1 = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 1.0]])
    q, v = curve_grid(y0, y1, torch.zeros(1, 3, 2), s, b, db)
    a = action(q, v, torch.zeros(1, 1), metric.quad, None)
    # e = 0.1 + 1.8·(1/4, 3/4) = (0.55, 1.45): ½(0.55·4 + 1.45·1) = 1.825
    torch.testing.assert_close(a, torch.tensor([1.825]))


def test_optimised_knots_give_the_straight_line_and_half_squared_distance():
    torch.manual_seed(0)
    metric = Metric(2, 1, 8, 1, floor=0.1, learned=False)
    basis = SplineBasis(5)
    s, b, db = basis.grid(20)
    y0, y1 = torch.tensor([[0.5, -1.0], [2.0, 0.0]]), torch.tensor([[1.5, 2.0], [-1.0, 1.0]])
    knots = torch.randn(2, 5, 2).requires_grad_(True)
    x = torch.zeros(2, 1)
    opt = torch.optim.LBFGS([knots], max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = action(*curve_grid(y0, y1, knots, s, b, db), x, metric.quad, None).sum()
        loss.backward()
        return loss

    start = closure().item()
    opt.step(closure)
    final = action(*curve_grid(y0, y1, knots, s, b, db), x, metric.quad, None)
    torch.testing.assert_close(final, 0.5 * (y1 - y0).square().sum(-1), atol=0, rtol=1e-5)
    assert knots.abs().max() < 1e-3
    assert start > final.sum().item() + 1.0  # the random start really was bent


def test_path_net_starts_straight():
    net = PathNet(3, 2, 4, 16, 2)
    assert torch.equal(net(torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 2)), torch.zeros(5, 4, 3))
