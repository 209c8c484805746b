"""Per-interval conditional transport: the map T_k(y|x), and for the semi-dual a Kantorovich potential
g_k(y|x), under a cost c(y0, y1|x) (docs/method.md §5.7).

Two ways to train T_k. By assignment (the default): at each condition of a batch, the exact OT coupling of
anchor k's samples to anchor k+1's under c (an assignment problem, solved exactly), and T_k regressed onto
each sample's partner. This needs the anchors' samples at shared conditions, which every hti-rl dataset
has. By the semi-dual (the paper's training, for marginals without shared conditions): it maximises
E[c(y_k, T(y_k)) − g(T(y_k))] + E[g(y_{k+1})], where T(y_k) stands for the c-transform's
argmin_y' c(y_k, y') − g(y'). T's guess is refined by a few gradient steps on that objective and T is
regressed onto the refined point, so T tracks the argmin without being the thing that g plays against
directly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from hti_rl.clot.film import FiLMMLP

Cost = Callable[[Tensor, Tensor, Tensor], Tensor]  # (y0 [B, D], y1 [B, D], x [B, C]) -> c [B]
BoundCost = Callable[[Tensor, Tensor], Tensor]  # (y0 [B, D], y1 [B, D]) -> c [B] at one batch's conditions
# A batch's conditions -> the cost there. The fit passes condition indices [B] and does the work that
# depends on the conditions only (FiLM, the potential's neighbourhoods) once per batch.
CostAt = Callable[[Tensor], BoundCost]


def at_conditions(cost: Cost) -> CostAt:
    """A :data:`Cost` as a :data:`CostAt` whose conditions are x [B, C], with no work per batch."""
    return lambda x: (lambda y0, y1: cost(y0, y1, x))


def euclidean_cost(y0: Tensor, y1: Tensor, x: Tensor) -> Tensor:
    """½‖y1 − y0‖². y0, y1 [B, D], x [B, C] (unused) -> [B]"""
    return 0.5 * (y1 - y0).square().sum(-1)


class IntervalTransport(nn.Module):
    """g_k and T_k for one interval between adjacent anchors.

    :param dim: output dimension D.
    :param cond_dim: condition dimension C.
    :param hidden: width of both MLPs.
    :param depth: hidden layers of both MLPs.
    :param bounded: T's displacement is ``max_shift · tanh(MLP / max_shift)``, below the buffer ``max_shift``
        (set by the fit: :func:`largest_shift`); unbounded, it is the MLP's output (fits before the bound).
    """

    def __init__(self, dim: int, cond_dim: int, hidden: int, depth: int, bounded: bool = False):
        super().__init__()
        self.g_net = FiLMMLP(dim, cond_dim, 1, hidden, depth)
        self.t_net = FiLMMLP(dim, cond_dim, dim, hidden, depth)
        self.bounded = bounded
        if bounded:
            self.register_buffer("max_shift", torch.ones(()))

    def g(self, y: Tensor, x: Tensor) -> Tensor:
        """Kantorovich potential. y [B, D], x [B, C] -> [B]"""
        return self.g_net(y, x).squeeze(-1)

    def g_at(self, x: Tensor) -> Callable[[Tensor], Tensor]:
        """g at fixed conditions x [B, C], their FiLM computed once (no gradient to it): y [B, D] -> [B]"""
        with torch.no_grad():
            gb = self.g_net.modulation(x)
        return lambda y: self.g_net.apply(y, gb).squeeze(-1)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """The map T(y|x) = y + MLP(y|x), the displacement bounded if ``bounded``. y [B, D], x [B, C] -> [B, D]"""
        shift = self.t_net(y, x)
        if self.bounded:
            shift = self.max_shift * torch.tanh(shift / self.max_shift)
        return y + shift


def largest_shift(y0: Tensor, y1: Tensor, max_elements: int = 2**24) -> Tensor:
    """The largest distance between a sample of y0 and one of y1 at the same condition: no coupling of the two
    conditional distributions moves a sample farther. y0, y1 [N, M, D] -> scalar; no [rows, M, M] block
    exceeds ``max_elements``."""
    rows = max(1, max_elements // (y0.shape[1] * y1.shape[1]))
    return torch.stack([torch.cdist(a, b).amax() for a, b in zip(y0.split(rows), y1.split(rows))]).amax()


def assignments(cost: np.ndarray) -> np.ndarray:
    """Exact OT between equal-size uniform sample sets, one problem per row: cost [B, M, M] ->
    partner [B, M] (sample m of the first set goes to sample partner[b, m] of the second)."""
    return np.stack([linear_sum_assignment(c)[1] for c in cost]) if cost.shape[1] > 1 else np.zeros(cost.shape[:2], int)


def assignment_loss(
    transport: IntervalTransport, y0: Tensor, y1: Tensor, x: Tensor, cost_at: CostAt, conditions: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """T's regression onto the exact OT partners of anchor k's samples among anchor k+1's, condition by condition.
    y0, y1 [B, M, D] (M samples of anchors k and k+1 at each of B conditions), x [B, C] ->
    (loss_T, mean cost of the coupling), both scalars.

    The coupling is computed under the cost as it stands (no gradient to it), on all M × M pairs at each
    condition: the exact argmin of the transport cost among couplings of the two sample sets, which the
    semi-dual's potential only approximates.

    :param cost_at: the cost at a batch's conditions (:func:`at_conditions` of a :data:`Cost`).
    :param conditions: what ``cost_at`` reads the conditions from, one row per condition (default: x).
    """
    B, M, D = y0.shape
    conditions = x if conditions is None else conditions
    with torch.no_grad():
        rows = conditions.repeat_interleave(M * M, 0)
        c = cost_at(rows)(y0[:, :, None].expand(B, M, M, D).reshape(-1, D),
                          y1[:, None].expand(B, M, M, D).reshape(-1, D)).view(B, M, M)
        partner = torch.from_numpy(assignments(c.double().numpy()))
        target = y1.gather(1, partner[..., None].expand(B, M, D))
        matched = c.gather(2, partner[..., None]).mean()
    mapped = transport(y0.reshape(B * M, D), x.repeat_interleave(M, 0))
    return (mapped - target.reshape(B * M, D)).square().sum(-1).mean(), matched


def refine(y0: Tensor, guess: Tensor, g: Callable[[Tensor], Tensor], cost: BoundCost, steps: int,
           lr: float) -> tuple[Tensor, Tensor]:
    """A few gradient steps on f(y') = c(y0, y'|x) − g(y'|x) from ``guess``, at one batch's conditions x.
    y0, guess [B, D] -> (refined argmin [B, D], f there [B]), both detached

    Each row keeps its own step size and only accepts a step that lowers its f (halving the step
    otherwise), so the refined point is never worse than T's guess even where g is steep; a plain
    gradient step there overshoots and feeds g ever wilder targets.

    :param g: the potential at the batch's conditions, y [B, D] -> [B] (e.g. ``IntervalTransport.g_at(x)``).
    :param cost: the cost at the batch's conditions (a :data:`CostAt`'s result).
    """

    def value(y: Tensor) -> Tensor:
        return cost(y0, y) - g(y)

    def value_and_grad(y: Tensor) -> tuple[Tensor, Tensor]:
        y = y.detach().requires_grad_(True)
        f = value(y)
        # f is separable over the batch, so the gradient of its sum is each row's gradient.
        (grad,) = torch.autograd.grad(f.sum(), y)
        return f.detach(), grad

    y = guess.detach()
    if steps == 0:
        with torch.no_grad():
            return y, value(y)
    f, grad = value_and_grad(y)
    step = torch.full((y.shape[0], 1), lr, dtype=y.dtype)
    for i in range(steps):
        candidate = y - step * grad
        if i + 1 < steps:
            f_new, grad_new = value_and_grad(candidate)
        else:  # the last step's gradient would never be used
            with torch.no_grad():
                f_new, grad_new = value(candidate), grad
        better = (f_new < f).unsqueeze(-1)
        y = torch.where(better, candidate, y)
        f = torch.where(better.squeeze(-1), f_new, f)
        grad = torch.where(better, grad_new, grad)
        step = torch.where(better, step, 0.5 * step)
    return y, f


def semi_dual_losses(
    transport: IntervalTransport, y0: Tensor, y1: Tensor, x: Tensor, cost_at: CostAt, refine_steps: int,
    refine_lr: float, conditions: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Losses of one semi-dual step on a batch of pairs drawn at the same conditions.
    y0 [B, D] from anchor k, y1 [B, D] from anchor k+1, x [B, C] ->
    (loss_g, loss_T, dual value, mean cost c(y0, y*)), all scalars.

    The argmin search starts from the better of T's guess and the batch's own target sample y1[j] that
    minimises ½‖y0 − y1[j]‖² − g(y1[j]). Local refinement alone lets g grow a spike on a target sample
    that no search from T's guess reaches, and the semi-dual then diverges; offering the targets
    themselves as candidates makes such a spike cost g at once. The search needs no gradient to the
    cost's parameters, so ``cost_at`` may do the conditions' own work once.

    loss_g is minus the semi-dual (its c term is constant in g); loss_T regresses T onto the refined
    argmin. The two losses touch disjoint parameters, so their sum can be stepped by one optimiser.

    :param cost_at: the cost at a batch's conditions (:func:`at_conditions` of a :data:`Cost`).
    :param conditions: what ``cost_at`` reads the conditions from, one row per pair (default: x).
    """
    conditions = x if conditions is None else conditions
    mapped = transport(y0, x)
    with torch.no_grad():
        g1 = transport.g(y1, x)
        nearest = (0.5 * torch.cdist(y0, y1).square() - g1).argmin(-1)
        starts = torch.cat([mapped, y1[nearest]])
        twice = conditions.repeat(2, *[1] * (conditions.dim() - 1))
        both = (cost_at(twice)(y0.repeat(2, 1), starts) - transport.g(starts, x.repeat(2, 1))).view(2, -1)
        guess = torch.where((both[1] < both[0]).unsqueeze(-1), y1[nearest], mapped)
    target, f = refine(y0, guess, transport.g_at(x), cost_at(conditions), refine_steps, refine_lr)
    g_target = transport.g(target, x)
    loss_g = g_target.mean() - transport.g(y1, x).mean()
    loss_t = (mapped - target).square().sum(-1).mean()
    # c(y0, y*) = f(y*) + g(y*): no second pass through the cost (reported only, nothing trains on it).
    c = (f + g_target.detach()).mean()
    return loss_g, loss_t, c - loss_g.detach(), c
