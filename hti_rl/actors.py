"""AnchorActor: a trained SB3 policy's action distribution as a plain torch module.

An anchor is whatever SB3 agent a user trained at one reward weight: PPO or A2C (diagonal Gaussian,
with or without gSDE), SAC (Gaussian squashed by tanh) or TD3/DDPG (deterministic, squashed by tanh).
:func:`actor_from_sb3` reads the policy network's layers into a JSON-able description, copies the
weights and the VecNormalize observation statistics, and returns an :class:`AnchorActor` that needs
no SB3 object (and no pickle) to be saved and rebuilt.

Everything is expressed in the policy's *unsquashed* action space y:

- ``"gaussian"`` (PPO, A2C): y ~ N(mean, std); the env action is ``clip(y, low, high)``.
- ``"squashed_gaussian"`` (SAC): y ~ N(mean, std) before tanh; the env action is
  ``low + (tanh(y) + 1) (high - low) / 2``.
- ``"deterministic"`` (TD3, DDPG): y = mean, the actor's output before its final tanh; the env action
  is squashed and rescaled as for SAC. A Dirac has no log-std: :func:`AnchorActor.distribution`
  returns the finite constant :data:`DETERMINISTIC_LOG_STD` (std ≈ 2e-9), so that stored datasets stay
  finite; test ``actor.kind == "deterministic"`` rather than the log-std.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hti_rl.errors import FileFormatError, ObservationError
from hti_rl.layers import build_layers, check_arch

STATE_FORMAT = "hti-rl-actor"
STATE_VERSION = 1
KINDS = ("gaussian", "squashed_gaussian", "deterministic")
DETERMINISTIC_LOG_STD = -20.0

def sde_variance(latent: Tensor, log_std: Tensor, use_expln: bool, epsilon: float) -> Tensor:
    """gSDE's per-state action variance: latent [B, L], log_std [L, D or 1] -> (latent²) @ std² [B, D].

    The noise is latent @ W with W_ij ~ N(0, std_ij²), so each action's marginal variance is
    Σ_i latent_i² std_ij² (SB3's ``StateDependentNoiseDistribution``).
    """
    if use_expln:
        below = torch.exp(log_std) * (log_std <= 0)
        above = (torch.log1p(log_std * (log_std > 0) + epsilon) + 1.0) * (log_std > 0)
        std = below + above
    else:
        std = torch.exp(log_std)
    return (latent**2) @ (std**2)


class AnchorActor(nn.Module):
    """One anchor policy's action distribution: raw env observation -> (mean, log_std) of y.

    :param arch: JSON-able description: ``kind``, ``obs_dim`` C, ``action_dim`` D, ``trunk`` and
        ``mean`` layer lists (see :func:`describe_layers`), ``std`` (``{"type": "param"}`` for a
        state-independent log-std, ``{"type": "layers", "layers": [...], "min": a, "max": b}`` for
        SAC's clamped log-std head, ``{"type": "sde", "latent_dim": L, "full_std": bool,
        "use_expln": bool, "epsilon": float}`` for gSDE, ``{"type": "none"}`` for deterministic),
        ``obs_norm`` (``{"clip": float, "epsilon": float}`` or ``None``), ``source`` (provenance) and,
        optionally, ``squash`` (default true; false: a deterministic y is the env action, clipped).
    """

    def __init__(self, arch: dict[str, Any]):
        super().__init__()
        if not isinstance(arch, dict) or arch.get("kind") not in KINDS:
            raise FileFormatError(f"actor kind {arch.get('kind') if isinstance(arch, dict) else arch!r} is not one of {KINDS}")
        check_arch(arch)  # every size bounded before any layer is built
        self.arch = arch
        self.kind: str = arch["kind"]
        c, d = arch["obs_dim"], arch["action_dim"]
        self.trunk = build_layers(arch["trunk"])
        self.mean_head = build_layers(arch["mean"])
        std = arch["std"]
        if std["type"] == "param":
            self.log_std = nn.Parameter(torch.zeros(d))
        elif std["type"] == "layers":
            self.log_std_head = build_layers(std["layers"])
        elif std["type"] == "sde":
            self.sde_log_std = nn.Parameter(torch.zeros(std["latent_dim"], d if std["full_std"] else 1))
        elif std["type"] != "none":
            raise FileFormatError(f"unknown std type {std['type']!r} in an actor description")
        self.register_buffer("obs_mean", torch.zeros(c, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(c, dtype=torch.float64))
        self.register_buffer("action_low", torch.zeros(d))
        self.register_buffer("action_high", torch.zeros(d))
        self.generator: torch.Generator | None = None

    @property
    def obs_dim(self) -> int:
        return self.arch["obs_dim"]

    @property
    def action_dim(self) -> int:
        return self.arch["action_dim"]

    @property
    def squashes(self) -> bool:
        """Whether env actions are tanh(y) rescaled to the Box (SAC, TD3) rather than clip(y) (PPO, and
        deterministic anchors imported from a callable, whose ``arch["squash"]`` is false)."""
        return self.kind != "gaussian" and self.arch.get("squash", True)

    def normalize(self, obs: Tensor) -> Tensor:
        """raw obs [B, C] -> the observation the policy network sees [B, C] float32 (VecNormalize's formula)."""
        norm = self.arch["obs_norm"]
        if norm is None:
            return obs.float()
        # In float64 like VecNormalize, so that the result matches SB3 bit for bit.
        x = (obs.double() - self.obs_mean) / torch.sqrt(self.obs_var + norm["epsilon"])
        return x.clamp(-norm["clip"], norm["clip"]).float()

    def distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """raw env obs [B, C] -> (mean [B, D], log_std [B, D]) of the unsquashed action y."""
        latent = self.trunk(self.normalize(obs.reshape(obs.shape[0], -1)))
        mean = self.mean_head(latent)
        return mean, self._log_std(latent, mean)

    def _log_std(self, latent: Tensor, mean: Tensor) -> Tensor:
        """latent [B, L], mean [B, D] -> log_std [B, D]."""
        std = self.arch["std"]
        if std["type"] == "param":
            return self.log_std.expand_as(mean)
        if std["type"] == "layers":
            return self.log_std_head(latent).clamp(std["min"], std["max"])
        if std["type"] == "sde":
            return 0.5 * torch.log(sde_variance(latent, self.sde_log_std, std["use_expln"], std["epsilon"]) + std["epsilon"])
        return torch.full_like(mean, DETERMINISTIC_LOG_STD)

    def to_env_action(self, y: Tensor) -> Tensor:
        """unsquashed y [B, D] -> env action [B, D], as SB3's ``predict`` maps its policy's output."""
        if not self.squashes:
            return torch.clamp(y, self.action_low, self.action_high)  # min(max(y, low), high): one operation
        return self.action_low + 0.5 * (torch.tanh(y) + 1.0) * (self.action_high - self.action_low)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        return self.distribution(obs)

    def seed(self, seed: int) -> None:
        """Draw the samples of stochastic :meth:`predict` calls from a generator seeded with ``seed``."""
        self.generator = torch.Generator().manual_seed(int(seed))

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[np.ndarray, None]:
        """SB3's ``predict`` on *raw* env observations (the actor normalises them itself).

        :param observation: one observation ``[C]`` or a batch ``[B, C]``.
        :param state: ignored (no recurrent state); returned as ``None``.
        :param episode_start: ignored.
        :param deterministic: the mean action; otherwise a sample of each state's Gaussian marginal
            (under gSDE too, as in the recorded dataset).
        :param generator: draws the sample; default the actor's own (:meth:`seed`), else torch's global one.
        :return: ``(action [D] or [B, D] float32, None)``, squashed or clipped to the Box as SB3 does.
        :raises ObservationError: the observation's last axis is not ``obs_dim``.
        """
        obs = np.asarray(observation)
        if obs.ndim not in (1, 2) or obs.shape[-1] != self.obs_dim:
            raise ObservationError(
                f"observation of shape {obs.shape}; this anchor takes [{self.obs_dim}] or [batch, {self.obs_dim}] raw env observations."
            )
        with torch.no_grad():
            mean, log_std = self.distribution(torch.as_tensor(obs.reshape(-1, self.obs_dim)))
            y = mean
            if not deterministic:
                noise = torch.randn(mean.shape, generator=generator if generator is not None else self.generator, dtype=mean.dtype)
                y = mean + noise * log_std.exp()
            action = self.to_env_action(y).numpy()
        return (action[0] if obs.ndim == 1 else action), None

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Tensors, numbers, strings, lists and dicts only: safe for ``torch.load(weights_only=True)``."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "arch": self.arch,
            "tensors": {k: v.detach().clone() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "AnchorActor":
        """Rebuild an actor from :meth:`state`.

        :raises FileFormatError: for a state of another format or version, or with missing tensors.
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise FileFormatError("not an hti-rl actor state (missing format tag); was it written by hti-rl?")
        if state.get("version") != STATE_VERSION:
            raise FileFormatError(
                f"actor state version {state.get('version')!r}, this hti-rl reads version {STATE_VERSION}; "
                "re-create it with this version (e.g. re-run `hti-rl fit --force`)."
            )
        actor = cls(state["arch"])
        try:
            actor.load_state_dict(state["tensors"])
        except (RuntimeError, KeyError) as exc:
            raise FileFormatError(f"actor tensors do not match its description: {exc}") from exc
        return actor.eval()
