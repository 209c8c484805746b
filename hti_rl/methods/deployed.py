"""The surrogate at one weight as one module: raw env observation -> env action.

:class:`AtWeight` is what :class:`~hti_rl.methods.surrogate.SurrogatePolicy` runs at ``predict`` and
what ``hti-rl export`` writes as a graph. Everything that depends on the weight only (the interval k,
the local time s, the spline basis at s) is computed once when it is built (at ``set_weight``); a call
runs the anchor actors (their own observation normalisation), the path net and the squashing or
clipping into the action Box, with the same operations in the same order as
:meth:`hti_rl.clot.CLOTModel.push`, so that actions are identical to the unfused computation.

From :data:`FAST_BATCH` observations on, an endpoint-mode path between two anchors of the same layer
description runs a faster arrangement of the same arithmetic instead (:class:`_Pair`, :meth:`AtWeight._fast_push`):
both anchors' trunks as one stack of batched layers, tanh as σ with its affine parts folded into the layers around
it, the condition's standardisation folded into the FiLM head's first layer and FiLM's 1 + γ into its last bias,
the path's bound and its contraction over the knots as one matrix product.
Its actions differ from the unfused ones by float rounding only (bounded in tests/test_predict_fused.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from hti_rl.actors import AnchorActor
from hti_rl.clot import CLOTModel

# From this batch size on, the anchors' tanh layers run through σ (tanh(z) = 2σ(2z) − 1), and a path between two
# anchors of one layer description runs the fast arrangement (module docstring). torch's tanh is MKL's where torch
# is built with MKL, and MKL takes a generic code path on CPUs other than Intel's: on an AMD EPYC, one thread,
# [256, 64] floats, tanh took 222-253 µs, sigmoid 25-31 µs, 2σ(2z) − 1 55-59 µs; on an Intel Xeon tanh took 5 µs
# and sigmoid 6 µs, and tanh took 37 µs once MKL was made to take its generic path there (MKL_CBWR=COMPATIBLE),
# sigmoid still 6 µs. So σ is the choice that is fast on both; its 2· goes into the layer before (exact: a power of
# two) and its − 1 into the layer after (:func:`_fed_sigmoid`), so that it costs σ alone, and only a trunk's last
# tanh, whose output the heads read, is computed as 2σ(2z) − 1 (:class:`TanhOfDoubled`). Below this batch size
# the one-op tanh is cheaper. Deterministic actions move by float rounding only (tests/test_predict_fused.py).
FAST_BATCH = 32


class SigmoidInPlace(nn.Module):
    """σ, written over its input (a fresh layer output: no allocation)."""

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid_(z)


class TanhOfDoubled(nn.Module):
    """tanh(z) from 2z: 2σ(2z) − 1. The doubling is folded into the layer before (exact in binary)."""

    def forward(self, z2: Tensor) -> Tensor:
        return torch.sigmoid_(z2).mul_(2.0).sub_(1.0)


@torch.no_grad()
def _linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """A Linear layer holding copies of ``weight`` [out, in] and ``bias`` [out] (None: no bias)."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.copy_(weight)
    if bias is not None:
        layer.bias.copy_(bias)
    return layer


@torch.no_grad()
def _doubled(layer: nn.Linear) -> nn.Linear:
    """A copy of ``layer`` with weight and bias times 2 (exact: a power of two)."""
    return _linear(2.0 * layer.weight, None if layer.bias is None else 2.0 * layer.bias)


@torch.no_grad()
def _fed_sigmoid(layer: nn.Linear) -> nn.Linear:
    """A copy of ``layer`` that reads s = σ(2z) where it read tanh(z) = 2s − 1: weight 2W (exact), bias b − W·1."""
    return _linear(2.0 * layer.weight, (layer.bias if layer.bias is not None else 0.0) - layer.weight.sum(1))


