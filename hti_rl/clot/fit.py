"""Fitting CLOT (docs/method.md §5.8): build the potential once, then per step train each interval's map T_k
(by exact assignment at shared conditions, or on the semi-dual with a potential g_k), every few steps lower
the total transport cost over the metric (least action), and every few more steps refit the path net on
the pairs (y_k, T_k(y_k))."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from hti_rl.clot.model import CLOTModel
from hti_rl.clot.paths import action, curve_grid
from hti_rl.clot.potential import KDEPotential
from hti_rl.clot.transport import assignment_loss, assignments, largest_shift, semi_dual_losses
from hti_rl.errors import HTIError, SpecError


@dataclass(frozen=True)
class CLOTConfig:
    """Settings of a CLOT fit; the defaults are sized for a 2-core CPU (a few minutes per fit).

    Lengths (bandwidths, step sizes) are in the standardised output frame: outputs are shifted to mean
    0 and divided by one scalar standard deviation before fitting.

    :param steps: outer training steps.
    :param batch_size: pairs per interval per step.
    :param hidden: width of g_k and T_k (paper: 64).
    :param depth: hidden layers of g_k and T_k (paper: 4).
    :param lr: Adam learning rate of g_k and T_k (paper: 1e-4 over 2,000 steps).
    :param refine_steps: gradient steps refining T_k's guess of the c-transform argmin.
    :param refine_lr: initial step size of that refinement.
    :param metric: "learned" (SPD metric network) or "euclidean" (G = I).
    :param metric_hidden: width of the metric network.
    :param metric_depth: hidden layers of the metric network.
    :param metric_floor: lower bound on the metric's eigenvalues (their sum is D), in (0, 1).
    :param metric_lr: Adam learning rate of the metric (paper: 5e-3).
    :param metric_every: steps between metric updates (paper: 10).
    :param potential: use the KDE potential U in the action.
    :param alpha: strength α of the potential.
    :param h_y: KDE bandwidth in (standardised) output units.
    :param h_x: KDE bandwidth in condition units.
    :param eps: density floor ε in U = α·log(p̂ + ε).
    :param kde_max_ref: reference samples kept for the KDE (subsampled from all anchors pooled).
    :param kde_neighbours: reference samples per query condition, those nearest in x.
    :param n_knots: interior spline knots per path (paper: 15).
    :param n_points: quadrature points per path (paper: 20).
    :param path_hidden: width of the path net (paper: 1024).
    :param path_depth: hidden layers of the path net (paper: 2).
    :param max_bend: bound on the path correction's knots as a share of the chord's length
        (``max_bend · ‖y1 − y0‖ · tanh``), or None for an unbounded path net.
    :param path_lr: Adam learning rate of the path net.
    :param path_every: steps between path-net refits (paper: 25).
    :param path_steps: gradient steps per refit. Endpoint mode ignores both and takes one path-net step
        per step.
    :param mode: "map" (learn T_k) or "endpoint" (ends given by anchor k+1's own samples, paired by
        exact Euclidean OT among the M samples at each condition; only paths and metric are learned).
    :param transport: in map mode, how T_k is trained: "assignment" (regressed onto the exact OT partners of
        anchor k's samples among anchor k+1's at each condition, under the current cost) or "semi_dual"
        (the paper's: a Kantorovich potential g_k and the c-transform's argmin; its fits depend far more on
        the seed, docs/method.md §5.7).
    :param assign_samples: samples of each anchor per condition in an assignment (all M where M is
        smaller): a step couples ``batch_size // assign_samples`` conditions on all their pairs.
    :param bound_maps: in map mode, bound each T_k's displacement by the largest distance between a sample of
        anchor k and one of anchor k+1 at the same condition (``IntervalTransport``): no coupling of the two
        moves a sample farther, and unbounded maps ran off at most seeds of the semicircle benchmark.
    :param ref_conditions: stored conditions for :meth:`CLOTModel.sample`.
    :param seed: seed of every random draw and of the network initialisation.
    """

    steps: int = 600
    batch_size: int = 128
    hidden: int = 64
    depth: int = 3
    lr: float = 1e-3
    refine_steps: int = 2
    refine_lr: float = 0.5
    metric: str = "learned"
    metric_hidden: int = 64
    metric_depth: int = 2
    metric_floor: float = 0.1
    metric_lr: float = 5e-3
    metric_every: int = 10
    potential: bool = True
    alpha: float = 1.0
    h_y: float = 0.2
    h_x: float = 1.0
    eps: float = 1e-3
    kde_max_ref: int = 1024
    kde_neighbours: int = 256
    n_knots: int = 7
    n_points: int = 12
    path_hidden: int = 256
    path_depth: int = 2
    max_bend: float | None = None
    path_lr: float = 1e-3
    path_every: int = 25
    path_steps: int = 10
    mode: str = "map"
    transport: str = "assignment"
    assign_samples: int = 8
    bound_maps: bool = True
    ref_conditions: int = 1024
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "hidden", "depth", "metric_hidden", "metric_depth", "metric_every",
                     "kde_max_ref", "kde_neighbours", "n_knots", "n_points", "path_hidden", "path_depth", "path_every",
                     "path_steps", "ref_conditions", "assign_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"CLOTConfig.{name} = {value!r}: must be an integer >= 1.")
        for name in ("lr", "refine_lr", "metric_lr", "h_y", "h_x", "eps", "path_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SpecError(f"CLOTConfig.{name} = {value!r}: must be a finite number > 0.")
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha >= 0):
            raise SpecError(f"CLOTConfig.alpha = {self.alpha!r}: must be a finite number >= 0.")
        if self.max_bend is not None and not (isinstance(self.max_bend, (int, float)) and 0 < self.max_bend < math.inf):
            raise SpecError(f"CLOTConfig.max_bend = {self.max_bend!r}: must be a finite number > 0, or None.")
        if not isinstance(self.refine_steps, int) or self.refine_steps < 0:
            raise SpecError(f"CLOTConfig.refine_steps = {self.refine_steps!r}: must be an integer >= 0.")
        if not 0 < self.metric_floor < 1:
            raise SpecError(f"CLOTConfig.metric_floor = {self.metric_floor!r}: must lie in (0, 1).")
        if self.metric not in ("learned", "euclidean"):
            raise SpecError(f"CLOTConfig.metric = {self.metric!r}: must be 'learned' or 'euclidean'.")
        if self.mode not in ("map", "endpoint"):
            raise SpecError(f"CLOTConfig.mode = {self.mode!r}: must be 'map' or 'endpoint'.")
        if self.transport not in ("assignment", "semi_dual"):
            raise SpecError(f"CLOTConfig.transport = {self.transport!r}: must be 'assignment' or 'semi_dual'.")
        for name in ("potential", "bound_maps"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"CLOTConfig.{name} = {getattr(self, name)!r}: must be True or False.")


@dataclass(frozen=True)
class CLOTData:
    """Anchor samples to fit: M samples of each of K anchors' distributions at each of N conditions.

    Arrays (numpy or torch) are validated and stored as float32 tensors.

    :param x: conditions [N, C], standardised by the caller.
    :param times: anchor times [K], strictly increasing (the weight-scale coordinate).
    :param y: samples [K, N, M, D].
    """

    x: Tensor
    times: Tensor
    y: Tensor

    def __post_init__(self):
        x, times, y = (torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a).float()
                       for a in (self.x, self.times, self.y))
        if x.dim() != 2:
            raise HTIError(f"CLOTData.x has shape {tuple(x.shape)}: expected [N, C]; reshape a 1-D x with x[:, None].")
        if times.dim() != 1 or times.shape[0] < 2:
            raise HTIError(f"CLOTData.times has shape {tuple(times.shape)}: expected [K] with K >= 2 anchors.")
        if y.dim() != 4:
            raise HTIError(f"CLOTData.y has shape {tuple(y.shape)}: expected [K, N, M, D]; add M = 1 for "
                           "deterministic anchors with y[:, :, None, :].")
        K, N = times.shape[0], x.shape[0]
        if y.shape[0] != K or y.shape[1] != N or min(y.shape) < 1:
            raise HTIError(f"CLOTData.y has shape {tuple(y.shape)}: expected [K={K}, N={N}, M>=1, D>=1] to match "
                           f"times [{K}] and x [{N}, {x.shape[1]}].")
        for name, a in (("x", x), ("times", times), ("y", y)):
            if not torch.isfinite(a).all():
                bad = (~torch.isfinite(a)).nonzero()[0].tolist()
                raise HTIError(f"CLOTData.{name} has a non-finite value {a[tuple(bad)].item()} at index {bad}; "
                               "drop or fix those rows before fitting.")
        if not (times[1:] > times[:-1]).all():
            raise HTIError(f"CLOTData.times = {times.tolist()}: must be strictly increasing; sort the anchors "
                           "(and y along its first axis) and remove duplicates.")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "y", y)


def ot_pairing(y: Tensor) -> Tensor:
    """Exact Euclidean OT pairing of adjacent anchors' samples within each condition.
    y [K, N, M, D] -> pairing [K-1, N, M] long: sample m of anchor k goes to sample pairing[k, n, m] of k+1.
    """
    cost = torch.cdist(y[:-1], y[1:]).square().numpy()  # [K-1, N, M, M]
    return torch.from_numpy(np.stack([assignments(c) for c in cost])).long()


def fit_clot(
    data: CLOTData, config: CLOTConfig = CLOTConfig(), log_dir: str | os.PathLike | None = None, progress: bool = True
) -> CLOTModel:
    """Fit a CLOT surrogate to anchor samples.

    :param data: conditions, anchor times and anchor samples.
    :param config: fit settings.
    :param log_dir: TensorBoard directory for losses, per-interval transport costs and metric
        eigenvalues; nothing is logged if None.
    :param progress: show a tqdm progress bar.
    :return: the fitted model, in eval mode.
    """
    if not isinstance(data, CLOTData):
        raise HTIError(f"fit_clot needs a CLOTData, got {type(data).__name__}; wrap arrays as CLOTData(x, times, y).")
    if not isinstance(config, CLOTConfig):
        raise HTIError(f"fit_clot needs a CLOTConfig, got {type(config).__name__}.")
    torch.manual_seed(config.seed)  # network initialisation
    gen = torch.Generator().manual_seed(config.seed)  # every data draw
    K, N, M, D = data.y.shape
    C = data.x.shape[1]
    x = data.x
    # One shift and one scalar scale: OT with a quadratic cost commutes with them, and they make the
    # bandwidths and step sizes in the config independent of the outputs' units.
    y_shift = data.y.reshape(-1, D).mean(0)
    y_scale = (data.y - y_shift).std().clamp_min(1e-8)
    y = (data.y - y_shift) / y_scale
    pairing = ot_pairing(y)

    ref = torch.randperm(N, generator=gen)[: config.ref_conditions]
    model = CLOTModel(dataclasses.asdict(config), D, C, K, len(ref), M)
    model.times.copy_(data.times)
    model.y_shift.copy_(y_shift)
    model.y_scale.copy_(y_scale)
    model.ref_x.copy_(x[ref])
    model.ref_y.copy_(data.y[:, ref])
    for k, transport in enumerate(model.maps):
        if transport.bounded:
            transport.max_shift.copy_(largest_shift(y[k], y[k + 1]))
    model.pairing.copy_(pairing[:, ref])
    model.train()

    potential = None
    if config.potential:
        potential = KDEPotential.from_samples(
            x, y, config.kde_max_ref, gen, h_y=config.h_y, h_x=config.h_x, alpha=config.alpha, eps=config.eps,
            neighbours=config.kde_neighbours,
        )
    s_grid, b_grid, db_grid = model.basis.grid(config.n_points)
    # The potential's neighbourhood of a condition depends on the condition only: found once for all N.
    near = potential.neighbourhoods(x) if potential is not None else None

    def cost(y0: Tensor, y1: Tensor, n: Tensor) -> Tensor:
        """Action of the path net's curve at the conditions x[n]. y0, y1 [B, D], n [B] -> [B]"""
        return cost_at(n, frozen=False)(y0, y1)

    def cost_at(n: Tensor, frozen: bool = True) -> Callable[[Tensor, Tensor], Tensor]:
        """The cost at the conditions x[n], n [B]: (y0, y1 [B, D]) -> [B]. Frozen (the semi-dual's search,
        which needs no gradient to the cost's parameters), the conditions' FiLM is computed once, here."""
        xb = x[n]
        with torch.no_grad() if frozen else contextlib.nullcontext():
            path_gb = model.path_net.net.modulation(xb)
            metric_gb = model.metric.net.modulation(xb) if model.metric.net is not None else None
        pot = None if near is None else (lambda q, _, w=near[0][n], r=near[1][n]: potential.near(q, w, r))

        def bound(y0: Tensor, y1: Tensor) -> Tensor:
            q, v = curve_grid(y0, y1, model.path_net.knots(y0, y1, path_gb), s_grid, b_grid, db_grid)
            return action(q, v, xb, lambda q, _, v: model.metric.quad_at(q, metric_gb, v), pot)

        return bound

    def draw(k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pairs at shared conditions: (y_k [B, D], y_{k+1} [B, D], x [B, C], condition indices n [B]); in
        endpoint mode y_{k+1} is y_k's OT partner, otherwise an independent sample of anchor k+1."""
        n = torch.randint(N, (config.batch_size,), generator=gen)
        m0 = torch.randint(M, (config.batch_size,), generator=gen)
        m1 = pairing[k, n, m0] if config.mode == "endpoint" else torch.randint(M, (config.batch_size,), generator=gen)
        return y[k, n, m0], y[k + 1, n, m1], x[n], n

    def draw_sets(k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Sample sets at shared conditions for an assignment: (y_k [B, m, D], y_{k+1} [B, m, D], x [B, C], n [B]),
        m = min(M, assign_samples) samples of each anchor at each of B = batch_size // m conditions."""
        m = min(M, config.assign_samples)
        n = torch.randint(N, (max(1, config.batch_size // m),), generator=gen)

        def samples(j: int) -> Tensor:  # all M samples of anchor j at each condition, or a random m of them
            return y[j, n] if m == M else y[j, n[:, None], torch.rand(len(n), M, generator=gen).argsort(-1)[:, :m]]

        return samples(k), samples(k + 1), x[n], n

    def path_ends(k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Pairs the metric and path net are trained on: (y_k, end, n), end = T_k(y_k) or the OT partner."""
        y0, y1, xb, n = draw(k)
        if config.mode == "map":
            with torch.no_grad():
                y1 = model.maps[k](y0, xb)
        return y0, y1, n

    maps_opt = torch.optim.Adam(model.maps.parameters(), lr=config.lr) if config.mode == "map" else None
    path_opt = torch.optim.Adam(model.path_net.parameters(), lr=config.path_lr)
    metric_params = list(model.metric.parameters())
    metric_opt = torch.optim.Adam(metric_params, lr=config.metric_lr) if metric_params and D > 1 else None
    # Endpoint mode has no transport step, so the path net takes one gradient step every step instead.
    path_every, path_steps = (1, 1) if config.mode == "endpoint" else (config.path_every, config.path_steps)
    writer = _writer(log_dir)
    log: Callable[[str, float, int], None] = writer.add_scalar if writer else (lambda *a: None)

    bar = tqdm(range(config.steps), desc="fit_clot", disable=not progress)
    for step in bar:
        # 1. Semi-dual step on every interval: refine T_k's argmin, regress T_k on it, ascend g_k.
        if maps_opt is not None:
            maps_opt.zero_grad()
            costs = []
            for k in range(K - 1):
                if config.transport == "assignment":
                    y0, y1, xb, n = draw_sets(k)
                    loss, c = assignment_loss(model.maps[k], y0, y1, xb, cost_at, conditions=n)
                    log(f"loss/T_{k}", loss.item(), step)
                else:
                    y0, y1, xb, n = draw(k)
                    loss_g, loss_t, dual, c = semi_dual_losses(
                        model.maps[k], y0, y1, xb, cost_at, config.refine_steps, config.refine_lr, conditions=n
                    )
                    loss = loss_g + loss_t
                    log(f"loss/g_{k}", loss_g.item(), step)
                    log(f"loss/T_{k}", loss_t.item(), step)
                    log(f"transport/dual_{k}", dual.item(), step)
                loss.backward(inputs=list(model.maps[k].parameters()))
                costs.append(c.item())
                log(f"transport/cost_{k}", c.item(), step)
            maps_opt.step()
            bar.set_postfix(cost=" ".join(f"{c:.3f}" for c in costs), refresh=False)

        # 2. Least action: the metric lowers the total transport cost between adjacent anchors.
        if metric_opt is not None and (step + 1) % config.metric_every == 0:
            metric_opt.zero_grad()
            ends = [path_ends(k) for k in range(K - 1)]
            total = sum(cost(*e).mean() for e in ends)
            total.backward(inputs=metric_params)
            metric_opt.step()
            log("metric/total_cost", total.item(), step)
            with torch.no_grad():
                e = torch.sort(model.metric.factors(ends[0][0], x[ends[0][2]])[1], dim=-1).values.mean(0)
            for i, value in enumerate(e.tolist()):
                log(f"metric/eigenvalue_{i}", value, step)

        # 3. Refit the path net on the current pairs (y_k, T_k(y_k)).
        if (step + 1) % path_every == 0:
            for _ in range(path_steps):
                path_opt.zero_grad()
                loss = sum(cost(*path_ends(k)).mean() for k in range(K - 1))
                loss.backward(inputs=list(model.path_net.parameters()))
                path_opt.step()
            log("path/action", loss.item(), step)

    if writer:
        writer.close()
    return model.eval()


def _writer(log_dir: str | os.PathLike | None):
    if log_dir is None:
        return None
    from torch.utils.tensorboard import (
        SummaryWriter,  # tensorboard is only imported when logging
    )

    return SummaryWriter(log_dir=str(log_dir))
