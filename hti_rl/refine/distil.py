"""Distil a deployed policy's action at one weight into an SB3 actor of the anchors' architecture.

A refine that starts from the surrogate (or parameter interpolation) needs an SB3 agent to train: the
nearest anchor's model supplies the architecture, the critic, the exploration noise (``log_std``) and the
VecNormalize statistics; its actor is then fitted, by mean squared error, to the deployed policy's
deterministic action at the weight, on the recorded states plus states the deployed policy visits there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hti_rl.dataset import visit_states
from hti_rl.evaluate import Predictor
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage

STEPS, BATCH, LEARNING_RATE = 2000, 256, 1e-3
HELD_OUT_SHARE = 0.1  # states kept out of the fit, on which the distillation error is measured


def visited_states(policy: Predictor, spec: TaskSpec, weight: float, episodes: int, seed: int) -> np.ndarray:
    """States ``[T, C]`` that ``policy`` visits at ``weight`` (sampled actions), ``episodes`` episodes reset with ``seed + i``."""
    return visit_states(spec, weight, episodes, seed, lambda obs: policy.predict(obs, deterministic=False)[0])


@stage
def distil_actor(teacher: Predictor, model: Any, vecnormalize: Any, states: np.ndarray, seed: int) -> dict[str, float]:
    """Fit ``model``'s actor (in place) to ``teacher``'s deterministic action on ``states`` ``[N, C]``.

    :param teacher: the deployed policy, already at the weight.
    :param model: an SB3 model (PPO, A2C, SAC, TD3): its ``policy`` is trained through ``_predict``
        (deterministic); parameters the action does not depend on (critic, ``log_std``) are left as they are,
        and the optimiser's moments are cleared so that training starts afresh.
    :param vecnormalize: the model's VecNormalize (observations are normalised as in training), or ``None``.
    :return: ``{"before", "after"}``: the mean L2 distance of the model's deterministic env action to the
        teacher's on held-out states, before and after; ``"states"``, ``"steps"``.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(states))
    cut = max(1, int(len(states) * HELD_OUT_SHARE))
    test, train = states[order[:cut]], states[order[cut:]]
    target = np.asarray(teacher.predict(states, deterministic=True)[0], dtype=np.float32).reshape(len(states), -1)
    target_test, target_train = target[order[:cut]], target[order[cut:]]
    policy = model.policy
    x = torch.as_tensor(_normalise(vecnormalize, train))
    y = torch.as_tensor(_policy_space(policy, target_train))
    before = _distance(model, vecnormalize, test, target_test)
    generator = torch.Generator().manual_seed(int(seed))
    params = [p for p in policy.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=LEARNING_RATE)
    policy.set_training_mode(False)
    for _ in range(STEPS):
        batch = torch.randint(len(x), (min(BATCH, len(x)),), generator=generator)
        loss = torch.nn.functional.mse_loss(policy._predict(x[batch], deterministic=True).reshape(len(batch), -1), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    if getattr(policy, "optimizer", None) is not None:
        policy.optimizer.state.clear()
    for name in ("actor", "critic"):  # SAC/TD3 keep an optimiser per network
        net = getattr(policy, name, None)
        if net is not None and getattr(net, "optimizer", None) is not None:
            net.optimizer.state.clear()
    return {"before": before, "after": _distance(model, vecnormalize, test, target_test), "states": int(len(states)), "steps": STEPS}


def _normalise(vecnormalize: Any, states: np.ndarray) -> np.ndarray:
    return np.asarray(states if vecnormalize is None else vecnormalize.normalize_obs(states), dtype=np.float32)


def _policy_space(policy: Any, actions: np.ndarray) -> np.ndarray:
    """Env actions -> what the policy's ``_predict`` outputs: [-1, 1] for squashing policies, else the action."""
    if getattr(policy, "squash_output", False):
        return np.clip(policy.scale_action(actions), -0.999, 0.999).astype(np.float32)
    return actions.astype(np.float32)


def _distance(model: Any, vecnormalize: Any, states: np.ndarray, target: np.ndarray) -> float:
    """Mean L2 distance between the model's deterministic env action and ``target`` on ``states``."""
    actions, _ = model.policy.predict(_normalise(vecnormalize, states), deterministic=True)
    return float(np.linalg.norm(np.asarray(actions).reshape(len(states), -1) - target, axis=-1).mean())
