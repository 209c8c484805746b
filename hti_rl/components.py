"""Reward components of envs that report none, as functions ``fn(obs, action, next_obs) -> float``.

Each returns one *unweighted* component as a reward (a cost is negative). A task spec names them as
``{function: "hti_rl.components:<name>"}``; :class:`hti_rl.envs.wrappers.RewardWeightWrapper` calls them with the
observation before the step, the action given to ``step`` and the observation after it.

Pendulum-v1 (obs ``[cos θ, sin θ, θ̇]``): its own reward is ``pendulum_angle + 0.1·pendulum_speed +
0.001·pendulum_torque``, taken at the state before the step with the torque clipped to [−2, 2].
"""

from __future__ import annotations

import numpy as np

PENDULUM_MAX_TORQUE = 2.0


def pendulum_angle(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float:
    """−θ², θ in [−π, π] (Pendulum-v1's ``angle_normalize``) before the step."""
    return -float(np.arctan2(obs[1], obs[0])) ** 2


def pendulum_speed(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float:
    """−θ̇² before the step."""
    return -float(obs[2]) ** 2


def pendulum_torque(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float:
    """−u², u clipped to Pendulum-v1's torque range [−2, 2]."""
    return -float(np.clip(np.asarray(action).reshape(-1)[0], -PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)) ** 2
