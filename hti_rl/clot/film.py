"""FiLM-conditioned MLP: the network shape shared by the metric, the maps, the potentials g_k and the
path net. The input y goes through the layers; the condition x only scales and shifts each hidden
layer (h = act(γ(x) ⊙ W·h + β(x))), so one network serves every condition."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class FiLMMLP(nn.Module):
    """MLP on ``y`` with every hidden layer modulated by the condition ``x``.

    The output layer and the FiLM head start at zero, so a fresh network outputs 0 (a residual map is
    the identity, a metric head gives the Euclidean metric, a path net gives straight lines).

    :param in_dim: size of the input y.
    :param cond_dim: size of the condition x.
    :param out_dim: size of the output.
    :param hidden: width of every hidden layer.
    :param depth: number of hidden layers (>= 1).
    """

    def __init__(self, in_dim: int, cond_dim: int, out_dim: int, hidden: int, depth: int):
        super().__init__()
        self.hidden, self.depth = hidden, depth
        self.layers = nn.ModuleList(nn.Linear(in_dim if i == 0 else hidden, hidden) for i in range(depth))
        self.film = nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * hidden * depth))
        self.out = nn.Linear(hidden, out_dim)
        for layer in (self.film[-1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        """y [B, ..., in_dim], x [B, C] -> [B, ..., out_dim]"""
        return self.apply(y, self.modulation(x))

    def modulation(self, x: Tensor) -> Tensor:
        """γ, β of every layer, computed once per condition. x [B, C] -> gb [B, 2·depth, hidden]"""
        return self.film(x).view(x.shape[0], 2 * self.depth, self.hidden)

    def apply(self, y: Tensor, gb: Tensor) -> Tensor:
        """y [B, ..., in_dim], gb [B, 2·depth, hidden] (:meth:`modulation`) -> [B, ..., out_dim]"""
        # γ, β are broadcast over any middle dims of y (path points); one unbind gives every layer's views.
        if y.dim() > 2:
            gb = gb.view(gb.shape[0], *([1] * (y.dim() - 2)), 2 * self.depth, self.hidden)
        gb = gb.unbind(-2)
        h = y
        for i, layer in enumerate(self.layers):
            h = F.silu((1.0 + gb[2 * i]) * layer(h) + gb[2 * i + 1])
        return self.out(h)
