"""Baselines for the surrogate: other ways to get a policy between two anchors.

Each is an :class:`~hti_rl.methods.base.AnchoredPolicy` subclass, so it has SurrogatePolicy's interface
(``set_weight``, ``predict``, ``save``/``load`` in the same file format) and returns the anchors'
own actions at anchor weights (the base class does that). They differ only in ``_between``: how an
action moves from anchor k to anchor k+1 at local time s (in the task's weight scale).

- :class:`NearestPolicy`: the nearer anchor's action (s < 0.5: anchor k, else anchor k+1).
- :class:`LinearPolicy`: (1 − s)·y_k + s·y_{k+1}; stochastic: both anchors drawn with the same noise.
- :class:`RegressionPolicy`: an MLP (x, t) -> action mean, fitted on the anchors' recorded means;
  stochastic: that mean plus the anchors' log-std interpolated in s.
- :class:`CFMPolicy`: conditional flow matching between neighbouring anchors: a velocity net
  v(y, x, t) regressed onto y_{k+1} − y_k along straight lines y = (1 − s)·y_k + s·y_{k+1} between
  anchor k's and anchor k+1's recorded samples at the same state (paired within the state by exact
  Euclidean OT, "OT-CFM"), integrated from anchor k's draw by a few Euler steps. No learned metric,
  no potential: CLOT with those removed.

- :class:`ParameterInterpolation`: the peer "rewarded soups" (Ramé et al., NeurIPS 2023): one network
  whose parameters are (1 − s)·θ_k + s·θ_{k+1}, for anchors fine-tuned from one shared start
  (:mod:`hti_rl.training.shared_start`); unrelated anchors are refused.

Each has a ``fit_<name>(spec, dataset, actors, seed)``; :data:`hti_rl.methods.registry.METHODS` lists them.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from hti_rl.actors import AnchorActor
from hti_rl.clot.fit import ot_pairing
from hti_rl.dataset import PolicyDataset
from hti_rl.errors import AnchorError
from hti_rl.methods.base import AnchoredPolicy, base_arguments
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage


class NearestPolicy(AnchoredPolicy):
    """The nearer anchor's action (distance measured in the task's weight scale)."""

    def _between(self, obs: Tensor, x: Tensor, k: int, s: float, deterministic: bool) -> Tensor:
        return self.anchor_draw(self.actors[k if s < 0.5 else k + 1], obs, deterministic)[0]


class LinearPolicy(AnchoredPolicy):
    """(1 − s)·y_k + s·y_{k+1} of the two neighbouring anchors' unsquashed actions; stochastic draws
    share their standard-normal noise (the W2-optimal coupling of two diagonal Gaussians)."""

    def _between(self, obs: Tensor, x: Tensor, k: int, s: float, deterministic: bool) -> Tensor:
        y_k, noise = self.anchor_draw(self.actors[k], obs, deterministic)
        y_end, _ = self.anchor_draw(self.actors[k + 1], obs, deterministic, noise)
        return (1.0 - s) * y_k + s * y_end


class ParameterInterpolation(AnchoredPolicy):
    """Parameter interpolation of shared-start anchors ("rewarded soups"): at local time s of interval k
    one actor whose every parameter (trunk, mean head, log-std) is (1 − s)·θ_k + s·θ_{k+1}; its action
    is that actor's mean, or a draw from its Gaussian. The anchors must be fine-tunes of one base agent
    (``hti-rl train-anchors --shared-start``): their observation normalisers are the base's, and only
    then are the networks' parameters comparable one by one.

    :raises AnchorError: the anchors do not share a start, or their networks differ in shape.
    """

    def __init__(self, *args: Any, **base: Any):
        super().__init__(*args, **base)
        check_shared_start(self.actors)
        self._blend: tuple[tuple[int, float], AnchorActor] | None = None

    def blended_actor(self, k: int, s: float) -> AnchorActor:
        """The actor with parameters (1 − s)·θ_k + s·θ_{k+1} (cached for the current weight)."""
        if self._blend is None or self._blend[0] != (k, s):
            self._blend = ((k, s), blend_actors(self.actors[k], self.actors[k + 1], s))
        return self._blend[1]

    def _between(self, obs: Tensor, x: Tensor, k: int, s: float, deterministic: bool) -> Tensor:
        return self.anchor_draw(self.blended_actor(k, s), obs, deterministic)[0]


def blend_actors(start: AnchorActor, end: AnchorActor, s: float) -> AnchorActor:
    """The actor whose every floating-point parameter is (1 − s)·θ_start + s·θ_end (shared-start anchors only)."""
    a, b = start.state_dict(), end.state_dict()
    actor = AnchorActor(copy.deepcopy(start.arch))
    actor.load_state_dict({name: (1.0 - s) * a[name] + s * b[name] if a[name].is_floating_point() else a[name] for name in a})
    return actor.eval()


def check_shared_start(actors: Sequence[AnchorActor]) -> None:
    """Refuse to interpolate the parameters of anchors that were not fine-tuned from one start.

    :raises AnchorError: an anchor has no shared start (trained from scratch or imported), the anchors
        descend from different bases, or their networks differ (layers, sizes, normalisation).
    """
    starts = [actor.arch.get("source", {}).get("shared_start") for actor in actors]
    how = ("Train the anchors as fine-tunes of one base agent: `hti-rl train-anchors <spec> --shared-start` "
           "(or `shared_start: true` in the spec), then record and fit on those.")
    if any(start is None for start in starts) or len(set(starts)) > 1:
        what = ("some anchors were not fine-tuned from a shared start" if any(start is None for start in starts)
                else "the anchors were fine-tuned from different starts")
        raise AnchorError(
            f"parameter interpolation needs anchors fine-tuned from one shared start, but {what}. Networks trained "
            "apart have unrelated parameters (hidden units in any order, other scales), so their average is not "
            f"a policy between them: it can act like neither. {how}"
        )
    shapes = [{name: tuple(t.shape) for name, t in actor.state_dict().items()} for actor in actors]
    described = [{k: v for k, v in actor.arch.items() if k != "source"} for actor in actors]
    if any(shape != shapes[0] for shape in shapes) or any(d != described[0] for d in described):
        raise AnchorError(f"the anchors' networks differ in layers or sizes, so their parameters cannot be averaged. {how}")


def mlp(n_in: int, n_out: int, hidden: int, depth: int) -> nn.Sequential:
    """A plain SiLU MLP ``[B, n_in] -> [B, n_out]``."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.SiLU()]
        width = hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class _Learned(AnchoredPolicy):
    """A policy with one network over (inputs, normalised time); ``net_config`` = {n_in, n_out, hidden, depth}
    and ``y_mean [D]``, ``y_scale`` standardise the outputs."""

    def __init__(self, *args: Any, net: nn.Module, net_config: dict[str, int], y_mean: Tensor, y_scale: float, **base: Any):
        super().__init__(*args, **base)
        self.net = net
        self.net_config = dict(net_config)
        self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=torch.float32))
        self.y_scale = float(y_scale)
        self.eval()

    def unit_time(self, t: float | Tensor) -> float | Tensor:
        """time coordinate -> [0, 1] over the anchor range (the networks' time input)."""
        return (t - self.times[0]) / (self.times[-1] - self.times[0])

    def method_state(self) -> dict[str, Any]:
        return {
            "net": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "net_config": self.net_config,
            "y_mean": self.y_mean.clone(),
            "y_scale": self.y_scale,
        }

    @classmethod
    def from_method_state(cls, state: dict[str, Any], **base: Any) -> "_Learned":
        c = state["net_config"]
        net = mlp(c["n_in"], c["n_out"], c["hidden"], c["depth"])
        net.load_state_dict(state["net"])
        return cls(net=net, net_config=c, y_mean=state["y_mean"], y_scale=state["y_scale"], **base)


