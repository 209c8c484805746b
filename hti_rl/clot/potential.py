"""Conditional kernel density potential U(y|x) = α·log(p̂(y|x) + ε) (DESIGN.md §5.1).

p̂ pools every anchor's samples: p̂(y|x) = Σ_i K_x(x − x_i) K_y(y − y_i) / Σ_i K_x(x − x_i), with Gaussian
kernels of bandwidth h_x and h_y; K_y is a normalised density in y, K_x needs no normalisation since it
cancels. The potential is fixed (buffers only, nothing trained).

Cost: the sums run over the ``neighbours`` reference points with the largest x-kernel weight for each
query condition (all of them when the reference set is no larger), so evaluating P points on each of B
curves touches B·P·neighbours kernel values, not B·P·R. Truncation drops the points whose x-weight is
smallest, which matter least for the conditional density.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn


def neighbourhood(x: Tensor, ref_x: Tensor, ref_y: Tensor, h_x: float, neighbours: int, max_elements: int) -> tuple[Tensor, Tensor]:
    """The reference points that count at each condition: the ``neighbours`` with the largest x-kernel.
    x [B, C], ref_x [R, C], ref_y [R, D] -> (log weights [B, r], normalised over the r; outputs [B, r, D])

    Rows are processed in chunks so that no [rows, R] block exceeds ``max_elements``.
    """
    r = min(neighbours, ref_y.shape[0])
    rows = max(1, max_elements // ref_y.shape[0])
    ref_x_sq = ref_x.square().sum(-1)
    log_w, idx = [], []
    for start in range(0, x.shape[0], rows):
        xc = x[start : start + rows]
        # |a − b|² = |a|² − 2a·b + |b|²: one matmul instead of a difference tensor.
        dx = (xc.square().sum(-1, keepdim=True) - 2 * xc @ ref_x.T + ref_x_sq).clamp_min(0)
        w, i = (-dx / (2 * h_x**2)).topk(r, dim=-1)  # [rows, r]
        log_w.append(w - torch.logsumexp(w, dim=-1, keepdim=True))
        idx.append(i)
    return torch.cat(log_w), ref_y[torch.cat(idx)]


class _KernelLogSumExp(torch.autograd.Function):
    """log Σ_j exp(bias_j + y·r_j / h²) over each row's neighbours, differentiable in y only (the
    reference set and its weights are fixed buffers). The forward keeps the softmax weights, so the
    backward is one batched matmul instead of recomputing the exponentials.
    y [B, P, D], bias [B, r], ry [B, r, D] -> [B, P]"""

    @staticmethod
    def forward(ctx, y: Tensor, bias: Tensor, ry: Tensor, inv: float) -> Tensor:
        e = torch.baddbmm(bias[:, None, :], y, ry.transpose(1, 2), alpha=inv)  # [B, P, r]
        top = e.amax(-1, keepdim=True)
        e.sub_(top).exp_()
        total = e.sum(-1, keepdim=True)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(e.div_(total), ry)
            ctx.inv = inv
        return (total.log_() + top).squeeze(-1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        weights, ry = ctx.saved_tensors
        return torch.bmm(weights * (ctx.inv * grad).unsqueeze(-1), ry), None, None, None


def log_kde_at(y: Tensor, log_w: Tensor, ry: Tensor, h_y: float, max_elements: int) -> Tensor:
    """Log conditional KDE over each condition's neighbourhood.
    y [B, P, D], log_w [B, r], ry [B, r, D] (from :func:`neighbourhood`) -> log p̂(y|x) [B, P]

    −|y − r|²/2h² = (y·r − |r|²/2)/h² − |y|²/2h², and the last term does not depend on r: it leaves the
    log-sum-exp, which then runs on one fused matmul. Rows are chunked so that no [rows, P, r] block
    exceeds ``max_elements``. Differentiable in y (not in the reference set).
    """
    B, P, D = y.shape
    rows = max(1, max_elements // max(P * ry.shape[1], 1))
    inv = 1.0 / h_y**2
    bias = (log_w - (0.5 * inv) * ry.square().sum(-1)).detach()  # [B, r]
    ry = ry.detach()
    out = [_KernelLogSumExp.apply(y[i : i + rows], bias[i : i + rows], ry[i : i + rows], inv) for i in range(0, B, rows)]
    return torch.cat(out) - (0.5 * inv) * y.square().sum(-1) - 0.5 * D * math.log(2 * math.pi * h_y**2)


def log_kde(
    y: Tensor, x: Tensor, ref_y: Tensor, ref_x: Tensor, h_y: float, h_x: float, neighbours: int, max_elements: int
) -> Tensor:
    """Log conditional KDE. y [B, P, D], x [B, C], ref_y [R, D], ref_x [R, C] -> log p̂(y|x) [B, P]

    No intermediate block exceeds ``max_elements`` (see :func:`neighbourhood`, :func:`log_kde_at`).
    """
    log_w, ry = neighbourhood(x, ref_x, ref_y, h_x, neighbours, max_elements)
    return log_kde_at(y, log_w, ry, h_y, max_elements)


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
        max_elements: int = 2**22,
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
        return self.at(x)(y)

    def at(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """U at fixed conditions, their neighbourhoods found once: x [B, C] -> (y [B, P, D] -> U [B, P])"""
        log_w, ry = neighbourhood(x, self.ref_x, self.ref_y, self.h_x, self.neighbours, self.max_elements)

        def potential(y: Tensor) -> Tensor:
            log_p = log_kde_at(y, log_w, ry, self.h_y, self.max_elements)
            return self.alpha * torch.logaddexp(log_p, torch.full_like(log_p, self.log_eps))

        return potential
