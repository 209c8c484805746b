"""Transport against exact answers: POT's emd2 on samples, the closed-form Gaussian OT map (semi-dual and
assignment)."""

import numpy as np
import ot
import pytest
import torch
from scipy.linalg import sqrtm

from hti_rl.clot.transport import (
    IntervalTransport,
    assignment_loss,
    at_conditions,
    euclidean_cost,
    largest_shift,
    refine,
    semi_dual_losses,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors gain nothing from threads, and on a busy CI box spinning OpenMP threads slow these
    tests tenfold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(transport, draw, steps, lr=1e-3):
    opt = torch.optim.Adam(transport.parameters(), lr=lr)
    for _ in range(steps):
        y0, y1 = draw()
        x = torch.zeros(len(y0), 1)
        loss_g, loss_t, _, _ = semi_dual_losses(transport, y0, y1, x, at_conditions(euclidean_cost), 3, 0.5)
        opt.zero_grad()
        (loss_g + loss_t).backward()
        opt.step()


def test_transport_cost_matches_emd2_on_samples():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 2, generator=g)
    b = torch.randn(200, 2, generator=g) @ torch.tensor([[1.5, 0.8], [0.0, 0.4]]) + torch.tensor([1.0, 0.5])
    b[:100] += torch.tensor([0.0, 1.5])  # a two-cluster target: not a Gaussian-to-Gaussian problem
    exact = ot.emd2([], [], ot.dist(a.double().numpy(), b.double().numpy()) / 2)
    transport = IntervalTransport(2, 1, 64, 3)
    train(transport, lambda: (a, b), 400)
    x = torch.zeros(200, 1)
    # The learned cost: the semi-dual E[c(y, y*) − g(y*)] + E[g(y')] at the refined c-transform argmin.
    y_star, _ = refine(a, transport(a, x), transport.g_at(x), at_conditions(euclidean_cost)(x), 50, 0.5)
    with torch.no_grad():
        learned = (euclidean_cost(a, y_star, x) - transport.g(y_star, x)).mean() + transport.g(b, x).mean()
    assert abs(learned.item() - exact) / exact < 0.05, (learned.item(), exact)


def test_map_matches_closed_form_gaussian_map():
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(1)
    m0, m1 = np.array([0.0, 0.0]), np.array([1.0, -0.5])
    s0 = np.array([[1.0, 0.3], [0.3, 0.5]])
    s1 = np.array([[0.6, -0.4], [-0.4, 1.2]])
    r0 = np.real(sqrtm(s0))
    r0_inv = np.linalg.inv(r0)
    A = r0_inv @ np.real(sqrtm(r0 @ s1 @ r0)) @ r0_inv  # the Gaussian OT map's linear part
    L0, L1 = (torch.tensor(np.linalg.cholesky(s), dtype=torch.float32) for s in (s0, s1))
    mean1 = torch.tensor(m1, dtype=torch.float32)

    def draw():
        return torch.randn(512, 2, generator=g) @ L0.T, torch.randn(512, 2, generator=g) @ L1.T + mean1

    transport = IntervalTransport(2, 1, 64, 3)
    train(transport, draw, 600)
    y = torch.randn(2000, 2, generator=g) @ L0.T
    expected = y @ torch.tensor(A, dtype=torch.float32).T + mean1
    with torch.no_grad():
        mapped = transport(y, torch.zeros(2000, 1))
    # Within one spread of the source (|y| < 2σ, where the training samples are dense), the map is off by
    # under 0.1 on average, against output displacements of about 1.
    inside = (y @ torch.tensor(np.linalg.inv(s0), dtype=torch.float32) * y).sum(-1) < 4
    error = (mapped - expected).norm(dim=-1)[inside].mean().item()
    displacement = (expected - y).norm(dim=-1)[inside].mean().item()
    assert error < 0.1 and displacement > 0.8, (error, displacement)


