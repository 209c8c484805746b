"""Drop-in Stable-Baselines3 policies at any reward weight in the anchor range.

:class:`AnchoredPolicy` holds the anchor actors and the current weight and does everything that is
the same for every method: weight validation, observation checks, SB3's ``predict`` contract, exact
anchor actions at anchor weights, and a safe file format. A method only says how an action moves
between anchors k and k+1 at local time s (:meth:`AnchoredPolicy._between`).

:class:`SurrogatePolicy` is hti-rl's method: at weight λ inside [λ_k, λ_{k+1}] it takes anchor k's
action at the observation (the mean when deterministic, a sample otherwise) and moves it along the
CLOT path towards anchor k+1, then maps it to the env's action space as the anchors' own SB3 policy
would. The baselines (hti_rl/methods/baselines.py) are other subclasses.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy

from hti_rl import __version__
from hti_rl.actors import AnchorActor
from hti_rl.dataset import PolicyDataset
from hti_rl.errors import FileFormatError, ObservationError, SpaceError, WeightError
from hti_rl.methods.policy_file import (  # noqa: F401  (FILE_VERSION, read_policy_file: re-exported)
    FILE_FORMAT,
    FILE_VERSION,
    box_from_json,
    box_to_json,
    read_policy_file,
    write_policy_file,
)
from hti_rl.spec.task import TaskSpec
from hti_rl.weights import WeightAxis


class AnchoredPolicy(BasePolicy):
    """Base of every policy built from anchor actors: SB3's interface plus a reward weight.

    :param observation_space: the task env's observation space (Box).
    :param action_space: the task env's action space (Box).
    :param actors: one :class:`AnchorActor` per anchor weight, in weight order.
    :param weights: anchor weights λ_0 < … < λ_K.
    :param weight_scale: ``"linear"`` or ``"log"``: the coordinate in which local time is measured.
    :param x_mean: mean of the recorded observations ``[C]``, to standardise learned models' input.
    :param x_std: their standard deviation ``[C]``.
    :param header: provenance (task name, fingerprint, versions, fit settings, seed).
    :param weight: initial weight; the first anchor's weight when ``None``.
    :param allow_extrapolation: accept weights outside the anchor range (extends the end intervals).
    """

    _registry: dict[str, type["AnchoredPolicy"]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        AnchoredPolicy._registry[cls.__name__] = cls

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        actors: Sequence[AnchorActor],
        weights: Sequence[float],
        weight_scale: str,
        x_mean: np.ndarray,
        x_std: np.ndarray,
        header: dict[str, Any] | None = None,
        weight: float | None = None,
        allow_extrapolation: bool = False,
    ):
        if not isinstance(action_space, spaces.Box):
            raise SpaceError(
                f"{type(self).__name__} needs a Box action space, got {action_space}. "
                "Only continuous (Box) actions can be interpolated between anchors."
            )
        super().__init__(observation_space, action_space)
        if len(actors) != len(weights) or len(weights) < 2:
            raise ValueError(f"need one actor per anchor weight and ≥ 2 anchors, got {len(actors)} actors, {len(weights)} weights")
        self.actors = torch.nn.ModuleList(actors)
        self.header = dict(header or {})
        self._set_anchors(weights, weight_scale)
        self.register_buffer("x_mean", torch.as_tensor(np.asarray(x_mean), dtype=torch.float32))
        self.register_buffer("x_std", torch.as_tensor(np.asarray(x_std), dtype=torch.float32))
        self.allow_extrapolation = allow_extrapolation
        self.generator = torch.Generator().manual_seed(int(self.header.get("seed", 0)))
        self._interval: tuple[int, float] = (0, 0.0)
        self.weight = self.weights[0]
        self.set_weight(self.weights[0] if weight is None else weight)
        self.eval()

    def _set_anchors(self, weights: Sequence[Any], weight_scale: Any) -> None:
        """The anchor weights, their scale and axis (a grid policy overrides this with a grid)."""
        self.weights = [float(w) for w in weights]
        self.weight_scale = weight_scale
        self.axis = WeightAxis(tuple(self.weights), weight_scale)  # type: ignore[arg-type]
        self.times = list(self.axis.times)

    # ------------------------------------------------------------------ weight
    def set_weight(self, weight: float) -> None:
        """Deploy the policy at reward weight ``weight``; takes effect at the next ``predict``.

        :raises WeightError: NaN/inf, non-positive on a log scale, or outside the anchor range
            (unless ``allow_extrapolation``).
        """
        self._interval = self.axis.local_time(weight, self.allow_extrapolation)
        self.weight = float(weight)
        self._at_weight()

    def _at_weight(self) -> None:
        """Precompute what depends on the weight only (called by :meth:`set_weight`); nothing by default."""

    # ----------------------------------------------------------------- predict
    def predict(
        self,
        observation: np.ndarray,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``: one observation ``[C]`` or a batch ``[B, C]`` -> action(s), state.

        The same contract as ``BasePolicy.predict`` (shapes, float32 actions clipped to the action Box,
        ``state`` passed through) without its per-call overheads: one float32 conversion, no
        training-mode switch of every submodule, inference mode.

        :raises ObservationError: wrong shape, non-numeric dtype, or NaN/inf in the observation.
        """
        obs, single = self._check_observation(observation)
        if self.training:
            self.set_training_mode(False)
        with torch.inference_mode():
            actions = self._predict(torch.from_numpy(obs), deterministic).numpy()
        actions = actions.reshape(-1, *self.action_space.shape)
        # np.clip's values, without its dispatch overhead (a tenth of a batch-256 predict)
        actions = np.maximum(actions, self.action_space.low)
        np.minimum(actions, self.action_space.high, out=actions)
        if not np.isfinite(actions).all():
            bad = obs[~np.isfinite(actions).reshape(len(obs), -1).all(-1)]
            raise ObservationError(
                f"the policy gave a non-finite action at weight {self.weight if isinstance(self.weight, tuple) else format(self.weight, 'g')} for the observation(s) {bad[:3].tolist()}; "
                f"values this far outside the recorded states ({self.observation_space}) overflow the anchor networks. "
                "Check the env (or its wrappers) that produced them."
            )
        return (actions[0] if single else actions), state

    def _check_observation(self, observation: Any) -> tuple[np.ndarray, bool]:
        """observation -> (float32 array [B, *obs shape], whether it was a single observation).

        :raises ObservationError: the checks of :meth:`predict`.
        """
        expected = self.observation_space.shape
        if isinstance(observation, tuple) and len(observation) == 2 and isinstance(observation[1], dict):
            raise ObservationError(
                "predict got a tuple (observation, info): pass the observation only, e.g. `obs, info = env.reset()` "
                "then `policy.predict(obs)` (a VecEnv's reset returns the observations alone)."
            )
        try:
            obs = np.asarray(observation)
        except Exception as exc:  # ragged lists and the like
            raise ObservationError(f"observation cannot be read as an array: {exc}") from None
        if obs.dtype.kind not in "fiub":
            raise ObservationError(f"observation must be numeric, got dtype {obs.dtype}; expected float arrays of shape {expected}.")
        single = obs.shape == expected
        if not single and obs.shape[1:] != expected:
            raise ObservationError(
                f"observation has shape {obs.shape}; this policy expects {expected} or a batch (B, *{expected}). "
                "Is the env the one the policy was fitted on?"
            )
        if obs.size == 0:
            raise ObservationError(f"observation batch {obs.shape} is empty; give at least one observation of shape {expected}.")
        # One pass: NaN fails the comparison, inf and values beyond float32 exceed the bound.
        if obs.dtype.kind == "f" and not np.abs(obs).max() <= np.finfo(np.float32).max:
            if not np.all(np.isfinite(obs)):
                raise ObservationError("observation contains NaN or inf; check the env (or its wrappers) that produced it.")
            raise ObservationError(
                f"observation holds {np.abs(obs).max():g}, beyond the float32 range the policy computes in; "
                "check the env (or its wrappers) that produced it."
            )
        return np.ascontiguousarray(obs.reshape(-1, *expected), dtype=np.float32), single

    def _predict(self, observation: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """obs [B, C] (raw env observations) -> env actions [B, D]."""
        obs = observation.float().reshape(observation.shape[0], -1)
        k, s = self._interval
        start, end = self.actors[k], self.actors[k + 1]
        if s == 0.0:
            return start.to_env_action(self.anchor_draw(start, obs, deterministic)[0])
        if s == 1.0:
            return end.to_env_action(self.anchor_draw(end, obs, deterministic)[0])
        x = (obs - self.x_mean) / self.x_std
        y = self._between(obs, x, k, s, deterministic)
        # Anchors k and k+1 may squash differently (imported SAC next to PPO): the start decides.
        return start.to_env_action(y)

    def _between(self, obs: torch.Tensor, x: torch.Tensor, k: int, s: float, deterministic: bool) -> torch.Tensor:
        """The method: unsquashed action [B, D] at local time s of interval k.

        :param obs: raw observations [B, C] (for the anchor actors).
        :param x: standardised observations [B, C] (for learned models).
        """
        raise NotImplementedError

    def anchor_draw(
        self, actor: AnchorActor, obs: torch.Tensor, deterministic: bool, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """obs [B, C] -> (unsquashed action [B, D], the standard-normal noise used or None).

        Reusing the noise for anchor k+1 pairs the two diagonal Gaussians by their monotone
        (W2-optimal) coupling.
        """
        mean, log_std = actor.distribution(obs)
        if deterministic or actor.kind == "deterministic":
            return mean, None
        if noise is None:
            noise = torch.randn(mean.shape, generator=self.generator)
        return mean + log_std.exp() * noise, noise

    def forward(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self._predict(obs, deterministic)

    # --------------------------------------------------------------- save/load
    def method_state(self) -> dict[str, Any]:
        """The method's own tensors/numbers/strings (weights_only-safe); empty for parameter-free methods."""
        return {}

    @classmethod
    def from_method_state(cls, state: dict[str, Any], **base: Any) -> "AnchoredPolicy":
        """Rebuild from :meth:`method_state` and the base constructor's keyword arguments."""
        return cls(**base)

    def save(self, path: str | Path) -> None:
        """Write the policy to ``path`` (a zip holding ``header.json`` and a tensors-only payload), atomically."""
        payload = {
            "actors": [a.state() for a in self.actors],
            "method": self.method_state(),
            "x_mean": self.x_mean.clone(),
            "x_std": self.x_std.clone(),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        blob = buf.getvalue()
        header = {
            **self.header,
            "format": FILE_FORMAT,
            "format_version": FILE_VERSION,
            "hti_rl_version": __version__,
            "policy_class": type(self).__name__,
            "weights": self.weights,
            "weight_scale": self.weight_scale,
            "observation_space": box_to_json(self.observation_space),
            "action_space": box_to_json(self.action_space),
        }
        header.pop("payload_sha256", None)
        write_policy_file(path, header, blob)

    @classmethod
    def load(cls, path: str | Path, expect_fingerprint: str | None = None, **kwargs: Any) -> "AnchoredPolicy":
        """Read a policy written by :meth:`save`. Runs no code from the file (tensors and JSON only).

        :param path: the policy file (``surrogate.zip``).
        :param expect_fingerprint: the task's fingerprint; a policy of another task is refused.
        :param kwargs: ``weight``, ``allow_extrapolation``.
        :raises FileFormatError: missing, truncated, edited, another task's, or another version's file.
        """
        header, blob = read_policy_file(path)
        if expect_fingerprint is not None and header.get("task_fingerprint") != expect_fingerprint:
            raise FileFormatError(
                f"{path} was fitted for task {header.get('task')!r} with another spec "
                f"(fingerprint {header.get('task_fingerprint')}, expected {expect_fingerprint}). "
                "Fit a surrogate for this task with `hti-rl fit <spec>`."
            )
        policy_cls = AnchoredPolicy._registry.get(str(header.get("policy_class", "")))
        if policy_cls is None or not issubclass(policy_cls, cls):
            raise FileFormatError(
                f"{path} holds a {header.get('policy_class')!r} policy, not a {cls.__name__}. "
                "Load it with AnchoredPolicy.load, or import the module that defines it first."
            )
        try:
            payload = torch.load(io.BytesIO(blob), weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError for code or objects, RuntimeError for a bad archive
            raise FileFormatError(
                f"{path}: the payload is not the tensors-only data hti-rl writes, and was refused without running "
                f"it ({_load_failure(exc)}). Do not load files from untrusted sources; "
                "re-create it with `hti-rl fit <spec> --force`."
            ) from None
        try:
            if not isinstance(payload, dict):
                raise TypeError(f"the payload is a {type(payload).__name__}, not a dict")
            base = dict(
                observation_space=box_from_json(header["observation_space"]),
                action_space=box_from_json(header["action_space"]),
                actors=[AnchorActor.from_state(a) for a in payload["actors"]],
                weights=header["weights"],
                weight_scale=header["weight_scale"],
                x_mean=payload["x_mean"].numpy(),
                x_std=payload["x_std"].numpy(),
                header=header,
                **kwargs,
            )
            policy = policy_cls.from_method_state(payload["method"], **base)
        except (WeightError, SpaceError, FileFormatError):
            raise
        except (KeyError, IndexError, AttributeError, RuntimeError, TypeError, ValueError) as exc:
            raise FileFormatError(f"{path} is not a usable policy file ({type(exc).__name__}: {exc}). Re-run `hti-rl fit`.") from exc
        bad = [name for name, t in policy.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:  # found here, not as a "non-finite action" blamed on the observations at the first predict
            raise FileFormatError(f"{path}: the policy's tensors {', '.join(bad[:3])} hold NaN or inf (a damaged or crafted file). "
                                  "Re-create it with `hti-rl fit <spec> --force`.")
        return policy


def _load_failure(exc: BaseException) -> str:
    """What torch.load refused, in one line. Its own message runs to a page and suggests
    ``weights_only=False``, which would run the file's code: keep only the reason."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        return text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].split(". ")[0]
    if text.startswith("Weights only load failed"):
        return "not a tensors-only file"
    lines = text.strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else f"{type(exc).__name__}, empty or cut short"


def standardiser(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """obs [N, C] -> (mean [C], std [C]); constant coordinates get std 1 so they stay finite."""
    mean = obs.mean(axis=0)
    std = obs.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def base_arguments(spec: TaskSpec, dataset: PolicyDataset, actors: Sequence[AnchorActor], seed: int, method: str) -> dict[str, Any]:
    """The :class:`AnchoredPolicy` constructor arguments every method shares for ``spec`` and ``dataset``."""
    from hti_rl.runs import package_versions

    env = spec.make_env(spec.anchors[0])
    x_mean, x_std = standardiser(dataset.obs)
    base = dict(
        observation_space=env.observation_space,
        action_space=env.action_space,
        actors=list(actors),
        weights=spec.anchors,
        weight_scale=spec.weight_scale,
        x_mean=x_mean,
        x_std=x_std,
        header={
            "task": spec.name,
            "task_fingerprint": spec.fingerprint(),
            "seed": int(seed),
            "method": method,
            "dataset_sha256": dataset.header.get("checksum"),
            "anchor_sha256": dataset.header.get("anchor_sha256"),
            "versions": package_versions(),
            "shared_start": dataclasses.asdict(spec.shared_start) if spec.shared_start else None,
        },
    )
    env.close()
    return base
