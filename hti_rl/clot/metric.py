"""Learned Riemannian metric G(y|x) = R·diag(e)·Rᵀ on the output space (docs/method.md §5.4).

SPD by construction: the eigenvalues e are bounded below by ``floor`` and keep a fixed sum D (the
budget, so G cannot shrink to 0 and the Euclidean metric I is in the family); R is a product of Givens
rotations over all D(D−1)/2 coordinate pairs. A FiLM network reads y, modulated by x, and outputs the
eigenvalue logits and the angles. With D = 1 the softmax of one logit is 1, so G is the constant 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hti_rl.clot.film import FiLMMLP


def eigenvalues(logits: Tensor, floor: float) -> Tensor:
    """logits [..., D] -> e [..., D] with e_i >= floor and Σ e_i = D.

    This is docs/method.md §5.4's floor + (1 − floor·D)·softmax scaled by D, so that the floor and the budget are
    in the units of the identity metric.
    """
    D = logits.shape[-1]
    return floor + (D - floor * D) * torch.softmax(logits, dim=-1)


def givens(angles: Tensor, dim: int) -> Tensor:
    """angles [..., D(D−1)/2] -> rotation R [..., D, D], the product of one Givens rotation per pair (i < j)."""
    eye = torch.eye(dim, dtype=angles.dtype, device=angles.device)
    cols = [eye[i].expand(*angles.shape[:-1], dim) for i in range(dim)]
    cos, sin = angles.cos(), angles.sin()
    p = 0
    for i in range(dim):
        for j in range(i + 1, dim):
            c, s = cos[..., p : p + 1], sin[..., p : p + 1]
            # Right-multiplying by a Givens rotation mixes only columns i and j.
            cols[i], cols[j] = c * cols[i] + s * cols[j], c * cols[j] - s * cols[i]
            p += 1
    return torch.stack(cols, dim=-1)


class Metric(nn.Module):
    """G(y|x), learned or Euclidean.

    :param dim: output dimension D.
    :param cond_dim: condition dimension C.
    :param hidden: width of the FiLM network.
    :param depth: hidden layers of the FiLM network.
    :param floor: lower bound on every eigenvalue, in (0, 1).
    :param learned: False gives the Euclidean metric G = I (the ablation).
    """

    def __init__(self, dim: int, cond_dim: int, hidden: int, depth: int, floor: float, learned: bool = True):
        super().__init__()
        self.dim, self.floor, self.learned = dim, floor, learned
        self.n_angles = dim * (dim - 1) // 2
        self.net = FiLMMLP(dim, cond_dim, dim + self.n_angles, hidden, depth) if learned else None

    def factors(self, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """y [B, ..., D], x [B, C] -> (R [B, ..., D, D], e [B, ..., D])"""
        if self.net is None:
            e = torch.ones_like(y)
            return torch.eye(self.dim, dtype=y.dtype).expand(*y.shape, self.dim), e
        out = self.net(y, x)
        return givens(out[..., self.dim :], self.dim), eigenvalues(out[..., : self.dim], self.floor)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """y [B, ..., D], x [B, C] -> G [B, ..., D, D]"""
        R, e = self.factors(y, x)
        return (R * e.unsqueeze(-2)) @ R.transpose(-1, -2)

    def quad(self, y: Tensor, x: Tensor, v: Tensor) -> Tensor:
        """vᵀ G(y|x) v. y [B, ..., D], x [B, C], v [B, ..., D] -> [B, ...]"""
        if self.net is None:
            return v.square().sum(-1)
        return self.quad_at(y, self.net.modulation(x), v)

    def quad_at(self, y: Tensor, gb: Tensor, v: Tensor) -> Tensor:
        """:meth:`quad` at conditions whose FiLM is given. y, v [B, ..., D], gb [B, 2·depth, hidden] -> [B, ...]"""
        if self.net is None:
            return v.square().sum(-1)
        out = self.net.apply(y, gb)
        R, e = givens(out[..., self.dim :], self.dim), eigenvalues(out[..., : self.dim], self.floor)
        w = (R * v.unsqueeze(-1)).sum(-2)  # Rᵀ v
        return (e * w.square()).sum(-1)
