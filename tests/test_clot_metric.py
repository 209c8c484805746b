"""Learned metric: SPD, eigenvalue floor and budget for random networks and inputs; special cases."""

import math

import pytest
import torch

from hti_rl.clot.metric import Metric, eigenvalues, givens


def random_metric(dim: int, seed: int) -> Metric:
    torch.manual_seed(seed)
    metric = Metric(dim, 3, 32, 2, floor=0.1)
    with torch.no_grad():
        for p in metric.parameters():
            p.normal_(0, 1.0)  # far from the zero initialisation, so eigenvalues and angles vary widely
    return metric


@pytest.mark.parametrize("dim", [1, 2, 6])
def test_spd_floor_and_budget(dim):
    metric = random_metric(dim, seed=dim)
    g = torch.Generator().manual_seed(0)
    y, x = 3 * torch.randn(64, 5, dim, generator=g), 3 * torch.randn(64, 3, generator=g)
    G = metric(y, x).double()
    torch.testing.assert_close(G, G.transpose(-1, -2), atol=1e-6, rtol=0)
    eig = torch.linalg.eigvalsh(G)
    assert eig.min() >= 0.1 - 1e-5
    torch.testing.assert_close(eig.sum(-1), torch.full(eig.shape[:-1], float(dim), dtype=torch.float64), atol=1e-5, rtol=0)
    if dim > 1:
        assert eig.max() - eig.min() > 0.5  # the random network really is anisotropic


def test_one_dimension_is_the_constant_one():
    G = random_metric(1, seed=3)(torch.randn(10, 1), torch.randn(10, 3))
    assert torch.equal(G, torch.ones(10, 1, 1))


def test_fresh_network_is_euclidean():
    metric = Metric(3, 2, 16, 2, floor=0.1)
    torch.testing.assert_close(metric(torch.randn(4, 3), torch.randn(4, 2)), torch.eye(3).expand(4, 3, 3))


def test_euclidean_option_is_identity():
    metric = Metric(4, 2, 16, 2, floor=0.1, learned=False)
    assert list(metric.parameters()) == []
    assert torch.equal(metric(torch.randn(5, 4), torch.randn(5, 2)), torch.eye(4).expand(5, 4, 4))
    v = torch.randn(5, 4)
    assert torch.equal(metric.quad(torch.randn(5, 4), torch.randn(5, 2), v), v.square().sum(-1))


def test_quad_is_the_quadratic_form():
    metric = random_metric(6, seed=4)
    y, x, v = torch.randn(20, 6), torch.randn(20, 3), torch.randn(20, 6)
    expected = torch.einsum("bi,bij,bj->b", v, metric(y, x), v)
    torch.testing.assert_close(metric.quad(y, x, v), expected, rtol=1e-5, atol=1e-5)


def test_eigenvalues_formula():
    e = eigenvalues(torch.tensor([[0.0, math.log(3.0)]]), floor=0.2)
    # floor + (D − floor·D)·softmax = 0.2 + 1.6·(1/4, 3/4)
    torch.testing.assert_close(e, torch.tensor([[0.6, 1.4]]))


def test_givens_single_pair_is_a_plane_rotation():
    R = givens(torch.tensor([math.pi / 2]), 2)
    torch.testing.assert_close(R, torch.tensor([[0.0, -1.0], [1.0, 0.0]]), atol=1e-6, rtol=0)
    R6 = givens(torch.randn(15), 6)
    torch.testing.assert_close(R6 @ R6.T, torch.eye(6), atol=1e-5, rtol=0)
