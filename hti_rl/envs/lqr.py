"""The analytic task: a linear-quadratic regulator whose optimal policy is known at every weight.

Dynamics ``x' = A x + B u + w`` with ``w ~ N(0, noise_std² I)``; reward ``−(xᵀQx + λ·uᵀRu)``. The optimal
policy is ``u = −K(λ) x`` with ``K`` from the discrete algebraic Riccati equation (:func:`optimal_gain`).
The env itself returns the reward at λ = 1 and the two unweighted components in ``info``
(``reward_state``, ``reward_ctrl``); :class:`hti_rl.envs.wrappers.RewardWeightWrapper` applies λ.

Importing this module registers ``hti_rl/LQR1D-v0`` (``x' = x + u + w``) and ``hti_rl/LQR2D-v0``
(2-D state and action, A and B not multiples of the identity, so that the optimal action at a fixed
state traces a curve as λ moves).
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import scipy.linalg
from gymnasium.envs.registration import register, registry

Matrix = Sequence[Sequence[float]] | np.ndarray


def weighted_control_cost(R: Matrix, weight: float | Sequence[float]) -> np.ndarray:
    """The control cost at a weight: ``λ·R`` for a scalar λ, ``S R S`` with ``S = diag(√λ_1, …, √λ_D)`` for a
    vector of one weight per action (``diag(λ_i R_ii)`` when R is diagonal, as the per-action components weigh it).

    :param R: control cost [D, D].
    :param weight: λ > 0, or λ [D] > 0.
    :return: [D, D].
    """
    R = np.asarray(R, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim == 0:
        return float(w) * R
    if w.shape != (R.shape[0],):
        raise ValueError(f"a weight vector for this LQR task needs {R.shape[0]} entries (one per action), got {w.tolist()}.")
    root = np.sqrt(w)
    return root[:, None] * R * root[None, :]


def optimal_gain(A: Matrix, B: Matrix, Q: Matrix, R: Matrix, weight: float | Sequence[float], discount: float = 1.0) -> np.ndarray:
    """Optimal feedback gain of the LQ problem with control cost ``weight·uᵀRu`` (a vector weight: one per action,
    see :func:`weighted_control_cost`); the optimal action is ``u = −K x``.

    Solves the discrete algebraic Riccati equation with ``scipy.linalg.solve_discrete_are``; a discount γ
    is folded into the dynamics as ``√γ·A``, ``√γ·B``.

    :param A: state matrix [C, C].
    :param B: input matrix [C, D].
    :param Q: state cost [C, C], symmetric positive semi-definite.
    :param R: control cost [D, D], symmetric positive definite.
    :param weight: λ > 0, the multiplier of R, or λ [D]: R = diag(λ) on a diagonal R (R(λ) = S R S, S = diag(√λ)).
    :param discount: γ in (0, 1].
    :return: K [D, C].
    """
    root = np.sqrt(discount)
    A, B = root * np.asarray(A, dtype=np.float64), root * np.asarray(B, dtype=np.float64)
    Q, R = np.asarray(Q, dtype=np.float64), weighted_control_cost(R, weight)
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)


class LQREnv(gym.Env):
    """A noisy linear system with quadratic costs; the reward is at λ = 1, the components are in ``info``.

    Observation: the state ``x``, a ``Box(−state_bound, state_bound, (C,))``; the state is clipped to it
    after every step (a policy near the optimum never reaches the bound; the clip only keeps early random
    policies finite). Action: ``u``, a ``Box(−action_bound, action_bound, (D,))``; actions are clipped
    to it before they act and before their cost is taken. The episode is truncated after ``horizon`` steps.
    With D > 1 actions and a diagonal R, ``info`` also holds each action's own cost ``reward_ctrl_<i>``
    (``−control_weight·R_ii·u_i²``; they sum to ``reward_ctrl``), for tasks that weigh the actions apart.

    :param A: state matrix [C, C].
    :param B: input matrix [C, D].
    :param Q: state cost [C, C]; identity when ``None``.
    :param R: control cost [D, D]; identity when ``None``.
    :param noise_std: standard deviation of the process noise w.
    :param init_std: standard deviation of the initial state, ``x_0 ~ N(0, init_std² I)`` (clipped).
    :param horizon: episode length.
    :param state_bound: bound of the observation box.
    :param action_bound: bound of the action box.
    :param control_weight: λ inside the env: the reward and ``info["reward_ctrl"]`` are ``−control_weight·uᵀRu``
        (as Reacher-v5's ``reward_control_weight``), for agents trained at a weight outside hti-rl
        (rl-zoo3 ``--env-kwargs control_weight:0.1``); hti-rl's tasks keep it at 1 and weigh in the wrapper.
    :param render_mode: unused; accepted for ``gym.make``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        A: Matrix,
        B: Matrix,
        Q: Matrix | None = None,
        R: Matrix | None = None,
        noise_std: float = 0.1,
        init_std: float = 1.0,
        horizon: int = 50,
        state_bound: float = 10.0,
        action_bound: float = 5.0,
        control_weight: float = 1.0,
        render_mode: str | None = None,
    ):
        self.A = np.asarray(A, dtype=np.float64)
        self.B = np.asarray(B, dtype=np.float64)
        c, d = self.B.shape
        if self.A.shape != (c, c):
            raise ValueError(f"A has shape {self.A.shape} but B {self.B.shape} needs A of shape {(c, c)}.")
        self.Q = np.eye(c) if Q is None else np.asarray(Q, dtype=np.float64)
        self.R = np.eye(d) if R is None else np.asarray(R, dtype=np.float64)
        self.noise_std, self.init_std, self.horizon = float(noise_std), float(init_std), int(horizon)
        self.state_bound, self.action_bound = float(state_bound), float(action_bound)
        self.control_weight = float(control_weight)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-self.state_bound, self.state_bound, (c,), np.float32)
        self.action_space = gym.spaces.Box(-self.action_bound, self.action_bound, (d,), np.float32)
        self._x = np.zeros(c)
        self._t = 0
        self._per_action = d > 1 and np.array_equal(self.R, np.diag(np.diag(self.R)))

    def optimal_gain(self, weight: float | Sequence[float], discount: float = 1.0) -> np.ndarray:
        """K [D, C] of :func:`optimal_gain` for this env's matrices; the optimal action is ``u = −K x``."""
        return optimal_gain(self.A, self.B, self.Q, self.R, weight, discount)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        x = self.init_std * self.np_random.standard_normal(self._x.shape)
        self._x = np.clip(x, -self.state_bound, self.state_bound)
        self._t = 0
        return self._x.astype(np.float32), {}

    def step(self, action):
        x = self._x
        u = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_space.shape), -self.action_bound, self.action_bound)
        reward_state = -float(x @ self.Q @ x)
        reward_ctrl = -self.control_weight * float(u @ self.R @ u)
        noise = self.noise_std * self.np_random.standard_normal(x.shape)
        self._x = np.clip(self.A @ x + self.B @ u + noise, -self.state_bound, self.state_bound)
        self._t += 1
        info = {"reward_state": reward_state, "reward_ctrl": reward_ctrl}
        if self._per_action:
            info.update({f"reward_ctrl_{i}": -self.control_weight * float(self.R[i, i] * u[i] ** 2) for i in range(len(u))})
        return self._x.astype(np.float32), reward_state + reward_ctrl, False, self._t >= self.horizon, info


