"""Feed-forward layer stacks described as JSON (what an SB3 MlpPolicy is built from), and the size bounds
checked before any described layer is built: a crafted description must not allocate gigabytes."""

from __future__ import annotations

from typing import Any

from torch import nn

from hti_rl.errors import AnchorError, FileFormatError

MAX_DIM = 1 << 16
"""The most observation or action numbers an actor may take or give."""


MAX_WEIGHTS = 1 << 26
"""The most weights an actor may hold (256 MB of float32; an SB3 MlpPolicy holds a few thousand)."""


# Layers an SB3 MlpPolicy is built from, with the constructor arguments that define them.
_ACTIVATIONS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Tanh": (nn.Tanh, ()),
    "ReLU": (nn.ReLU, ()),
    "ELU": (nn.ELU, ("alpha",)),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)),
    "SiLU": (nn.SiLU, ()),
    "GELU": (nn.GELU, ()),
    "Sigmoid": (nn.Sigmoid, ()),
    "Softplus": (nn.Softplus, ("beta", "threshold")),
    "Hardtanh": (nn.Hardtanh, ("min_val", "max_val")),
    "Identity": (nn.Identity, ()),
}


# ----------------------------------------------------------------------------- layer descriptions
def check_arch(arch: dict[str, Any]) -> None:
    """Dimensions are integers in [1, :data:`MAX_DIM`], layers are known with integer sizes, and the
    actor holds at most :data:`MAX_WEIGHTS` weights, all checked before anything is allocated.

    :raises FileFormatError: naming the field and the limit.
    """
    for key in ("obs_dim", "action_dim"):
        if not _size(arch.get(key), MAX_DIM):
            raise FileFormatError(f"actor description: `{key}` is {str(arch.get(key))[:40]}; expected an integer in [1, {MAX_DIM}].")
    std = arch.get("std")
    if not isinstance(std, dict):
        raise FileFormatError(f"actor description: `std` is {str(std)[:40]}; expected a mapping.")
    stacks = [arch.get("trunk"), arch.get("mean")] + ([std.get("layers")] if std.get("type") == "layers" else [])
    total = 0
    for stack in stacks:
        if not isinstance(stack, list) or len(stack) > 256:
            raise FileFormatError(f"actor description: a layer stack is {str(stack)[:60]}; expected a list of at most 256 layers.")
        for layer in stack:
            if not isinstance(layer, dict) or layer.get("type") not in (*_ACTIVATIONS, "Linear"):
                raise FileFormatError(f"unknown layer {str(layer)[:60]} in an actor description; was it written by a newer hti-rl?")
            if layer["type"] == "Linear":
                if not (_size(layer.get("in"), MAX_DIM) and _size(layer.get("out"), MAX_DIM) and isinstance(layer.get("bias"), bool)):
                    raise FileFormatError(f"actor description: layer {str(layer)[:80]} needs integer sizes in [1, {MAX_DIM}] and a bool bias.")
                total += layer["in"] * layer["out"] + layer["out"]
    if std.get("type") == "sde":
        if not _size(std.get("latent_dim"), MAX_DIM):
            raise FileFormatError(f"actor description: gSDE `latent_dim` is {str(std.get('latent_dim'))[:40]}; expected an integer in [1, {MAX_DIM}].")
        total += std["latent_dim"] * arch["action_dim"]
    if total > MAX_WEIGHTS:
        raise FileFormatError(f"actor description asks for {total} weights, over the limit of {MAX_WEIGHTS}; nothing was built.")


def _size(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= limit


def flat_layers(module: nn.Module) -> list[nn.Module]:
    """Unroll nested ``nn.Sequential`` into its leaf layers, in call order."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in flat_layers(child)]
    return [module]


def describe_layers(module: nn.Module) -> list[dict[str, Any]]:
    """A JSON-able description of a feed-forward stack (Linear layers and activations).

    :param module: an ``nn.Linear``, an activation, or an ``nn.Sequential`` of them (nested allowed).
    :raises AnchorError: for any other layer (a custom network is not an MlpPolicy).
    """
    layers = []
    for layer in flat_layers(module):
        name = type(layer).__name__
        if isinstance(layer, nn.Linear):
            layers.append({"type": "Linear", "in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None})
        elif name in _ACTIVATIONS and type(layer) is _ACTIVATIONS[name][0]:
            layers.append({"type": name, **{arg: float(getattr(layer, arg)) for arg in _ACTIVATIONS[name][1]}})
        else:
            raise AnchorError(
                f"the policy network contains a {name} layer; hti-rl reads MlpPolicy networks made of "
                f"Linear layers and the activations {sorted(_ACTIVATIONS)}. Train the anchor with MlpPolicy."
            )
    return layers


def build_layers(description: list[dict[str, Any]]) -> nn.Sequential:
    """Rebuild the stack described by :func:`describe_layers` (weights left at their initial values)."""
    layers: list[nn.Module] = []
    for d in description:
        if d["type"] == "Linear":
            layers.append(nn.Linear(d["in"], d["out"], bias=d["bias"]))
        elif d["type"] in _ACTIVATIONS:
            cls, args = _ACTIVATIONS[d["type"]]
            layers.append(cls(**{arg: d[arg] for arg in args}))
        else:
            raise FileFormatError(f"unknown layer type {d['type']!r} in an actor description; was it written by a newer hti-rl?")
    return nn.Sequential(*layers)


def copy_layers(source: nn.Module, target: nn.Sequential) -> None:
    for src, dst in zip(flat_layers(source), target):
        dst.load_state_dict({k: v.detach().cpu().float() for k, v in src.state_dict().items()})
