"""CLOTModel: the fitted surrogate. Moves a sample of anchor k at condition x to local time s along its
least-action path, in closed form: one map evaluation, one path-net evaluation, one spline evaluation
(docs/method.md §5.9)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from hti_rl.clot.metric import Metric
from hti_rl.clot.paths import PathNet, SplineBasis
from hti_rl.clot.transport import IntervalTransport
from hti_rl.errors import FileFormatError, HTIError
from hti_rl.io import atomic_write

STATE_FORMAT = "hti_rl.clot.CLOTModel/3"  # 3: the config holds max_bend (bounded path bends)
_SHAPE_KEYS = ("dim", "cond_dim", "n_anchors", "n_ref", "n_samples")


class CLOTModel(nn.Module):
    """A fitted CLOT surrogate. Built by :func:`hti_rl.clot.fit_clot` or :meth:`from_state`.

    Outputs are handled internally in a standardised frame (one shift, one scalar scale); every public
    method takes and returns outputs in the caller's units.

    :param config: the fit's :class:`~hti_rl.clot.CLOTConfig` as a dict.
    :param dim: output dimension D.
    :param cond_dim: condition dimension C.
    :param n_anchors: number of anchors K.
    :param n_ref: number of stored reference conditions.
    :param n_samples: samples per anchor and condition M.
    """

    def __init__(self, config: dict, dim: int, cond_dim: int, n_anchors: int, n_ref: int, n_samples: int):
        super().__init__()
        self.config = dict(config)
        self.shape = dict(dim=dim, cond_dim=cond_dim, n_anchors=n_anchors, n_ref=n_ref, n_samples=n_samples)
        self.endpoint = config["mode"] == "endpoint"
        c = config
        self.maps = nn.ModuleList(
            [] if self.endpoint else
            [IntervalTransport(dim, cond_dim, c["hidden"], c["depth"], bounded=c.get("bound_maps", False))
             for _ in range(n_anchors - 1)]
        )
        self.path_net = PathNet(dim, cond_dim, c["n_knots"], c["path_hidden"], c["path_depth"],
                                c.get("max_bend"))
        self.metric = Metric(dim, cond_dim, c["metric_hidden"], c["metric_depth"], c["metric_floor"],
                             learned=c["metric"] == "learned")
        self.basis = SplineBasis(c["n_knots"])
        self.register_buffer("times", torch.zeros(n_anchors))
        self.register_buffer("y_shift", torch.zeros(dim))
        self.register_buffer("y_scale", torch.ones(()))
        # Subsampled reference set for `sample`: conditions, every anchor's samples there, and the
        # within-condition pairing of anchor k's samples with anchor k+1's (used in endpoint mode).
        self.register_buffer("ref_x", torch.zeros(n_ref, cond_dim))
        self.register_buffer("ref_y", torch.zeros(n_anchors, n_ref, n_samples, dim))
        self.register_buffer("pairing", torch.zeros(n_anchors - 1, n_ref, n_samples, dtype=torch.long))
        self.eval()

    def standardise(self, y: Tensor) -> Tensor:
        """y [..., D] in caller units -> [..., D] in the internal frame."""
        return (y - self.y_shift) / self.y_scale

    def transport(self, y: Tensor, x: Tensor, k: Tensor) -> Tensor:
        """T_k(y|x) in the internal frame, each row through its own interval's map.
        y [B, D], x [B, C], k [B] long -> [B, D]"""
        if len(self.maps) == 1:
            return self.maps[0](y, x)
        out = torch.empty_like(y)
        for j, m in enumerate(self.maps):
            rows = (k == j).nonzero().squeeze(1)
            if rows.numel():
                out[rows] = m(y[rows], x[rows])
        return out

    def check_times(self, times: list[float], whose: str) -> None:
        """Raise a FileFormatError unless this model's anchor times are ``times`` (to 1e-5): a model fitted on
        other times would extrapolate, or interpolate at the wrong local time, without a word.

        :param whose: what the times belong to, for the message (e.g. "this policy's (its weights ...)").
        """
        if self.times.shape != (len(times),) or not torch.allclose(self.times.double(), torch.tensor(times, dtype=torch.float64), atol=1e-5):
            raise FileFormatError(f"the CLOT model's anchor times {self.times.tolist()} are not {whose}, "
                                  f"{[round(t, 6) for t in times]}; refit it with `hti-rl fit`.")

    def interval(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Local time. t [B] in the anchors' time coordinate -> (k [B] long, s [B]).

        k is the interval [times[k], times[k+1]] holding t (the first or last one outside the range,
        where s falls below 0 or above 1: extrapolation is the caller's decision).
        """
        t = torch.as_tensor(t, dtype=self.times.dtype)
        k = (torch.searchsorted(self.times, t, right=True) - 1).clamp(0, len(self.times) - 2)
        t0 = self.times[k]
        return k, (t - t0) / (self.times[k + 1] - t0)

    @torch.inference_mode()
    def push(self, y: Tensor, x: Tensor, t: Tensor, y_end: Tensor | None = None) -> Tensor:
        """Move samples of anchor k(t) to time t along their paths.

        :param y: samples of anchor k(t) at x [B, D].
        :param x: conditions [B, C], standardised like the fit's data.
        :param t: times [B] in the anchors' coordinate.
        :param y_end: path ends [B, D] (anchor k+1's output at x); required in endpoint mode, optional
            in map mode, where the end is T_k(y|x) unless given.
        :return: points [B, D]; exactly y where s = 0.
        """
        y = torch.as_tensor(y, dtype=torch.float32)
        x = torch.as_tensor(x, dtype=torch.float32)
        k, s = self.interval(t)
        y0 = self.standardise(y)
        if y_end is not None:
            y1 = self.standardise(torch.as_tensor(y_end, dtype=torch.float32))
        elif self.endpoint:
            raise HTIError(
                "this CLOTModel was fitted in endpoint mode, so push needs y_end (anchor k+1's output at x). "
                "Pass y_end, or fit with CLOTConfig(mode='map') to push without it."
            )
        else:
            y1 = self.transport(y0, x, k)
        knots = self.path_net(y0, y1, x)
        b, _ = self.basis(s)
        # Adding the scaled displacement to y itself (not un-standardising the point) keeps s = 0 exact.
        displacement = s.unsqueeze(-1) * (y1 - y0) + torch.einsum("bn,bnd->bd", b, knots)
        return y + self.y_scale * displacement

    @torch.inference_mode()
    def sample(self, x: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw from the surrogate at (x, t): a stored sample of anchor k(t) at the nearest stored
        condition, pushed to t.

        :param x: conditions [B, C].
        :param t: times [B].
        :param generator: source of the sample choice (the default generator if None).
        :return: samples [B, D].
        """
        x = torch.as_tensor(x, dtype=torch.float32)
        k, _ = self.interval(t)
        n = self.nearest(x)
        m = torch.randint(self.shape["n_samples"], (x.shape[0],), generator=generator)
        y = self.ref_y[k, n, m]
        y_end = self.ref_y[k + 1, n, self.pairing[k, n, m]] if self.endpoint else None
        return self.push(y, x, t, y_end)

    def nearest(self, x: Tensor, max_elements: int = 2**24) -> Tensor:
        """Index of the nearest stored condition. x [B, C] -> [B] long"""
        rows = max(1, max_elements // self.ref_x.shape[0])
        ref_sq = self.ref_x.square().sum(-1)
        return torch.cat([
            (ref_sq - 2 * x[i : i + rows] @ self.ref_x.T).argmin(-1) for i in range(0, x.shape[0], rows)
        ])

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the model: tensors, numbers, strings and dicts only, so it loads
        with ``torch.load(..., weights_only=True)`` and can be embedded in a larger file."""
        return {
            "format": STATE_FORMAT,
            "config": dict(self.config),
            "shape": dict(self.shape),
            "weights": {name: value.detach().clone() for name, value in self.state_dict().items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CLOTModel":
        """Rebuild a model from :meth:`state`.

        :raises FileFormatError: when the dict is not a CLOTModel state of this version.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise FileFormatError(
                f"not a CLOTModel state: format {found!r}, expected {STATE_FORMAT!r}. "
                "Pass the dict returned by CLOTModel.state(), or refit with this version of hti-rl."
            )
        model = cls(state["config"], **{key: state["shape"][key] for key in _SHAPE_KEYS})
        try:
            model.load_state_dict(state["weights"])
        except RuntimeError as exc:
            raise FileFormatError(f"CLOTModel state does not match its own config: {exc}. Refit the model.") from exc
        return model

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state` to ``path`` atomically."""
        with atomic_write(path, "wb") as f:
            torch.save(self.state(), f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CLOTModel":
        """Read a model written by :meth:`save` (``weights_only=True``: no pickled code runs).

        :raises FileFormatError: when the file is not a CLOTModel.
        """
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types on a corrupt or foreign file
            # torch's own message advises weights_only=False, which would run a crafted file's code: keep
            # only its first line, and say why the file was refused.
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if isinstance(exc, EOFError) or "failed finding central directory" in str(exc):
                reason = "the file is empty or truncated"
            elif "weights_only" in str(exc) or "Unsupported global" in str(exc):
                reason = "it holds objects other than tensors, and was refused without running them"
            raise FileFormatError(f"cannot read a CLOTModel from {path}: {reason}. Refit or restore the file.") from exc
        return cls.from_state(state)
