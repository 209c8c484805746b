"""Returns at reward weights, per-state distribution distances, and timing.

A fixed policy's return at any weight follows from one set of rollouts: sum each *unweighted*
reward component per episode, then weigh the sums (:func:`returns_at`). So a curve of return
against weight, or a K×K cross-evaluation of anchors, costs one rollout set per policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import ot
from scipy import stats

from hti_rl.errors import HTIError
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage


class Predictor(Protocol):
    """Anything with SB3's ``predict``: SB3 models, SurrogatePolicy, the baselines."""

    def predict(self, observation: np.ndarray, state=None, episode_start=None, deterministic: bool = False) -> tuple[np.ndarray, Any]: ...


@dataclass(frozen=True)
class ComponentReturns:
    """Per-episode sums of each unweighted reward component.

    :param names: component names, in column order.
    :param sums: ``[E, n_components]`` one row per episode.
    :param lengths: ``[E]`` episode lengths.
    """

    names: tuple[str, ...]
    sums: np.ndarray
    lengths: np.ndarray


@stage
@stage
def rollout_components(
    policy: Predictor,
    make_env: Callable[[], Any],
    episodes: int,
    seed: int,
    deterministic: bool = True,
    batched: bool = True,
) -> ComponentReturns:
    """Run ``episodes`` episodes and sum each reward component per episode.

    Batched (the default) runs the episodes side by side, one ``predict`` on a batch ``[B, C]`` per step:
    fast, but a network's float32 result for a row depends slightly on the batch it is computed in (about
    1e-7 per action), which chaotic dynamics (MuJoCo locomotion) amplify into different returns. Unbatched
    runs one episode after another, one observation ``[C]`` per ``predict``, as SB3's ``evaluate_policy``
    on one env does, and gives SB3's numbers for the same reset seeds.

    :param policy: takes raw env observations ``[B, C]`` (or ``[C]`` unbatched).
    :param make_env: builds one env wrapped in :class:`RewardWeightWrapper` (its weight does not matter).
    :param episodes: number of episodes; episode i is reset with seed ``seed + i``.
    :param seed: base seed.
    :param deterministic: deterministic actions (SB3 ``evaluate_policy``'s default).
    :param batched: episodes side by side (fast) rather than one at a time (SB3's arithmetic).
    """
    if not batched:
        return _rollout_one_at_a_time(policy, make_env, episodes, seed, deterministic)
    envs = [make_env() for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    alive = np.ones(episodes, dtype=bool)
    sums: list[dict[str, float]] = [{} for _ in range(episodes)]
    lengths = np.zeros(episodes, dtype=np.int64)
    while alive.any():
        idx = np.flatnonzero(alive)
        actions, _ = policy.predict(obs[idx], deterministic=deterministic)
        for j, i in enumerate(idx):
            next_obs, _, terminated, truncated, info = envs[i].step(actions[j])
            for name, value in info["hti_rl/components"].items():
                sums[i][name] = sums[i].get(name, 0.0) + float(value)
            lengths[i] += 1
            obs[i] = next_obs
            if terminated or truncated:
                alive[i] = False
    for env in envs:
        env.close()
    names = tuple(sorted(sums[0]))
    return ComponentReturns(names, np.array([[s[n] for n in names] for s in sums]), lengths)


def _rollout_one_at_a_time(policy: Predictor, make_env: Callable[[], Any], episodes: int, seed: int, deterministic: bool) -> ComponentReturns:
    """:func:`rollout_components` unbatched: episode i alone, from ``reset(seed=seed + i)``, one observation per ``predict``."""
    sums: list[dict[str, float]] = []
    lengths = np.zeros(episodes, dtype=np.int64)
    env = make_env()
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        sums.append({})
        done = False
        while not done:
            action, _ = policy.predict(obs, deterministic=deterministic)
            obs, _, terminated, truncated, info = env.step(action)
            for name, value in info["hti_rl/components"].items():
                sums[i][name] = sums[i].get(name, 0.0) + float(value)
            lengths[i] += 1
            done = terminated or truncated
    env.close()
    names = tuple(sorted(sums[0]))
    return ComponentReturns(names, np.array([[s[n] for n in names] for s in sums]), lengths)


def returns_at(components: ComponentReturns, weighted: str | Sequence[str], fixed: dict[str, float], weight: Any) -> np.ndarray:
    """Episode returns ``[E]`` at reward weight ``weight``: Σ fixed·sums + weight·sums[weighted] (a weight vector
    weighs each of several ``weighted`` components by its own entry)."""
    if isinstance(weighted, str):
        coef = np.array([weight if n == weighted else fixed.get(n, 1.0) for n in components.names])
    else:
        by_name = dict(zip(weighted, weight))
        coef = np.array([by_name[n] if n in by_name else fixed.get(n, 1.0) for n in components.names])
    return components.sums @ coef


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its Student-t confidence interval (0 for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def format_mean_ci(mean: float, ci: float) -> str:
    """``"mean ± ci"`` for people: the CI to two significant digits (more where it is ≥ 100), the mean to
    the same decimal place, never in exponent notation: (4257.3, 1003.2) -> ``"4257 ± 1003"``,
    (−4.6312, 0.5213) -> ``"-4.63 ± 0.52"``; a zero or non-finite CI gives the mean to 4 significant digits."""
    def decimals(x: float, significant: int) -> int:
        return int(min(max(significant - 1 - np.floor(np.log10(abs(x))), 0), 8)) if np.isfinite(x) and x != 0 else 0

    if not np.isfinite(ci) or ci <= 0:
        return f"{mean:.{decimals(mean, 4)}f} ± {ci:g}"
    places = decimals(ci, 2)
    return f"{mean:.{places}f} ± {ci:.{places}f}"


def per_state_w2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact W2 between two empirical distributions at each state (POT ``emd2``).

    :param a: ``[N, M, D]`` M samples of method A at each of N states.
    :param b: ``[N, M', D]`` samples of method B at the same states.
    :return: ``[N]`` W2 distances.
    """
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise HTIError(f"per_state_w2 needs samples at the same states and dimension, got {a.shape} and {b.shape}")
    out = np.empty(a.shape[0])
    for n in range(a.shape[0]):
        cost = ot.dist(a[n].astype(np.float64), b[n].astype(np.float64))  # squared Euclidean
        out[n] = np.sqrt(max(ot.emd2([], [], cost), 0.0))
    return out


def time_call(fn: Callable[[], Any], repeat: int = 200, warmup: int = 10) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def evaluate_at(policy: Predictor, spec: TaskSpec, weight: float, episodes: int, seed: int, deterministic: bool = True,
                batched: bool = True) -> tuple[float, float]:
    """Mean return of ``policy`` in the task's env at reward ``weight`` and its 95% CI half-width
    (``batched``: see :func:`rollout_components`)."""
    components = rollout_components(policy, lambda: spec.make_env(weight), episodes, seed, deterministic, batched)
    return mean_ci(returns_at(components, spec.reward.weighted, spec.reward.fixed, weight))


def render_modes(env_id: str) -> list[str] | None:
    """The render modes a registered env declares (its class's ``metadata``), without building it; ``None`` when unknown."""
    import gymnasium as gym
    from gymnasium.envs.registration import load_env_creator

    try:
        entry = gym.spec(env_id).entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
    except Exception:  # unregistered, or its module does not import: gym.make will say so
        return None
    modes = getattr(creator, "metadata", {}).get("render_modes")
    return None if modes is None else list(modes)


def renderable_specs(folder: Path, human: bool) -> list[str]:
    """``envs/<name>.yaml`` of the spec files in ``folder`` whose env renders on screen (``human``) or into
    frames; each spec's ``env_id`` is read as plain YAML, nothing else of it."""
    import yaml

    names = []
    for path in sorted(Path(folder).glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        env_id = raw.get("env_id") if isinstance(raw, dict) else None
        if isinstance(env_id, str) and ("human" if human else "rgb_array") in (render_modes(env_id) or []):
            names.append(f"{Path(folder).name}/{path.name}")
    return names


def check_render(spec: TaskSpec, human: bool, renderable: Sequence[str] = ()) -> None:
    """Refuse, before any rollout, to render a task whose env cannot render in the mode asked for.

    :param spec: the task.
    :param human: on screen (``render_mode='human'``) rather than into frames (``'rgb_array'``).
    :param renderable: names of tasks that can render, for the message.
    :raises HTIError: the env declares render modes and the one needed is not among them.
    """
    mode = "human" if human else "rgb_array"
    modes = render_modes(spec.env_id)
    if modes is not None and mode not in modes:
        flag = "--render" if human else "--video"
        can = f" Tasks that can: {', '.join(renderable)}." if renderable else ""
        raise HTIError(f"task {spec.name!r} ({spec.env_id}) cannot render: its env declares render modes {modes}, and "
                       f"{flag} needs {mode!r}. Drop {flag}, or deploy on a task whose env renders (classic-control and "
                       f"MuJoCo envs do; the analytic LQR envs do not).{can}")


def record_episode(policy: Predictor, spec: TaskSpec, weight: float, seed: int, video: str | None = None, human: bool = False) -> str | None:
    """Run one episode with rendering: on screen (``human``) and/or into a GIF at ``video``.

    :raises HTIError: the env cannot render (checked before the env is built, see :func:`check_render`).
    """
    import imageio.v2 as imageio

    from hti_rl.io import atomic_write

    check_render(spec, human)
    env = spec.make_env(weight, render_mode="human" if human else "rgb_array")
    obs, _ = env.reset(seed=seed)
    frames, done = [], False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        obs, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
        if video and not human:
            frames.append(env.render())
    env.close()
    if not video or human:
        return None
    if not frames or frames[0] is None:
        raise HTIError(f"{spec.env_id} returned no frames; it may not support render_mode='rgb_array'.")
    with atomic_write(video) as f:
        imageio.mimwrite(f, frames, format="GIF", duration=1 / 30)
    return video
