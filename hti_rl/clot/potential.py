"""Conditional kernel density potential U(y|x) = α·log(p̂(y|x) + ε) (docs/method.md §5.3).

p̂ pools every anchor's samples: p̂(y|x) = Σ_i K_x(x − x_i) K_y(y − y_i) / Σ_i K_x(x − x_i), with Gaussian
kernels of bandwidth h_x and h_y; K_y is a normalised density in y, K_x needs no normalisation since it
cancels. The potential is fixed (buffers only, nothing trained).

Cost: the sums run over the ``neighbours`` reference points with the largest x-kernel weight for each
query condition (all of them when the reference set is no larger), so evaluating P points on each of B
curves touches B·P·neighbours kernel values, not B·P·R. Truncation drops the points whose x-weight is
smallest, which matter least for the conditional density.

The kernel sums are log-sum-exps over mostly far-away points, so most exponents lie below float32's
underflow (about −87.3), where torch's CPU ``exp`` takes a path some 25–50× slower. :class:`LogSumExp`
clamps them there: each such term is below 2⁻¹²⁵ of the largest, so the sum does not change.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


UNDERFLOW = -87.0  # exp() of anything lower is below float32's smallest normal number


class LogSumExp(torch.autograd.Function):
    """torch.logsumexp over the last dim, with exponents relative to the row's largest clamped at
    :data:`UNDERFLOW` in both passes (same formulas as torch's otherwise). a [..., R] -> [...]"""

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        top = a.amax(-1, keepdim=True)
        empty = top.squeeze(-1) == -math.inf  # rows of -inf only: their sum is 0, not the clamp's floor
        top.masked_fill_(top.abs() == math.inf, 0)
        out = (a - top).clamp_min_(UNDERFLOW).exp_().sum(-1).log_().add_(top.squeeze(-1)).masked_fill_(empty, -math.inf)
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        a, out = ctx.saved_tensors
        return grad.unsqueeze(-1) * (a - out.unsqueeze(-1)).clamp_min_(UNDERFLOW).exp_()


def neighbourhood(x: Tensor, ref_x: Tensor, h_x: float, neighbours: int, max_elements: int) -> tuple[Tensor, Tensor]:
    """The reference points that count at each condition: the ``neighbours`` with the largest x-kernel.
    x [B, C], ref_x [R, C] -> (log x-weights [B, r], their indices into the reference set [B, r])

    It depends on the conditions only, so a fit computes it once for its N conditions
    (:meth:`KDEPotential.neighbourhoods`). Rows are chunked so that no [rows, R] block exceeds ``max_elements``.
    """
    r = min(neighbours, ref_x.shape[0])
    rows = max(1, max_elements // ref_x.shape[0])
    ref_x_sq = ref_x.square().sum(-1)
    log_w, idx = [], []
    for start in range(0, x.shape[0], rows):
        xc = x[start : start + rows]
        # |a − b|² = |a|² − 2a·b + |b|²: one matmul instead of a difference tensor.
        dx = (xc.square().sum(-1, keepdim=True) - 2 * xc @ ref_x.T + ref_x_sq).clamp_min(0)
        lw, i = (-dx / (2 * h_x**2)).topk(r, dim=-1)
        log_w.append(lw)
        idx.append(i)
    return torch.cat(log_w), torch.cat(idx)


def log_kde_near(y: Tensor, log_w: Tensor, near_y: Tensor, h_y: float, max_elements: int) -> Tensor:
    """Log conditional KDE over given neighbourhoods.
    y [B, P, D], log_w [B, r] (from :func:`neighbourhood`), near_y [B, r, D] (the reference outputs at its
    indices) -> log p̂(y|x) [B, P]

    Rows are chunked so that no [rows, P, r] block exceeds ``max_elements``.
    """
    B, P, D = y.shape
    rows = max(1, max_elements // max(P * log_w.shape[1], 1))
    out = []
    for start in range(0, B, rows):
        yc, log_wx, ry = y[start : start + rows], log_w[start : start + rows], near_y[start : start + rows]
        dy = (yc.square().sum(-1, keepdim=True) - 2 * yc @ ry.transpose(1, 2) + ry.square().sum(-1)[:, None, :])
        log_joint = LogSumExp.apply(log_wx[:, None, :] - dy.clamp_min(0) / (2 * h_y**2))  # [rows, P]
        out.append(log_joint - torch.logsumexp(log_wx, dim=-1, keepdim=True))
    return torch.cat(out) - 0.5 * D * math.log(2 * math.pi * h_y**2)


def log_kde(
    y: Tensor, x: Tensor, ref_y: Tensor, ref_x: Tensor, h_y: float, h_x: float, neighbours: int, max_elements: int
) -> Tensor:
    """Log conditional KDE. y [B, P, D], x [B, C], ref_y [R, D], ref_x [R, C] -> log p̂(y|x) [B, P]

    No [rows, R] or [rows, P, r] block exceeds ``max_elements`` (:func:`neighbourhood`, :func:`log_kde_near`).
    """
    log_w, idx = neighbourhood(x, ref_x, h_x, neighbours, max_elements)
    return log_kde_near(y, log_w, ref_y[idx], h_y, max_elements)


class KDEPotential(nn.Module):
    """U(y|x) = α·log(p̂(y|x) + ε) over a fixed reference set.

    :param ref_x: reference conditions [R, C].
    :param ref_y: reference outputs [R, D] (all anchors pooled).
    :param h_y: kernel bandwidth in y.
    :param h_x: kernel bandwidth in x.
    :param alpha: strength α of the potential.
    :param eps: floor ε added to the density, so U stays bounded far from the data.
    :param neighbours: reference points per query condition (those with the largest x-weight).
    :param max_elements: memory cap on one [rows, P, neighbours] block during evaluation.
    """

    def __init__(
        self,
        ref_x: Tensor,
        ref_y: Tensor,
        h_y: float,
        h_x: float,
        alpha: float,
        eps: float,
        neighbours: int = 256,
        max_elements: int = 2**20,
    ):
        super().__init__()
        self.register_buffer("ref_x", ref_x)
        self.register_buffer("ref_y", ref_y)
        self.h_y, self.h_x, self.alpha, self.log_eps = h_y, h_x, alpha, math.log(eps)
        self.neighbours, self.max_elements = neighbours, max_elements

    @classmethod
    def from_samples(
        cls, x: Tensor, y: Tensor, max_ref: int, generator: torch.Generator, **kwargs
    ) -> "KDEPotential":
        """Pool all anchors' samples and keep at most ``max_ref`` of them, drawn uniformly.

        :param x: conditions [N, C].
        :param y: anchor samples [K, N, M, D].
        :param max_ref: size cap of the reference set.
        :param generator: source of the subsample.
        :param kwargs: the other arguments of :class:`KDEPotential`.
        """
        K, N, M, D = y.shape
        pooled_y = y.permute(1, 0, 2, 3).reshape(N * K * M, D)
        pooled_x = x.repeat_interleave(K * M, dim=0)
        if pooled_y.shape[0] > max_ref:
            keep = torch.randperm(pooled_y.shape[0], generator=generator)[:max_ref]
            pooled_x, pooled_y = pooled_x[keep], pooled_y[keep]
        return cls(pooled_x.clone(), pooled_y.clone(), **kwargs)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """y [B, P, D], x [B, C] -> U [B, P]"""
        return self.near(y, *self.neighbourhoods(x))

    def neighbourhoods(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, C] -> (log x-weights [B, r], reference outputs there [B, r, D]): the condition-only part of U."""
        log_w, idx = neighbourhood(x, self.ref_x, self.h_x, self.neighbours, self.max_elements)
        return log_w, self.ref_y[idx]

    def near(self, y: Tensor, log_w: Tensor, near_y: Tensor) -> Tensor:
        """U over neighbourhoods from :meth:`neighbourhoods`. y [B, P, D], log_w [B, r], near_y [B, r, D] -> U [B, P]"""
        log_p = log_kde_near(y, log_w, near_y, self.h_y, self.max_elements)
        return self.alpha * torch.logaddexp(log_p, torch.full_like(log_p, self.log_eps))