def gaussian_map_problem(seed: int):
    """Two correlated 2-D Gaussians and the closed-form OT map between them:
    (draw n [..., 2] from the source, from the target; A [2, 2], target mean [2])."""
    g = torch.Generator().manual_seed(seed)
    m1 = np.array([1.0, -0.5])
    s0 = np.array([[1.0, 0.3], [0.3, 0.5]])
    s1 = np.array([[0.6, -0.4], [-0.4, 1.2]])
    r0 = np.real(sqrtm(s0))
    r0_inv = np.linalg.inv(r0)
    A = torch.tensor(r0_inv @ np.real(sqrtm(r0 @ s1 @ r0)) @ r0_inv, dtype=torch.float32)
    L0, L1 = (torch.tensor(np.linalg.cholesky(s), dtype=torch.float32) for s in (s0, s1))
    mean1 = torch.tensor(m1, dtype=torch.float32)
    source = lambda *shape: torch.randn(*shape, 2, generator=g) @ L0.T  # noqa: E731
    target = lambda *shape: torch.randn(*shape, 2, generator=g) @ L1.T + mean1  # noqa: E731
    return source, target, A, mean1


def test_assignment_couples_each_condition_exactly():
    g = torch.Generator().manual_seed(0)
    y0, y1 = torch.randn(5, 6, 2, generator=g), 2 * torch.randn(5, 6, 2, generator=g) + 1
    transport = IntervalTransport(2, 1, 16, 2)
    _, matched = assignment_loss(transport, y0, y1, torch.zeros(5, 1), at_conditions(euclidean_cost))
    exact = np.mean([ot.emd2([], [], ot.dist(a.double().numpy(), b.double().numpy()) / 2) for a, b in zip(y0, y1)])
    assert matched.item() == pytest.approx(exact, rel=1e-5)


def test_assignment_trained_map_matches_closed_form_gaussian_map():
    torch.manual_seed(1)
    source, target, A, mean1 = gaussian_map_problem(1)
    transport = IntervalTransport(2, 1, 64, 3)
    opt = torch.optim.Adam(transport.parameters(), lr=1e-3)
    for _ in range(600):  # 2 conditions x 128 samples of each side a step
        loss, _ = assignment_loss(transport, source(2, 128), target(2, 128), torch.zeros(2, 1), at_conditions(euclidean_cost))
        opt.zero_grad()
        loss.backward()
        opt.step()
    y = source(2000)
    with torch.no_grad():
        error = (transport(y, torch.zeros(2000, 1)) - (y @ A.T + mean1)).norm(dim=-1)
    # Where the source is dense (|y| < 2σ), off by under 0.1 on average, against displacements of about 1.2.
    # (Measured with sets of 8, 64, 128 and 256 samples: 0.22, 0.041, 0.070 and 0.031; the partner among m
    # samples is a noisy draw of the map's image, and with m = 8 the regression contracts the pushed spread
    # to 0.68 of the target's.)
    inside = (y @ torch.linalg.inv(torch.tensor([[1.0, 0.3], [0.3, 0.5]])) * y).sum(-1) < 4
    assert error[inside].mean().item() < 0.1, error[inside].mean().item()


def test_largest_shift_is_the_farthest_pair_at_one_condition():
    g = torch.Generator().manual_seed(0)
    y0, y1 = torch.randn(37, 5, 2, generator=g), 3 * torch.randn(37, 6, 2, generator=g)
    brute = max(float((a[:, None] - b[None]).norm(dim=-1).max()) for a, b in zip(y0, y1))
    assert largest_shift(y0, y1, max_elements=64).item() == pytest.approx(brute, rel=1e-6)  # chunked: 2 conditions a block
    assert largest_shift(y0, y1).item() == pytest.approx(brute, rel=1e-6)


def test_a_bounded_map_moves_no_sample_beyond_its_bound():
    transport = IntervalTransport(2, 1, 16, 2, bounded=True)
    transport.max_shift.fill_(0.5)
    with torch.no_grad():
        transport.t_net.out.bias.fill_(100.0)  # an MLP gone far: the unbounded map would move samples by 141
        y = torch.randn(64, 2)
        shift = (transport(y, torch.zeros(64, 1)) - y).norm(dim=-1)
    assert shift.max().item() <= 0.5 * 2**0.5 + 1e-6
    assert not IntervalTransport(2, 1, 16, 2).bounded  # the default (and fits made before the bound) is unbounded
