"""Anchors computed by Python callables (any RL library): ``obs -> action``, stored as tensors when they are
a stack of Linear layers and activations, else by import path (usable in this process, never saved in a
surrogate file). Used by :mod:`hti_rl.training.importing`."""

from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from hti_rl.actors import DETERMINISTIC_LOG_STD, AnchorActor, _copy_layers, describe_layers
from hti_rl.errors import AnchorError, SpaceError


def actor_from_callable(fn: Callable, observation_space: spaces.Box, action_space: spaces.Box) -> AnchorActor:
    """A deterministic anchor from a callable: an ``nn.Sequential`` of Linear layers and activations
    (raw obs [B, C] -> action [B, D]) becomes a plain :class:`AnchorActor`; anything else a
    :class:`CallableActor` (needs ``fn`` importable by name to be stored).

    :raises SpaceError: the spaces are not 1-D Boxes.
    :raises AnchorError: ``fn`` is neither a layer stack nor importable by name.
    """
    for what, space in (("observation", observation_space), ("action", action_space)):
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise SpaceError(f"the task's {what} space {space} is not a 1-D Box; hti-rl needs continuous vector {what}s.")
    arch = {"kind": "deterministic", "obs_dim": int(observation_space.shape[0]), "action_dim": int(action_space.shape[0]),
            "mean": [], "std": {"type": "none"}, "obs_norm": None, "squash": False}
    layers = None
    if isinstance(fn, nn.Module):
        try:
            layers = describe_layers(fn)
        except AnchorError:
            layers = None
    if layers is not None:
        actor = AnchorActor({**arch, "trunk": layers, "source": {"algo": "callable", "policy": type(fn).__name__}})
        _copy_layers(fn, actor.trunk)
    else:
        reference = callable_reference(fn)
        if reference is None:
            raise AnchorError(
                f"{fn!r} cannot be stored as an anchor: hti-rl's files hold tensors, never code. Give an nn.Sequential of "
                "Linear layers and activations (stored as tensors, deployable), or a function/object defined at module "
                "level of an importable module (stored by its import path; recordable, but not deployable in a surrogate)."
            )
        actor = CallableActor({**arch, "trunk": [], "source": {"algo": "callable", "policy": reference}}, fn, reference)
    actor.action_low.copy_(torch.as_tensor(action_space.low, dtype=torch.float32))
    actor.action_high.copy_(torch.as_tensor(action_space.high, dtype=torch.float32))
    return actor.eval()


class CallableActor(AnchorActor):
    """A deterministic anchor computed by Python code: ``fn(obs [C]) -> action [D]`` (numpy), or an
    ``nn.Module`` called on a tensor batch [B, C] -> [B, D]. It lives in this process only:
    :meth:`state` refuses, because hti-rl's files hold tensors and never code.

    :param arch: the actor description (``kind`` deterministic, ``squash`` false).
    :param fn: the callable.
    :param reference: its import path ``module:name``.
    """

    def __init__(self, arch: dict[str, Any], fn: Callable, reference: str):
        super().__init__(arch)
        object.__setattr__(self, "fn", fn)  # not a registered submodule: its weights are not ours to save
        self.reference = reference

    def distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """raw obs [B, C] -> (action [B, D], constant log-std [B, D])."""
        obs = obs.reshape(obs.shape[0], -1)
        with torch.no_grad():
            if isinstance(self.fn, nn.Module):
                out = torch.as_tensor(self.fn(obs.float())).detach().float()
            else:
                rows = obs.detach().cpu().numpy().astype(np.float32)
                out = torch.as_tensor(np.stack([np.asarray(self.fn(o), dtype=np.float32).reshape(-1) for o in rows]))
        if out.shape != (obs.shape[0], self.action_dim):
            raise AnchorError(f"{self.reference} returned actions of shape {tuple(out.shape)}; expected [{self.action_dim}] per observation.")
        return out, torch.full_like(out, DETERMINISTIC_LOG_STD)

    def state(self) -> dict[str, Any]:
        raise AnchorError(
            f"the anchor {self.reference} is a Python callable; a surrogate file holds tensors only, so it cannot include it. "
            "Import that anchor as an nn.Sequential of Linear layers and activations (import_anchors(spec, {weight: net}, "
            "force=True)), then record and fit again."
        )


def callable_reference(fn: Any) -> str | None:
    """``"module:qualname"`` that imports back to ``fn``, or ``None`` (lambda, closure, ``__main__``, instance)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not name or module == "__main__" or "<" in name:
        return None
    try:
        return f"{module}:{name}" if import_reference(f"{module}:{name}") is fn else None
    except AnchorError:
        return None


def import_reference(reference: str) -> Callable:
    """``"module:qualname"`` -> the object (imports the module: the same trust as a spec's component functions)."""
    module, _, name = reference.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise AnchorError(f"the callable anchor {reference!r} does not import ({exc}); make the module importable or re-import the anchor.") from None
    return obj
