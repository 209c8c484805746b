"""Policies at any weight vector inside a grid of anchors (docs/method.md §12), and the grid baselines.

:class:`GridPolicy` is :class:`~hti_rl.methods.base.AnchoredPolicy` with a :class:`~hti_rl.weights.WeightGrid`
in place of the one axis: ``set_weight((λ_1, …, λ_n))`` finds the grid cell and the local times ``s [n]``,
an anchor vector returns that anchor's own action exactly, and a method supplies only
``_inside(obs, x, index, s, deterministic)``. The file format is the scalar one; the header's ``weights``
are vectors, ``weight_scale`` one scale per axis and ``weight_names`` the axes.

- :class:`GridNearestPolicy`: the nearest anchor of the cell (each axis rounded in its coordinate).
- :class:`GridMultilinearPolicy`: multilinear interpolation of the cell's 2^n corner actions in the
  weight scale; stochastic draws share one standard-normal noise.
- :class:`GridRegressionPolicy`: an MLP (x, unit coordinates [n]) -> action mean on the anchors' means.
- :class:`GridParameterInterpolation`: one actor whose parameters are the multilinear mix of the cell's
  corners' parameters, for anchors fine-tuned from one shared start ("rewarded soups" on a grid).
"""

from __future__ import annotations

import copy
import itertools
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from hti_rl.actors import AnchorActor
from hti_rl.dataset import PolicyDataset
from hti_rl.methods.base import AnchoredPolicy, base_arguments
from hti_rl.methods.baselines import _Learned, _train, check_shared_start, mlp
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage
from hti_rl.weights import WeightGrid


class GridPolicy(AnchoredPolicy):
    """An :class:`AnchoredPolicy` over a grid of anchor vectors; ``weights`` are the grid's points in C
    order, ``weight_scale`` one scale per axis, ``header["weight_names"]`` the axes' names."""

    def _set_anchors(self, weights: Sequence[Any], weight_scale: Any) -> None:
        scales = [weight_scale] * len(weights[0]) if isinstance(weight_scale, str) else list(weight_scale)
        names = self.header.get("weight_names") or [f"w{i}" for i in range(len(scales))]
        self.grid = WeightGrid.from_points(weights, scales, names)
        self.header["weight_names"] = list(self.grid.names)
        self.weights = list(self.grid.points)
        self.weight_scale = list(self.grid.scales)
        self.axis = None  # type: ignore[assignment]
        self.times = [list(a.times) for a in self.grid.axes]

    def set_weight(self, weight: Any) -> None:
        """Deploy at the weight vector ``weight`` (``[n]``, or ``"a,b"``); takes effect at the next ``predict``.

        :raises WeightError: a scalar, the wrong length, NaN/inf, or outside the grid (unless ``allow_extrapolation``).
        """
        self._cell = self.grid.cell(weight, self.allow_extrapolation)
        self.weight = self.grid.check(weight, self.allow_extrapolation)
        self._at_weight()

    def local(self, axis: int, index: Sequence[int], s: Sequence[float]) -> float:
        """The coordinate on ``axis`` at local time ``s[axis]`` of the cell ``index``."""
        t = self.times[axis]
        k = index[axis]
        return t[k] + s[axis] * (t[k + 1] - t[k])

    def actor_at(self, index: Sequence[int]) -> AnchorActor:
        return self.actors[self.grid.flat(index)]

    def _predict(self, observation: Tensor, deterministic: bool = False) -> Tensor:
        """obs [B, C] (raw env observations) -> env actions [B, D]."""
        obs = observation.float().reshape(observation.shape[0], -1)
        index, s = self._cell
        corner = self.grid.corner(index, s)
        if corner is not None:  # an anchor vector: that anchor's own action, exactly
            actor = self.actors[corner]
            return actor.to_env_action(self.anchor_draw(actor, obs, deterministic)[0])
        x = (obs - self.x_mean) / self.x_std
        # Anchors may squash differently: the cell's lower corner decides, as the scalar policies' start does.
        return self.actor_at(index).to_env_action(self._inside(obs, x, index, s, deterministic))

    def corners(self, obs: Tensor, index: Sequence[int], deterministic: bool) -> dict[tuple[int, ...], Tensor]:
        """Every corner of the cell ``index`` -> its unsquashed draw [B, D], all with one shared noise."""
        draws, noise = {}, None
        for offset in itertools.product((0, 1), repeat=self.grid.dim):
            corner = tuple(k + o for k, o in zip(index, offset))
            draws[offset], used = self.anchor_draw(self.actor_at(corner), obs, deterministic, noise)
            noise = used if noise is None else noise
        return draws

    def _inside(self, obs: Tensor, x: Tensor, index: tuple[int, ...], s: tuple[float, ...], deterministic: bool) -> Tensor:
        """The method: unsquashed action [B, D] at local times ``s [n]`` of the cell with lower corner ``index``."""
        raise NotImplementedError