class RegressionPolicy(_Learned):
    """Direct regression: an MLP from (standardised x, t) to the action mean, fitted on the anchors'
    recorded means; stochastic actions add the anchors' log-std interpolated in s."""

    def _between(self, obs: Tensor, x: Tensor, k: int, s: float, deterministic: bool) -> Tensor:
        t = self.unit_time(self.times[k] + s * (self.times[k + 1] - self.times[k]))
        mean = self.y_mean + self.y_scale * self.net(torch.cat([x, torch.full((x.shape[0], 1), t)], dim=1))
        if deterministic:
            return mean
        _, log_std_k = self.actors[k].distribution(obs)
        _, log_std_end = self.actors[k + 1].distribution(obs)
        noise = torch.randn(mean.shape, generator=self.generator)
        return mean + ((1.0 - s) * log_std_k + s * log_std_end).exp() * noise


class CFMPolicy(_Learned):
    """Conditional flow matching with straight-line paths between neighbouring anchors: Euler steps of
    the learned velocity v(y, x, t) from anchor k's draw (its mean when deterministic) to local time s.

    :param euler_steps: Euler steps over [0, 1] of local time (fewer for a shorter s).
    """

    def __init__(self, *args: Any, euler_steps: int = 8, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.euler_steps = int(euler_steps)

    def velocity(self, y: Tensor, x: Tensor, t: Tensor) -> Tensor:
        """standardised y [B, D], x [B, C], unit time t [B] -> velocity [B, D] (standardised y per unit s)."""
        return self.net(torch.cat([y, x, t[:, None]], dim=1))

    def _between(self, obs: Tensor, x: Tensor, k: int, s: float, deterministic: bool) -> Tensor:
        y = (self.anchor_draw(self.actors[k], obs, deterministic)[0] - self.y_mean) / self.y_scale
        steps = max(1, int(np.ceil(self.euler_steps * abs(s))))
        ds = s / steps
        for i in range(steps):
            t = self.unit_time(self.times[k] + i * ds * (self.times[k + 1] - self.times[k]))
            y = y + ds * self.velocity(y, x, torch.full((y.shape[0],), t))
        return self.y_mean + self.y_scale * y

    def method_state(self) -> dict[str, Any]:
        return {**super().method_state(), "euler_steps": self.euler_steps}

    @classmethod
    def from_method_state(cls, state: dict[str, Any], **base: Any) -> "CFMPolicy":
        c = state["net_config"]
        net = mlp(c["n_in"], c["n_out"], c["hidden"], c["depth"])
        net.load_state_dict(state["net"])
        return cls(net=net, net_config=c, y_mean=state["y_mean"], y_scale=state["y_scale"],
                   euler_steps=state["euler_steps"], **base)


def fit_nearest(spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int = 0) -> NearestPolicy:
    """The nearest-anchor policy (nothing to fit)."""
    return NearestPolicy(**base_arguments(spec, dataset, actors, seed, "nearest"))


def fit_linear(spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int = 0) -> LinearPolicy:
    """The linear-interpolation policy (nothing to fit)."""
    return LinearPolicy(**base_arguments(spec, dataset, actors, seed, "linear"))


def _unit_times(spec: TaskSpec) -> np.ndarray:
    t = np.array(spec.axis.times)
    return (t - t[0]) / (t[-1] - t[0])


def _train(net: nn.Module, batch: Any, steps: int, lr: float, seed: int) -> list[float]:
    """Adam on ``batch(generator) -> loss`` for ``steps`` steps (cosine-decayed lr); returns the loss history."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    losses = []
    for _ in range(steps):
        loss = batch(generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


@stage
@stage
def fit_regression(
    spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int = 0,
    hidden: int = 128, depth: int = 2, steps: int = 2000, batch_size: int = 512, lr: float = 3e-3,
) -> RegressionPolicy:
    """Fit the direct-regression baseline: MLP (standardised x, unit time t) -> anchor mean, MSE on
    every (anchor, recorded state) pair.

    :param spec: the task.
    :param dataset: the recorded :class:`~hti_rl.dataset.PolicyDataset`.
    :param actors: the anchor actors, in weight order.
    :param seed: seeds the initialisation and the batches.
    :return: the policy; ``policy.header["losses"]`` holds the first and last training losses.
    """
    torch.manual_seed(seed)
    base = base_arguments(spec, dataset, actors, seed, "regression")
    x = torch.from_numpy((dataset.obs - base["x_mean"]) / base["x_std"]).float()  # [N, C]
    means = torch.from_numpy(dataset.mean).float()  # [K, N, D]
    y_mean = means.reshape(-1, means.shape[-1]).mean(0)
    y_scale = float(means.reshape(-1, means.shape[-1]).std(0).mean().clamp_min(1e-6))
    target = (means - y_mean) / y_scale
    times = torch.from_numpy(_unit_times(spec)).float()
    K, N, D = means.shape
    config = {"n_in": x.shape[1] + 1, "n_out": D, "hidden": hidden, "depth": depth}
    net = mlp(**config)

    def batch(g: torch.Generator) -> Tensor:
        k = torch.randint(K, (batch_size,), generator=g)
        n = torch.randint(N, (batch_size,), generator=g)
        pred = net(torch.cat([x[n], times[k][:, None]], dim=1))
        return ((pred - target[k, n]) ** 2).mean()

    started = time.perf_counter()
    losses = _train(net, batch, steps, lr, seed)
    base["header"].update(fit_seconds=round(time.perf_counter() - started, 2), losses=[losses[0], losses[-1]],
                          settings=dict(hidden=hidden, depth=depth, steps=steps, batch_size=batch_size, lr=lr))
    return RegressionPolicy(net=net.eval(), net_config=config, y_mean=y_mean, y_scale=y_scale, **base)


@stage
@stage
def fit_cfm(
    spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int = 0,
    hidden: int = 128, depth: int = 3, steps: int = 3000, batch_size: int = 512, lr: float = 2e-3, euler_steps: int = 8,
) -> CFMPolicy:
    """Fit the conditional-flow-matching baseline: v(y_s, x, t) regressed onto y_{k+1} − y_k at
    y_s = (1 − s)·y_k + s·y_{k+1}, s ~ U[0, 1], for OT-paired recorded samples of anchors k and k+1.

    :param spec: the task.
    :param dataset: the recorded :class:`~hti_rl.dataset.PolicyDataset` (its ``samples``).
    :param actors: the anchor actors, in weight order.
    :param seed: seeds the initialisation and the batches.
    :param euler_steps: Euler steps over a whole interval at sampling time.
    """
    torch.manual_seed(seed)
    base = base_arguments(spec, dataset, actors, seed, "cfm")
    x = torch.from_numpy((dataset.obs - base["x_mean"]) / base["x_std"]).float()  # [N, C]
    samples = dataset.samples  # [K, N, M, D]
    K, N, M, D = samples.shape
    flat = torch.from_numpy(samples.reshape(-1, D)).float()
    y_mean = flat.mean(0)
    y_scale = float(flat.std(0).mean().clamp_min(1e-6))
    y = (torch.from_numpy(samples).float() - y_mean) / y_scale
    pairs = ot_pairing(torch.from_numpy(samples).double())  # [K-1, N, M]: exact OT within each state
    times = torch.from_numpy(_unit_times(spec)).float()
    config = {"n_in": D + x.shape[1] + 1, "n_out": D, "hidden": hidden, "depth": depth}
    net = mlp(**config)

    def batch(g: torch.Generator) -> Tensor:
        k = torch.randint(K - 1, (batch_size,), generator=g)
        n = torch.randint(N, (batch_size,), generator=g)
        m = torch.randint(M, (batch_size,), generator=g)
        s = torch.rand(batch_size, generator=g)
        y0, y1 = y[k, n, m], y[k + 1, n, pairs[k, n, m]]
        ys = (1 - s[:, None]) * y0 + s[:, None] * y1
        t = times[k] + s * (times[k + 1] - times[k])
        return ((net(torch.cat([ys, x[n], t[:, None]], dim=1)) - (y1 - y0)) ** 2).mean()

    started = time.perf_counter()
    losses = _train(net, batch, steps, lr, seed)
    base["header"].update(fit_seconds=round(time.perf_counter() - started, 2), losses=[losses[0], losses[-1]],
                          settings=dict(hidden=hidden, depth=depth, steps=steps, batch_size=batch_size, lr=lr, euler_steps=euler_steps))
    return CFMPolicy(net=net.eval(), net_config=config, y_mean=y_mean, y_scale=y_scale, euler_steps=euler_steps, **base)


def fit_param_interp(spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int = 0) -> ParameterInterpolation:
    """Parameter interpolation of shared-start anchors (nothing to fit).

    :raises AnchorError: the anchors were not fine-tuned from one shared start.
    """
    return ParameterInterpolation(**base_arguments(spec, dataset, actors, seed, "param_interp"))

