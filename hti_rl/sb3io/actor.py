"""actor_from_sb3: an SB3 policy (PPO/A2C, SAC, TD3/DDPG) and its VecNormalize statistics read into an
:class:`~hti_rl.actors.AnchorActor`: the layers copied, the action distribution's kind and parameters, the
observation normaliser and the squashing into the action Box."""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize
from torch import Tensor, nn

from hti_rl.actors import AnchorActor
from hti_rl.errors import AnchorError, SpaceError
from hti_rl.layers import copy_layers, describe_layers, flat_layers


def actor_from_sb3(model: BaseAlgorithm, vecnormalize: VecNormalize | None = None) -> AnchorActor:
    """Extract an :class:`AnchorActor` from a trained SB3 model.

    :param model: a PPO, A2C (MlpPolicy, with or without gSDE), SAC, TD3 or DDPG model.
    :param vecnormalize: the ``VecNormalize`` the model was trained with, or ``None``.
    :raises SpaceError: for a non-Box action space or a non-flat observation space.
    :raises AnchorError: for an unsupported algorithm or policy network.
    """
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.sac.policies import SACPolicy
    from stable_baselines3.td3.policies import TD3Policy

    policy = getattr(model, "policy", model)
    if not isinstance(policy, (ActorCriticPolicy, SACPolicy, TD3Policy)):
        raise AnchorError(
            f"cannot read a {type(policy).__name__} ({type(model).__name__}); hti-rl reads PPO, A2C, SAC, TD3 and DDPG "
            "models with MlpPolicy."
        )
    _check_spaces(policy)
    if isinstance(policy, ActorCriticPolicy):
        arch, parts = _from_actor_critic(policy)
    elif isinstance(policy, SACPolicy):
        arch, parts = _from_sac(policy)
    else:
        arch, parts = _from_td3(policy)
    arch.update(
        obs_dim=int(spaces.flatdim(policy.observation_space)),
        action_dim=int(policy.action_space.shape[0]),
        obs_norm=_obs_norm(vecnormalize),
        source={"algo": type(model).__name__, "policy": type(policy).__name__},
    )
    actor = AnchorActor(arch)
    for name, module in parts.items():
        if isinstance(module, nn.Parameter):
            getattr(actor, name).data.copy_(module.detach().cpu().float())
        else:
            copy_layers(module, getattr(actor, name))
    actor.action_low.copy_(torch.as_tensor(policy.action_space.low, dtype=torch.float32))
    actor.action_high.copy_(torch.as_tensor(policy.action_space.high, dtype=torch.float32))
    if arch["obs_norm"] is not None:
        actor.obs_mean.copy_(torch.as_tensor(vecnormalize.obs_rms.mean, dtype=torch.float64).reshape(-1))
        actor.obs_var.copy_(torch.as_tensor(vecnormalize.obs_rms.var, dtype=torch.float64).reshape(-1))
    return actor.eval()


def _check_spaces(policy: Any) -> None:
    from stable_baselines3.common.preprocessing import is_image_space

    act, obs = policy.action_space, policy.observation_space
    if not isinstance(act, spaces.Box) or len(act.shape) != 1:
        raise SpaceError(f"action space {act} is not supported: hti-rl needs a 1-D Box action space (continuous actions).")
    if not isinstance(obs, spaces.Box) or is_image_space(obs):
        raise SpaceError(f"observation space {obs} is not supported: hti-rl needs a Box of vector observations.")


def _check_flatten(extractor: nn.Module) -> None:
    from stable_baselines3.common.torch_layers import FlattenExtractor

    if not isinstance(extractor, FlattenExtractor):
        raise AnchorError(
            f"the policy uses a {type(extractor).__name__} features extractor; hti-rl reads MlpPolicy "
            "(FlattenExtractor) networks only."
        )


def _from_actor_critic(policy: Any) -> tuple[dict[str, Any], dict[str, nn.Module | Tensor]]:
    """PPO/A2C: latent = mlp_extractor.policy_net(obs); mean = action_net(latent); log_std a parameter or gSDE."""
    from stable_baselines3.common.distributions import (
        DiagGaussianDistribution,
        StateDependentNoiseDistribution,
    )

    _check_flatten(policy.pi_features_extractor)
    dist = policy.action_dist
    arch = {"trunk": describe_layers(policy.mlp_extractor.policy_net), "mean": describe_layers(policy.action_net)}
    parts: dict[str, nn.Module | Tensor] = {"trunk": policy.mlp_extractor.policy_net, "mean_head": policy.action_net}
    if isinstance(dist, StateDependentNoiseDistribution):
        arch["std"] = _sde_std(dist, policy.log_std)
        parts["sde_log_std"] = policy.log_std
        arch["kind"] = "squashed_gaussian" if dist.bijector is not None else "gaussian"
    elif isinstance(dist, DiagGaussianDistribution):
        arch["std"] = {"type": "param"}
        parts["log_std"] = policy.log_std
        arch["kind"] = "gaussian"
    else:
        raise AnchorError(f"unsupported action distribution {type(dist).__name__}; expected a Gaussian policy.")
    return arch, parts


def _from_sac(policy: Any) -> tuple[dict[str, Any], dict[str, nn.Module | Tensor]]:
    """SAC: latent = latent_pi(obs); mean = mu(latent); log_std = clamp(log_std(latent)) or gSDE; tanh-squashed."""
    from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN

    actor = policy.actor
    _check_flatten(actor.features_extractor)
    arch = {"kind": "squashed_gaussian", "trunk": describe_layers(actor.latent_pi), "mean": describe_layers(actor.mu)}
    parts: dict[str, nn.Module | Tensor] = {"trunk": actor.latent_pi, "mean_head": actor.mu}
    if actor.use_sde:
        arch["std"] = _sde_std(actor.action_dist, actor.log_std)
        parts["sde_log_std"] = actor.log_std
    else:
        arch["std"] = {"type": "layers", "layers": describe_layers(actor.log_std), "min": float(LOG_STD_MIN), "max": float(LOG_STD_MAX)}
        parts["log_std_head"] = actor.log_std
    return arch, parts


def _from_td3(policy: Any) -> tuple[dict[str, Any], dict[str, nn.Module | Tensor]]:
    """TD3/DDPG: mu = stack ending in tanh; mean = the stack without its final tanh."""
    actor = policy.actor
    _check_flatten(actor.features_extractor)
    layers = flat_layers(actor.mu)
    if not layers or not isinstance(layers[-1], nn.Tanh):
        raise AnchorError("the TD3/DDPG actor does not end in tanh; hti-rl reads the standard MlpPolicy actor only.")
    trunk = nn.Sequential(*layers[:-1])
    arch = {"kind": "deterministic", "trunk": describe_layers(trunk), "mean": [], "std": {"type": "none"}}
    return arch, {"trunk": trunk}


def _sde_std(dist: Any, log_std: Tensor) -> dict[str, Any]:
    return {
        "type": "sde",
        "latent_dim": int(log_std.shape[0]),
        "full_std": bool(dist.full_std),
        "use_expln": bool(dist.use_expln),
        "epsilon": float(dist.epsilon),
    }


def _obs_norm(vecnormalize: Any) -> dict[str, float] | None:
    if vecnormalize is None or not vecnormalize.norm_obs:
        return None
    if isinstance(vecnormalize.obs_rms, dict):
        raise SpaceError("VecNormalize over a Dict observation space is not supported; hti-rl needs Box observations.")
    return {"clip": float(vecnormalize.clip_obs), "epsilon": float(vecnormalize.epsilon)}
