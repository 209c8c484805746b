"""Per-interval conditional transport: Kantorovich potential g_k(y|x) and map T_k(y|x), trained with
the semi-dual of OT under a cost c(y0, y1|x) (DESIGN.md §5.5).

The semi-dual maximises E[c(y_k, T(y_k)) − g(T(y_k))] + E[g(y_{k+1})], where T(y_k) stands for the
c-transform's argmin_y' c(y_k, y') − g(y'). T's guess is refined by a few gradient steps on that
objective and T is regressed onto the refined point, so T tracks the argmin without being the thing
that g plays against directly.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from hti_rl.clot.film import FiLMMLP

Cost = Callable[[Tensor, Tensor], Tensor]  # (y0 [B, D], y1 [B, D]) -> c [B], at a batch's fixed conditions
CostAt = Callable[[Tensor], Cost]  # conditions x [B, C] -> the cost there (condition-only work done once)


def euclidean_cost(x: Tensor) -> Cost:
    """½‖y1 − y0‖² at conditions x [B, C] (unused): (y0, y1 [B, D]) -> [B]"""
    return lambda y0, y1: 0.5 * (y1 - y0).square().sum(-1)


class IntervalTransport(nn.Module):
    """g_k and T_k for one interval between adjacent anchors.

    :param dim: output dimension D.
    :param cond_dim: condition dimension C.
    :param hidden: width of both MLPs.
    :param depth: hidden layers of both MLPs.
    """

    def __init__(self, dim: int, cond_dim: int, hidden: int, depth: int):
        super().__init__()
        self.g_net = FiLMMLP(dim, cond_dim, 1, hidden, depth)
        self.t_net = FiLMMLP(dim, cond_dim, dim, hidden, depth)

    def g(self, y: Tensor, x: Tensor) -> Tensor:
        """Kantorovich potential. y [B, D], x [B, C] -> [B]"""
        return self.g_net(y, x).squeeze(-1)

    def g_at(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """g at fixed conditions, their FiLM computed once: x [B, C] -> (y [B, D] -> [B])"""
        gb = self.g_net.modulation(x)
        return lambda y: self.g_net.apply(y, gb).squeeze(-1)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """The map T(y|x) = y + MLP(y|x). y [B, D], x [B, C] -> [B, D]"""
        return y + self.t_net(y, x)


def refine(
    y0: Tensor, guess: Tensor, g: Callable[[Tensor], Tensor], cost: Cost, steps: int, lr: float
) -> tuple[Tensor, Tensor]:
    """A few gradient steps on f(y') = c(y0, y') − g(y') from ``guess``, at the batch's conditions.
    y0, guess [B, D] -> (refined argmin [B, D], f there [B]), both detached

    :param g: the potential at the batch's conditions, y [B, D] -> [B].
    :param cost: the cost at the batch's conditions.

    Each row keeps its own step size and only accepts a step that lowers its f (halving the step
    otherwise), so the refined point is never worse than T's guess even where g is steep; a plain
    gradient step there overshoots and feeds g ever wilder targets.
    """

    def value_and_grad(y: Tensor) -> tuple[Tensor, Tensor]:
        y = y.detach().requires_grad_(True)
        f = cost(y0, y) - g(y)
        # f is separable over the batch, so the gradient of its sum is each row's gradient.
        (grad,) = torch.autograd.grad(f.sum(), y)
        return f.detach(), grad

    y = guess.detach()
    f, grad = value_and_grad(y)
    step = torch.full_like(f, lr).unsqueeze(-1)
    for _ in range(steps):
        candidate = y - step * grad
        f_new, grad_new = value_and_grad(candidate)
        better = (f_new < f).unsqueeze(-1)
        y = torch.where(better, candidate, y)
        f = torch.where(better.squeeze(-1), f_new, f)
        grad = torch.where(better, grad_new, grad)
        step = torch.where(better, step, 0.5 * step)
    return y, f


def semi_dual_losses(
    transports: Sequence[IntervalTransport], y0: Tensor, y1: Tensor, x: Tensor, cost_at: CostAt, refine_steps: int,
    refine_lr: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Losses of one semi-dual step on J intervals at once, each a batch of pairs drawn at shared conditions.
    y0 [J, B, D] from anchor k, y1 [J, B, D] from anchor k+1, x [J, B, C] ->
    (loss_g, loss_T, dual value, mean cost c(y0, y*)), each [J].

    All J·B rows go through the cost (path net, metric, potential) as one batch, with the cost's
    condition-only work done once; only g_k and T_k are per interval.

    The argmin search starts from the better of T's guess and the batch's own target sample y1[j] that
    minimises ½‖y0 − y1[j]‖² − g(y1[j]). Local refinement alone lets g grow a spike on a target sample
    that no search from T's guess reaches, and the semi-dual then diverges; offering the targets
    themselves as candidates makes such a spike cost g at once.

    loss_g is minus the semi-dual (its c term is constant in g); loss_T regresses T onto the refined
    argmin. The losses of different intervals, and g's and T's, touch disjoint parameters, so their sum
    can be stepped by one optimiser.
    """
    J, B, D = y0.shape
    mapped = torch.stack([t(y0[j], x[j]) for j, t in enumerate(transports)])
    y0f, xf = y0.reshape(J * B, D), x.reshape(J * B, -1)
    with torch.no_grad():  # the search needs gradients in y only: the conditions' work is constant
        cost = cost_at(xf)
        g_each = [t.g_at(x[j]) for j, t in enumerate(transports)]

        def g(y: Tensor) -> Tensor:
            return torch.cat([gj(yj) for gj, yj in zip(g_each, y.view(J, B, D))])

        nearest = (0.5 * torch.cdist(y0, y1).square() - g(y1.reshape(J * B, D)).view(J, 1, B)).argmin(-1)
        near = torch.gather(y1, 1, nearest.unsqueeze(-1).expand(J, B, D)).reshape(J * B, D)
        mapped_f = mapped.detach().reshape(J * B, D)
        better = (cost(y0f, near) - g(near)) < (cost(y0f, mapped_f) - g(mapped_f))
        guess = torch.where(better.unsqueeze(-1), near, mapped_f)
    target, f = refine(y0f, guess, g, cost, refine_steps, refine_lr)
    target = target.view(J, B, D)
    g_target = torch.stack([t.g(target[j], x[j]) for j, t in enumerate(transports)])  # [J, B]
    loss_g = g_target.mean(-1) - torch.stack([t.g(y1[j], x[j]).mean() for j, t in enumerate(transports)])
    loss_t = (mapped - target).square().sum(-1).mean(-1)
    c = (f.view(J, B) + g_target.detach()).mean(-1)  # c(y0, y*) = f + g at y*
    return loss_g, loss_t, c - loss_g.detach(), c