def fast_tanh_layers(layers: nn.Sequential) -> nn.Sequential:
    """``layers`` with each Linear → Tanh as doubled Linear → σ and the Linear after it reading σ
    (:func:`_fed_sigmoid`); a Tanh that no Linear follows as doubled Linear → :class:`TanhOfDoubled`. The rest shared."""
    items, out = list(layers), []
    for i, layer in enumerate(items):
        if isinstance(layer, nn.Tanh) and out and isinstance(out[-1], nn.Linear):
            out[-1] = _doubled(out[-1])
            followed = i + 1 < len(items) and isinstance(items[i + 1], nn.Linear)
            layer = SigmoidInPlace() if followed else TanhOfDoubled()
        elif isinstance(layer, nn.Linear) and out and isinstance(out[-1], SigmoidInPlace):  # after a converted Tanh
            layer = _fed_sigmoid(layer)
        out.append(layer)
    return nn.Sequential(*out)


class _Actor(nn.Module):
    """An anchor actor's action at a batch: its own layers below :data:`FAST_BATCH`, the
    fast-tanh copies from it on."""

    def __init__(self, actor: AnchorActor):
        super().__init__()
        self.actor = actor
        self.fast_trunk, self.fast_head = fast_tanh_layers(actor.trunk), fast_tanh_layers(actor.mean_head)

    def forward(self, obs: Tensor, noise: Tensor | None) -> Tensor:
        """obs [B, C] raw, noise [B, D] standard normal or None -> y [B, D]: the mean, or mean + std · noise"""
        actor, fast = self.actor, obs.shape[0] >= FAST_BATCH
        # Without VecNormalize statistics the actor's normalisation is a float32 cast: none needed for float32 obs.
        plain = actor.arch["obs_norm"] is None and obs.dtype == torch.float32
        latent = (self.fast_trunk if fast else actor.trunk)(obs if plain else actor.normalize(obs))
        return _draw(actor, latent, (self.fast_head if fast else actor.mean_head)(latent), noise)


def _draw(actor: AnchorActor, latent: Tensor, mean: Tensor, noise: Tensor | None) -> Tensor:
    """latent [B, L], mean [B, D], noise [B, D] or None -> y [B, D]: the mean, or mean + std · noise"""
    if noise is None:
        return mean
    if actor.arch["std"]["type"] == "param":  # one log-std for every state: exp of [D], not of [B, D]
        return mean + actor.log_std.exp() * noise
    return mean + actor._log_std(latent, mean).exp() * noise


class _TwinLinear(nn.Module):
    """Two Linear layers of one shape applied to a stacked input in one batched matmul: h [2, B, in] -> [2, B, out]."""

    def __init__(self, a: nn.Linear, b: nn.Linear):
        super().__init__()
        self.register_buffer("weight_t", torch.stack([a.weight.detach(), b.weight.detach()]).transpose(1, 2).contiguous())
        bias = [layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_features) for layer in (a, b)]
        self.register_buffer("bias", torch.stack(bias).unsqueeze(1))

    def forward(self, h: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, h, self.weight_t)