LQR_ENVS: dict[str, dict[str, Any]] = {
    "hti_rl/LQR1D-v0": {"A": [[1.0]], "B": [[1.0]]},
    # Coupled, slightly unstable dynamics and anisotropic inputs: from λ = 0.1 to 10 the optimal action
    # at x = (1, 1)/√2 turns by 18 degrees and bends away from the straight chord by 42% of its length.
    "hti_rl/LQR2D-v0": {"A": [[1.2, 0.3], [-0.2, 0.8]], "B": [[-0.6, -0.7], [0.1, -0.5]], "R": [[1.0, 0.0], [0.0, 0.1]]},
}
"""Registered ids and their ``LQREnv`` arguments (the rest take ``LQREnv``'s defaults)."""


for _env_id, _kwargs in LQR_ENVS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point="hti_rl.envs.lqr:LQREnv", kwargs=_kwargs)


class OptimalPolicy:
    """The exact optimum u = −K(λ) x of an :class:`LQREnv`, with SB3's ``predict`` (for comparisons).

    :param env: the LQR env (or a wrapper of it).
    :param weight: the control-cost weight λ, or one weight per action (a task weighing ``reward_ctrl_<i>``).
    :param discount: the discount the gain optimises (1: the undiscounted infinite-horizon optimum).
    """

    def __init__(self, env: gym.Env, weight: float | Sequence[float], discount: float = 1.0):
        lqr = env.unwrapped
        self.gain = lqr.optimal_gain(weight, discount)
        self.low, self.high = lqr.action_space.low, lqr.action_space.high

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        """obs [C] or [B, C] -> (action [D] or [B, D], state)."""
        action = np.asarray(observation, dtype=np.float64) @ -self.gain.T
        return np.clip(action, self.low, self.high).astype(np.float32), state