def multilinear(values: dict[tuple[int, ...], Tensor], s: Sequence[float]) -> Tensor:
    """Corner offsets (0/1 per axis) -> values [B, D], and local times s [n] -> Σ_c Π_i (s_i or 1 − s_i)·v_c [B, D]."""
    out = None
    for offset, value in values.items():
        factor = float(np.prod([si if o else 1.0 - si for o, si in zip(offset, s)]))
        out = factor * value if out is None else out + factor * value
    return out


class GridNearestPolicy(GridPolicy):
    """The nearest anchor of the cell: each axis rounds its local time (s < 0.5: the lower anchor)."""

    def _inside(self, obs: Tensor, x: Tensor, index: tuple[int, ...], s: tuple[float, ...], deterministic: bool) -> Tensor:
        nearest = tuple(k + int(si >= 0.5) for k, si in zip(index, s))
        return self.anchor_draw(self.actor_at(nearest), obs, deterministic)[0]


class GridMultilinearPolicy(GridPolicy):
    """Multilinear interpolation in the weight scale of the cell's 2^n corner actions (bilinear on 2 axes)."""

    def _inside(self, obs: Tensor, x: Tensor, index: tuple[int, ...], s: tuple[float, ...], deterministic: bool) -> Tensor:
        return multilinear(self.corners(obs, index, deterministic), s)


class GridRegressionPolicy(_Learned, GridPolicy):
    """Direct regression: an MLP from (standardised x, unit coordinates [n]) to the action mean; stochastic
    actions add the corners' log-std interpolated multilinearly."""

    def unit_coords(self, index: Sequence[int], s: Sequence[float]) -> list[float]:
        return [(self.local(i, index, s) - t[0]) / (t[-1] - t[0]) for i, t in enumerate(self.times)]

    def _inside(self, obs: Tensor, x: Tensor, index: tuple[int, ...], s: tuple[float, ...], deterministic: bool) -> Tensor:
        u = torch.tensor(self.unit_coords(index, s), dtype=torch.float32).expand(x.shape[0], -1)
        mean = self.y_mean + self.y_scale * self.net(torch.cat([x, u], dim=1))
        if deterministic:
            return mean
        log_std = multilinear({o: self.actor_at([k + d for k, d in zip(index, o)]).distribution(obs)[1]
                               for o in itertools.product((0, 1), repeat=self.grid.dim)}, s)
        return mean + log_std.exp() * torch.randn(mean.shape, generator=self.generator)