class _Pair(nn.Module):
    """Anchors k and k+1 side by side (the fast arrangement): their trunks' layers stacked, one batched matmul
    per layer for both ([2, B, ·]), then each anchor's own head (narrow heads are faster as two matmuls).

    Only for two actors of one layer description (:meth:`fits`); built from the two :class:`_Actor`'s fast copies
    (their tanh layers through σ), whose heads it shares unless it folds the trunk's last tanh into them.
    """

    def __init__(self, start: _Actor, end: _Actor):
        super().__init__()
        self.actors = (start.actor, end.actor)
        layers = list(zip(start.fast_trunk, end.fast_trunk))
        heads = [start.fast_head, end.fast_head]
        # Where only the mean heads read the trunk's output (std one for every state, or none), its last tanh
        # goes through σ too, its − 1 into the heads' first layers (fast_tanh_layers).
        if (all(a.arch["std"]["type"] in ("param", "none") for a in self.actors) and layers
                and isinstance(layers[-1][0], TanhOfDoubled) and all(isinstance(h[0], nn.Linear) for h in heads)):
            layers[-1] = (SigmoidInPlace(), None)
            heads = [nn.Sequential(_fed_sigmoid(h[0]), *h[1:]) for h in heads]
        self.trunk = nn.Sequential(*[_TwinLinear(a, b) if isinstance(a, nn.Linear) else a for a, b in layers])
        self.heads = nn.ModuleList(heads)
        self.shared_input = start.actor.arch["obs_norm"] is None and end.actor.arch["obs_norm"] is None
        # One log-std for every state: its exp once, here, and each draw mean + std · noise as one addcmul.
        for name, actor in (("std_start", start.actor), ("std_end", end.actor)):
            self.register_buffer(name, actor.log_std.detach().exp() if actor.arch["std"]["type"] == "param" else None)

    @staticmethod
    def fits(start: AnchorActor, end: AnchorActor) -> bool:
        """Whether the two actors stack: the same kind, layers, std and observation size."""
        keys = ("kind", "obs_dim", "action_dim", "trunk", "mean", "std")
        return all(start.arch.get(key) == end.arch.get(key) for key in keys)

    def forward(self, obs: Tensor, noise: Tensor | None, end_noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """obs [B, C] raw float32, noises [B, D] or None -> (anchor k's y, anchor k+1's y), each [B, D]"""
        start, end = self.actors
        if self.shared_input:
            h = obs.expand(2, *obs.shape)
        else:
            h = torch.stack([start.normalize(obs), end.normalize(obs)])
        latent = self.trunk(h)
        return (self._draw(start, self.std_start, latent[0], self.heads[0](latent[0]), noise),
                self._draw(end, self.std_end, latent[1], self.heads[1](latent[1]), end_noise))

    @staticmethod
    def _draw(actor: AnchorActor, std: Tensor | None, latent: Tensor, mean: Tensor, noise: Tensor | None) -> Tensor:
        """:func:`_draw` with the anchor's std precomputed where it is one for every state."""
        if noise is None or std is None:
            return _draw(actor, latent, mean, noise)
        return torch.addcmul(mean, std, noise)


def _folded_film(film: nn.Sequential, depth: int, hidden: int, x_mean: Tensor, x_std: Tensor) -> nn.Sequential:
    """A copy of a FiLM head (Linear, SiLU, Linear) that takes the raw observation and gives 1 + γ where it gave γ:
    the standardisation (obs − x_mean) / x_std folded into the first layer, the 1 into the last layer's γ biases."""
    first, act, last = film
    with torch.no_grad():
        w = first.weight / x_std
        bias = last.bias.clone().view(2 * depth, hidden)
        bias[0::2] += 1.0  # rows 2i hold layer i's γ
        return nn.Sequential(_linear(w, first.bias - w @ x_mean), act, _linear(last.weight, bias.view(-1)))


@torch.no_grad()
def _folded_first(layer: nn.Linear, y_shift: Tensor, y_scale: Tensor) -> nn.Linear:
    """A copy of the path net's first layer that reads [y, y_end] in env units where it read their standardised
    [y0, y1] = ([y, y_end] − y_shift) / y_scale: weight W / y_scale, bias b − (W / y_scale)·[y_shift, y_shift]."""
    w = layer.weight / y_scale
    return _linear(w, layer.bias - w @ torch.cat([y_shift, y_shift]))


class AtWeight(nn.Module):
    """A surrogate fixed at one weight: anchors k and k+1, the CLOT path between them, local time s.

    :param start: anchor k's actor (its squashing or clipping maps the result into the action Box).
    :param end: anchor k+1's actor (the path's end in endpoint mode), or None at an anchor weight.
    :param clot: the fitted CLOT model, or None at an anchor weight.
    :param k: the interval.
    :param t: the weight in the anchors' time coordinate (float32, as ``CLOTModel.push`` receives it).
    :param x_mean: the recorded observations' mean [C] (the CLOT condition's standardisation).
    :param x_std: their standard deviation [C].
    """

    def __init__(
        self,
        start: AnchorActor,
        end: AnchorActor | None,
        clot: CLOTModel | None,
        k: int,
        t: float,
        x_mean: Tensor,
        x_std: Tensor,
    ):
        super().__init__()
        self.start, self.end = start, end
        self.draw_start = _Actor(start)
        self.draw_end = _Actor(end) if end is not None else None
        self.path = clot is not None
        # Which anchors draw noise when stochastic, and its size: (anchor k, anchor k+1 at the path's end, D).
        self.draws = (start.kind != "deterministic",
                      clot is not None and clot.endpoint and end is not None and end.kind != "deterministic", start.action_dim)
        self._traced: dict[tuple[bool, bool, bool], nn.Module | None] = {}
        if clot is not None:
            self.clot = clot
            self.path_net = clot.path_net
            self.endpoint = clot.endpoint
            self.map = None if clot.endpoint else clot.maps[k]
            self.register_buffer("s", torch.zeros(1, 1))
            self.register_buffer("b", torch.zeros(clot.basis.n))
            # The fast arrangement's contraction over the knots, Σ_j b_j k_j, as knots [B, n·D] @ kron(b, I_D) [n·D, D];
            # bounded, Σ_j b_j tanh(r_j) = 2 Σ_j b_j σ(2 r_j) − Σ_j b_j: the matrix doubled, minus Σ_j b_j.
            dim = clot.path_net.dim
            self.register_buffer("contract", torch.zeros(clot.basis.n * dim, dim))
            self.register_buffer("contract_shift", torch.zeros(dim))
            self.register_buffer("y_shift", clot.y_shift.clone())
            self.register_buffer("y_scale", clot.y_scale.clone())
            self.register_buffer("x_mean", x_mean.clone())
            self.register_buffer("x_std", x_std.clone())
            self.move_to(t)
        self.pair = None  # the fast arrangement (module docstring), where it applies
        if clot is not None and clot.endpoint and end is not None and _Pair.fits(start, end):
            self.pair = _Pair(self.draw_start, self.draw_end)
            net = clot.path_net.net
            self.fast_film = _folded_film(net.film, net.depth, net.hidden, x_mean, x_std)
            # The path net's hidden layers, the first reading [y, y_end] in env units.
            self.fast_layers = nn.ModuleList([_folded_first(net.layers[0], clot.y_shift, clot.y_scale), *net.layers[1:]])
            # Bounded, the knots' tanh through σ as the anchors' (fast_tanh_layers): the doubling in a copy of the
            # output layer, the 2· and − 1 in the contraction (``contract``).
            self.fast_out = _doubled(net.out) if clot.path_net.max_bend is not None else net.out

    @torch.no_grad()
    def move_to(self, t: float) -> None:
        """Another weight in the same interval: local time and spline basis there, updated in place (so
        that traces of this module follow). t in the anchors' time coordinate."""
        _, s = self.clot.interval(torch.tensor([t], dtype=torch.float32))
        self.s.copy_(s.unsqueeze(-1))
        self.b.copy_(self.clot.basis(s)[0][0])
        kron = torch.kron(self.b[:, None], torch.eye(self.contract.shape[1]))
        if self.path_net.max_bend is None:  # the bend in env units
            self.contract.copy_(self.y_scale * kron)
        else:  # scaled by the chord's length, which _fast_push takes in env units: no y_scale here
            self.contract.copy_(2.0 * kron)
            self.contract_shift.fill_(-float(self.b.sum()))

    def run(self, obs: Tensor, noise: Tensor | None = None, end_noise: Tensor | None = None) -> Tensor:
        """:meth:`forward` through a TorchScript trace of this module, made on the first call with each
        pattern of noise inputs (eager where tracing fails): the same operations, without Python's
        per-operation overhead, which is most of the time at small batches."""
        key = (noise is not None, end_noise is not None, obs.shape[0] >= FAST_BATCH)
        traced = self._traced.get(key, False)
        if traced is False:
            traced = self._traced[key] = _trace(self, obs, noise, end_noise)
        if traced is None:
            return self(obs, noise, end_noise)
        if end_noise is not None:
            return traced(obs, noise, end_noise) if noise is not None else traced(obs, end_noise)
        return traced(obs, noise) if noise is not None else traced(obs)

    def forward(self, obs: Tensor, noise: Tensor | None = None, end_noise: Tensor | None = None) -> Tensor:
        """obs [B, C] raw float32, noise/end_noise [B, D] or None (deterministic) -> env action [B, D]"""
        if self.pair is not None and obs.shape[0] >= FAST_BATCH:
            y, y_end = self.pair(obs, noise, end_noise)
            return self.start.to_env_action(self._fast_push(y, y_end, obs))
        y = self.draw_start(obs, noise)
        if self.path:
            y = self._push(y, obs, end_noise)
        return self.start.to_env_action(y)

    def _push(self, y: Tensor, obs: Tensor, end_noise: Tensor | None) -> Tensor:
        """y [B, D] of anchor k -> the point at local time s on its CLOT path [B, D] (``CLOTModel.push``)."""
        x = (obs - self.x_mean) / self.x_std
        y0 = (y - self.y_shift) / self.y_scale
        if self.endpoint:
            y1 = (self.draw_end(obs, end_noise) - self.y_shift) / self.y_scale
        else:
            y1 = self.map(y0, x)
        knots = self.path_net(y0, y1, x)
        # The same bits as einsum("bn,bnd->bd", b, knots) (both run bmm), in one operation instead of its reshapes.
        bend = torch.matmul(self.b, knots)
        # Adding the scaled displacement to y itself (not un-standardising the point) keeps s = 0 exact.
        displacement = self.s * (y1 - y0) + bend
        return y + self.y_scale * displacement

    def _fast_push(self, y: Tensor, y_end: Tensor, obs: Tensor) -> Tensor:
        """:meth:`_push` in the fast arrangement: anchor k's y [B, D], anchor k+1's [B, D], raw obs [B, C] -> [B, D].

        The same formula with fewer operations, in the env's units (y_scale is one positive scalar, so
        y_scale · (s·(y1 − y0) + bend) = s·(y_end − y) + y_scale · bend, and y_scale·‖y1 − y0‖ = ‖y_end − y‖): the path
        net's standardisation folded into its first layer, FiLM's modulation from the raw observation through the
        folded head, h = silu((1 + γ) ⊙ W·h + β) as one ``addcmul``, and the bend ``Σ_j b_j knot_j`` (bounded:
        ``max_bend·‖y1 − y0‖·Σ_j b_j tanh(raw_j)``, its tanh through σ) as one matrix product with ``contract``.
        """
        net, bound = self.path_net.net, self.path_net.max_bend
        gb = self.fast_film(obs).view(obs.shape[0], 2 * net.depth, net.hidden).unbind(1)
        h = torch.cat([y, y_end], -1)
        for i, layer in enumerate(self.fast_layers):
            h = F.silu(torch.addcmul(gb[2 * i + 1], gb[2 * i], layer(h)), inplace=True)
        raw = self.fast_out(h)  # [B, n·D]: the knots, or twice them where bounded
        chord = y_end - y
        if bound is None:
            return y + torch.addmm(self.s * chord, raw, self.contract)
        bend = torch.addmm(self.contract_shift, torch.sigmoid_(raw), self.contract)
        return y + torch.addcmul(self.s * chord, chord.norm(dim=-1, keepdim=True), bend, value=bound)


class _Inputs(nn.Module):
    """Positional tensors only, as tracing needs: obs (, noise)(, end_noise) -> :class:`AtWeight`."""

    def __init__(self, module: AtWeight, noise: bool, end_noise: bool):
        super().__init__()
        self.module, self.noise, self.end_noise = module, noise, end_noise

    def forward(self, obs: Tensor, *noises: Tensor) -> Tensor:
        it = iter(noises)
        noise = next(it) if self.noise else None
        end_noise = next(it) if self.end_noise else None
        return self.module(obs, noise, end_noise)


def _trace(module: AtWeight, obs: Tensor, noise: Tensor | None, end_noise: Tensor | None) -> nn.Module | None:
    """A trace of ``module`` for this pattern of inputs (it shares the module's parameters and buffers), or
    None where tracing fails."""
    wrapper = _Inputs(module, noise is not None, end_noise is not None).eval()
    inputs = (obs, *[n for n in (noise, end_noise) if n is not None])
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, which is far slower to call
            return torch.jit.trace(wrapper, tuple(i.clone() for i in inputs), check_trace=False)
    except Exception:  # an operation tracing does not support: run eagerly
        return None
