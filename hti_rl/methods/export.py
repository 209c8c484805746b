"""Export a surrogate at one weight as one self-contained graph: ONNX or TorchScript.

The graph is the policy's deterministic ``predict``: raw env observation ``obs`` [batch, C] float32 ->
``action`` [batch, D] float32, with each anchor's observation normalisation (VecNormalize statistics),
the two anchor actors, the CLOT path at the weight's local time, and the squashing or clipping into the
action Box, all inside. Nothing of hti-rl (or SB3) is needed to run it::

    hti-rl export runs/demo/surrogate.zip --weight 3 --format onnx -o policy.onnx

    import onnxruntime
    session = onnxruntime.InferenceSession("policy.onnx")
    action = session.run(None, {"obs": obs[None].astype("float32")})[0]

The weight is fixed in the graph (the interval and the spline basis at its local time are constants).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hti_rl.errors import HTIError
from hti_rl.io import atomic_write
from hti_rl.methods.deployed import AtWeight

FORMATS = ("onnx", "torchscript")
OPSET = 17


class Deterministic(nn.Module):
    """:class:`AtWeight` without noise, clipped to the action Box as SB3's ``predict`` clips.

    :param module: the surrogate at the weight.
    :param low: the action Box's lower bounds [D].
    :param high: its upper bounds [D].
    """

    def __init__(self, module: AtWeight, low: Tensor, high: Tensor):
        super().__init__()
        self.module = module
        self.register_buffer("low", low.float())
        self.register_buffer("high", high.float())

    def forward(self, obs: Tensor) -> Tensor:
        """obs [B, C] float32 -> action [B, D] float32"""
        return torch.maximum(torch.minimum(self.module(obs), self.high), self.low)


class GridDeterministic(nn.Module):
    """A grid surrogate's deterministic action at its current weight vector, clipped to the action Box (the cell
    and local times are constants of the traced graph).

    :param policy: a :class:`~hti_rl.methods.grid.GridPolicy` set to the weight.
    """

    def __init__(self, policy: nn.Module):
        super().__init__()
        self.policy = policy
        self.register_buffer("low", torch.as_tensor(policy.action_space.low).float())
        self.register_buffer("high", torch.as_tensor(policy.action_space.high).float())

    def forward(self, obs: Tensor) -> Tensor:
        """obs [B, C] float32 -> action [B, D] float32"""
        return torch.maximum(torch.minimum(self.policy._predict(obs, True), self.high), self.low)


def _grid_graph(surrogate: str | Path, weight: object, allow_extrapolation: bool) -> tuple[nn.Module, Any]:
    """(graph, policy) of a grid surrogate at a weight vector."""
    from hti_rl.methods.base import AnchoredPolicy
    from hti_rl.methods.grid_surrogate import GridSurrogatePolicy

    policy = AnchoredPolicy.load(surrogate, allow_extrapolation=allow_extrapolation)
    if not isinstance(policy, GridSurrogatePolicy):
        raise HTIError(f"{surrogate} holds a {type(policy).__name__}, not a surrogate; export the `hti-rl fit` file (surrogate.zip).")
    policy.set_weight(weight)
    policy.requires_grad_(False)  # constants of the graph: its output needs no gradient
    return GridDeterministic(policy).eval(), policy


def export(surrogate: str | Path, weight: Any, fmt: str, out: str | Path, allow_extrapolation: bool = False) -> Path:
    """Write the surrogate in file ``surrogate`` at reward weight ``weight`` as one graph to ``out``, atomically.

    :param surrogate: a ``surrogate.zip`` written by ``hti-rl fit``.
    :param weight: the reward weight the graph acts at (a vector for a surrogate of several weights).
    :param fmt: ``"onnx"`` (onnxruntime, ``pip install hti-rl[export]``) or ``"torchscript"`` (``torch.jit.load``).
    :param out: the file to write.
    :param allow_extrapolation: accept a weight outside the anchor range.
    :return: ``out``.
    :raises HTIError: an unknown format, a file that is not a surrogate, a weight out of range, or onnx missing.
    """
    from hti_rl.methods.policy_file import read_policy_file
    from hti_rl.methods.surrogate import SurrogatePolicy

    if fmt not in FORMATS:
        raise HTIError(f"unknown export format {fmt!r}; use --format onnx or --format torchscript.")
    header, _ = read_policy_file(surrogate)
    if isinstance(header["weights"][0], list):
        graph, policy = _grid_graph(surrogate, weight, allow_extrapolation)
        shown = json.dumps(list(policy.weight))
    else:
        policy = SurrogatePolicy.load(surrogate, allow_extrapolation=allow_extrapolation)
        policy.set_weight(weight)
        space = policy.action_space
        graph = Deterministic(policy.at_weight, torch.as_tensor(space.low), torch.as_tensor(space.high)).eval()
        shown = repr(float(weight))
    example = torch.zeros(2, *policy.observation_space.shape, dtype=torch.float32)
    meta = {
        "hti_rl_surrogate": Path(surrogate).name,
        "task": str(policy.header.get("task")),
        "weight": shown,
        "weights": json.dumps(policy.weights),
        "inputs": "obs: raw env observations [batch, C] float32",
        "outputs": "action: env actions [batch, D] float32, inside the action Box",
    }
    blob = _onnx(graph, example, meta) if fmt == "onnx" else _torchscript(graph, example, meta)
    with atomic_write(out) as f:
        f.write(blob)
    return Path(out)


def _onnx(graph: nn.Module, example: Tensor, meta: dict[str, str]) -> bytes:
    """The ONNX model (opset :data:`OPSET`, dynamic batch), its metadata holding ``meta``."""
    try:
        import onnx
    except ImportError:
        raise HTIError("ONNX export needs the onnx package: pip install 'hti-rl[export]' (onnx, onnxruntime).") from None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated; it needs no onnxscript
        torch.onnx.export(
            graph, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["obs"], output_names=["action"],
            dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
        )
    model = onnx.load_from_string(buf.getvalue())
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _torchscript(graph: nn.Module, example: Tensor, meta: dict[str, str]) -> bytes:
    """The traced TorchScript module; ``meta`` rides along as ``extra/meta.json``."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, buf, _extra_files={"meta.json": json.dumps(meta)})
    return buf.getvalue()