class GridParameterInterpolation(GridPolicy):
    """Parameter interpolation on a grid: at local times s of a cell, one actor whose every parameter is
    Σ_c Π_i (s_i or 1 − s_i)·θ_c over the cell's corners (:func:`multilinear`); the anchors must share a start.

    :raises AnchorError: the anchors do not share a start, or their networks differ in shape.
    """

    def __init__(self, *args: Any, **base: Any):
        super().__init__(*args, **base)
        check_shared_start(self.actors)
        self._blend: tuple[Any, AnchorActor] | None = None

    def blended_actor(self, index: tuple[int, ...], s: tuple[float, ...]) -> AnchorActor:
        """The actor with the corners' parameters mixed multilinearly (cached for the current weight)."""
        if self._blend is None or self._blend[0] != (index, s):
            corners = {o: self.actor_at([k + d for k, d in zip(index, o)]) for o in itertools.product((0, 1), repeat=self.grid.dim)}
            states = {o: a.state_dict() for o, a in corners.items()}
            first = next(iter(corners.values()))
            actor = AnchorActor(copy.deepcopy(first.arch))
            actor.load_state_dict({name: multilinear({o: st[name] for o, st in states.items()}, s) if value.is_floating_point() else value
                                   for name, value in first.state_dict().items()})
            self._blend = ((index, s), actor.eval())
        return self._blend[1]

    def _inside(self, obs: Tensor, x: Tensor, index: tuple[int, ...], s: tuple[float, ...], deterministic: bool) -> Tensor:
        return self.anchor_draw(self.blended_actor(index, s), obs, deterministic)[0]


def grid_arguments(spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int, method: str) -> dict[str, Any]:
    """:func:`base_arguments` of a grid task: the anchors are the grid's vectors, and the header names the axes."""
    base = base_arguments(spec, dataset, actors, seed, method)
    base["header"]["weight_names"] = list(spec.grid.names)
    base["weights"] = list(spec.grid.points)
    base["weight_scale"] = list(spec.grid.scales)
    return base


def fit_grid_nearest(spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int = 0) -> GridNearestPolicy:
    """The nearest-anchor policy on a grid (nothing to fit)."""
    return GridNearestPolicy(**grid_arguments(spec, dataset, actors, seed, "nearest"))


def fit_grid_multilinear(spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int = 0) -> GridMultilinearPolicy:
    """The multilinear action mix on a grid (nothing to fit)."""
    return GridMultilinearPolicy(**grid_arguments(spec, dataset, actors, seed, "linear"))


@stage
def fit_grid_regression(
    spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int = 0,
    hidden: int = 128, depth: int = 2, steps: int = 2000, batch_size: int = 512, lr: float = 3e-3,
) -> GridRegressionPolicy:
    """Fit the regression baseline on a grid: MLP (standardised x, unit coordinates [n]) -> anchor mean, MSE on
    every (anchor, recorded state) pair (as :func:`~hti_rl.methods.baselines.fit_regression`, with n time inputs)."""
    torch.manual_seed(seed)
    base = grid_arguments(spec, dataset, actors, seed, "regression")
    x = torch.from_numpy((dataset.obs - base["x_mean"]) / base["x_std"]).float()  # [N, C]
    means = torch.from_numpy(dataset.mean).float()  # [K, N, D]
    y_mean = means.reshape(-1, means.shape[-1]).mean(0)
    y_scale = float(means.reshape(-1, means.shape[-1]).std(0).mean().clamp_min(1e-6))
    target = (means - y_mean) / y_scale
    coords = np.array([[axis.coord(w) for axis, w in zip(spec.grid.axes, p)] for p in spec.grid.points])  # [K, n]
    units = torch.from_numpy((coords - coords.min(0)) / (coords.max(0) - coords.min(0))).float()
    K, N, D = means.shape
    config = {"n_in": x.shape[1] + spec.grid.dim, "n_out": D, "hidden": hidden, "depth": depth}
    net = mlp(**config)

    def batch(g: torch.Generator) -> Tensor:
        k = torch.randint(K, (batch_size,), generator=g)
        n = torch.randint(N, (batch_size,), generator=g)
        return ((net(torch.cat([x[n], units[k]], dim=1)) - target[k, n]) ** 2).mean()

    started = time.perf_counter()
    losses = _train(net, batch, steps, lr, seed)
    base["header"].update(fit_seconds=round(time.perf_counter() - started, 2), losses=[losses[0], losses[-1]],
                          settings=dict(hidden=hidden, depth=depth, steps=steps, batch_size=batch_size, lr=lr))
    return GridRegressionPolicy(net=net.eval(), net_config=config, y_mean=y_mean, y_scale=y_scale, **base)
