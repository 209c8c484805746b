"""The SB3 algorithms hti-rl trains and imports: the one table to extend for a new one.

Each entry names the SB3 class and how a saved model zip is recognised from its JSON ``data``
alone (the module of its policy class, and the settings that tell apart algorithms sharing one
policy family), so that importing never unpickles anything to find out. How a policy family's action
distribution is read lives in :mod:`hti_rl.sb3io.actor` (actor-critic, SAC, TD3); a new algorithm of
an existing family needs only an entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import stable_baselines3
from stable_baselines3.common.base_class import BaseAlgorithm


@dataclass(frozen=True)
class Algorithm:
    """One SB3 algorithm.

    :param name: its name in specs (``algo: ppo``) and in rl-zoo3 folder names.
    :param sb3_class: the SB3 class.
    :param policy_module: the module of its MlpPolicy class, as a model zip's ``data`` records it.
    :param recognise: ``data -> bool``: whether a zip of that policy module is this algorithm.
    """

    name: str
    sb3_class: type[BaseAlgorithm]
    policy_module: str
    recognise: Callable[[dict[str, Any]], bool] = lambda data: True


def _is_ddpg(data: dict[str, Any]) -> bool:
    return data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("ppo", stable_baselines3.PPO, "stable_baselines3.common.policies", lambda data: "n_epochs" in data),
    Algorithm("a2c", stable_baselines3.A2C, "stable_baselines3.common.policies", lambda data: "n_epochs" not in data),
    Algorithm("sac", stable_baselines3.SAC, "stable_baselines3.sac.policies"),
    Algorithm("td3", stable_baselines3.TD3, "stable_baselines3.td3.policies", lambda data: not _is_ddpg(data)),
    Algorithm("ddpg", stable_baselines3.DDPG, "stable_baselines3.td3.policies", _is_ddpg),
)}

ALGOS: dict[str, type[BaseAlgorithm]] = {name: a.sb3_class for name, a in ALGORITHMS.items()}
"""Algorithm name -> SB3 class."""

_NAMES = [a.sb3_class.__name__ for a in ALGORITHMS.values()]
SUPPORTED = ", ".join(_NAMES[:-1]) + " and " + _NAMES[-1]
"""For messages: ``PPO, A2C, SAC, TD3 and DDPG``."""


def recognise(data: dict[str, Any]) -> str | None:
    """The algorithm of a model zip from its JSON ``data`` (``policy_class.__module__`` and settings), or ``None``."""
    module = str((data.get("policy_class") or {}).get("__module__", ""))
    for algorithm in ALGORITHMS.values():
        if algorithm.policy_module == module and algorithm.recognise(data):
            return algorithm.name
    return None
