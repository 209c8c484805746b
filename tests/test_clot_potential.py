"""KDE potential: exact values against the formula, conditioning, chunking, truncation, the clamped log-sum-exp."""

import math

import torch

from hti_rl.clot.potential import KDEPotential, LogSumExp, log_kde


def brute_log_kde(y, x, ref_y, ref_x, h_y, h_x):
    """Direct formula, float64, no tricks. y [B, P, D], x [B, C] -> [B, P]"""
    y, x, ref_y, ref_x = (a.double() for a in (y, x, ref_y, ref_x))
    wx = torch.exp(-((x[:, None] - ref_x[None]) ** 2).sum(-1) / (2 * h_x**2))  # [B, R]
    D = y.shape[-1]
    ky = torch.exp(-((y[:, :, None] - ref_y[None, None]) ** 2).sum(-1) / (2 * h_y**2)) / (2 * math.pi * h_y**2) ** (D / 2)
    return torch.log((wx[:, None] * ky).sum(-1) / wx.sum(-1, keepdim=True))


def test_single_reference_point_is_a_gaussian_density():
    pot = KDEPotential(torch.zeros(1, 1), torch.tensor([[1.0, -1.0]]), h_y=0.5, h_x=1.0, alpha=2.0, eps=1e-3)
    y = torch.tensor([[[1.0, -1.0], [1.5, -1.0]]])
    expected = [2.0 * math.log(1 / (2 * math.pi * 0.25) + 1e-3),
                2.0 * math.log(math.exp(-0.5) / (2 * math.pi * 0.25) + 1e-3)]
    torch.testing.assert_close(pot(y, torch.zeros(1, 1)), torch.tensor([expected]))


def test_matches_brute_force_with_chunking():
    g = torch.Generator().manual_seed(0)
    ref_x, ref_y = torch.randn(300, 3, generator=g), torch.randn(300, 2, generator=g)
    y, x = torch.randn(7, 5, 2, generator=g), torch.randn(7, 3, generator=g)
    expected = brute_log_kde(y, x, ref_y, ref_x, 0.4, 0.8).float()
    # max_elements forces one query row per chunk; neighbours >= R keeps the sum exact.
    torch.testing.assert_close(log_kde(y, x, ref_y, ref_x, 0.4, 0.8, 300, 1), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(log_kde(y, x, ref_y, ref_x, 0.4, 0.8, 1000, 2**22), expected, rtol=1e-4, atol=1e-4)


def test_conditioning_selects_the_nearby_condition():
    # Two conditions far apart in x, each with its own output: p̂(y|x) follows the condition.
    ref_x, ref_y = torch.tensor([[0.0], [10.0]]), torch.tensor([[0.0], [5.0]])
    y = torch.tensor([[[0.0]], [[0.0]]])
    log_p = log_kde(y, torch.tensor([[0.0], [10.0]]), ref_y, ref_x, 1.0, 1.0, 2, 2**22)
    torch.testing.assert_close(log_p[0, 0], torch.tensor(-0.5 * math.log(2 * math.pi)))
    torch.testing.assert_close(log_p[1, 0], torch.tensor(-0.5 * math.log(2 * math.pi) - 12.5))


def test_density_integrates_to_one_in_y():
    g = torch.Generator().manual_seed(1)
    ref_x, ref_y = torch.randn(50, 2, generator=g), torch.randn(50, 1, generator=g)
    grid = torch.linspace(-8, 8, 4001)
    log_p = log_kde(grid.view(1, -1, 1), torch.tensor([[0.3, -0.2]]), ref_y, ref_x, 0.3, 1.0, 50, 2**22)
    assert abs(torch.trapezoid(log_p.exp()[0], grid).item() - 1.0) < 1e-4


def test_truncation_keeps_the_nearest_conditions():
    # With 1 neighbour only the reference nearest in x counts, whatever its y.
    ref_x, ref_y = torch.tensor([[0.0], [0.5]]), torch.tensor([[0.0], [3.0]])
    y = torch.tensor([[[3.0]]])
    log_p = log_kde(y, torch.tensor([[0.4]]), ref_y, ref_x, 1.0, 1.0, 1, 2**22)
    torch.testing.assert_close(log_p[0, 0], torch.tensor(-0.5 * math.log(2 * math.pi)))


def test_from_samples_pools_and_caps_the_reference_set():
    y = torch.arange(2 * 3 * 4 * 1, dtype=torch.float32).view(2, 3, 4, 1)
    x = torch.tensor([[0.0], [1.0], [2.0]])
    pot = KDEPotential.from_samples(x, y, 1000, torch.Generator(), h_y=1.0, h_x=1.0, alpha=1.0, eps=1e-3)
    assert pot.ref_y.shape == (24, 1)
    # Every pooled sample keeps its own condition: sample y[k, n, m] sits at x[n].
    pairs = {(float(a), float(b)) for a, b in zip(pot.ref_x[:, 0], pot.ref_y[:, 0])}
    assert pairs == {(float(n), float(y[k, n, m, 0])) for k in range(2) for n in range(3) for m in range(4)}
    capped = KDEPotential.from_samples(x, y, 10, torch.Generator(), h_y=1.0, h_x=1.0, alpha=1.0, eps=1e-3)
    assert capped.ref_y.shape == (10, 1)


def test_clamped_logsumexp_equals_torch_to_the_bit_with_its_gradient():
    # Rows spread over hundreds of nats, as the kernel sums are: most terms lie below the clamp, none may count.
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(64, 12, 256, generator=g) * 150).requires_grad_(True)
    a.data[0, 0] = -1e4  # a row with every exponent far below the clamp but its largest
    a.data[1, 0, :3] = -math.inf  # torch's treatment of -inf entries
    a.data[2, 0] = -math.inf  # and of a row of them only
    b = a.detach().clone().requires_grad_(True)
    ours, theirs = LogSumExp.apply(a), torch.logsumexp(b, dim=-1)
    assert torch.equal(ours, theirs) and ours[2, 0] == -math.inf
    a.data[2, 0], b.data[2, 0] = 0.0, 0.0  # both gradients are NaN on an empty row
    ours, theirs = LogSumExp.apply(a), torch.logsumexp(b, dim=-1)
    w = torch.randn(theirs.shape, generator=g)
    (ours * w).sum().backward()
    (theirs * w).sum().backward()
    # Gradient terms below 2^-125 of a row's largest are zero here and subnormal in torch's; nothing else differs.
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-37)
    big = b.grad.abs() > 1e-30
    assert torch.equal(a.grad[big], b.grad[big])
