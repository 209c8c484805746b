"""Evaluation one episode at a time gives SB3's own numbers for the same reset seeds; batched evaluation
(the default, faster) differs from them only by float rounding."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import save_lqr_anchor
from stable_baselines3 import PPO

from hti_rl.evaluate import rollout_components
from hti_rl.runs import RunDir
from hti_rl.spec.load import load_task
from hti_rl.training.store import load_anchor_actor

pytestmark = pytest.mark.usefixtures("one_thread")


def _sb3_loop(model, spec, weight: float, episodes: int, seed: int) -> np.ndarray:
    """A user's own evaluate_policy-style loop: one env, reset with seed + i, model.predict on each observation."""
    env = spec.make_env(weight)
    sums = np.zeros((episodes, len(spec.reward.components)))
    names = sorted(spec.reward.components)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            sums[i] += [info["hti_rl/components"][n] for n in names]
            done = terminated or truncated
    return sums


def test_one_at_a_time_matches_sb3_and_batched_differs_only_by_rounding(make_lqr_spec, tmp_path):
    spec = load_task(make_lqr_spec(env_id="hti_rl/LQR2D-v0", name="lqr2d"))
    runs = tmp_path / "runs"
    save_lqr_anchor(spec, 1.0, runs, exact=False)  # an SB3 PPO agent with a hidden layer
    model = PPO.load(RunDir.of(spec, runs).anchor(1.0) / "model.zip", device="cpu")
    actor = load_anchor_actor(spec, 1.0, runs)
    make_env = lambda: spec.make_env(1.0)  # noqa: E731
    expected = _sb3_loop(model, spec, 1.0, 6, 100)
    single = rollout_components(actor, make_env, 6, 100, batched=False)
    np.testing.assert_array_equal(single.sums, expected)  # SB3's numbers, to the last bit
    batched = rollout_components(actor, make_env, 6, 100)
    np.testing.assert_allclose(batched.sums, expected, rtol=1e-5)
