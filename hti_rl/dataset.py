"""PolicyDataset: the states every anchor visits and each anchor's action distribution there.

:func:`record` rolls out every anchor policy at its own weight (stochastic actions), pools the visited
raw env observations, subsamples them to ``spec.record.max_states``, and at each kept state stores
each anchor's Gaussian over the unsquashed action y (mean, log-std) and M samples from it. Everything
random is drawn from generators built from one seed, so the same seed gives the same file.

File ``runs/<task>/dataset.npz`` (``np.savez``, no pickles), arrays:

- ``obs [N, C] float32``: raw env observations; each anchor actor applies its own VecNormalize
  statistics internally (anchors trained separately have different ones).
- ``weights [K] float64``: anchor weights, increasing.
- ``mean [K, N, D] float32``, ``log_std [K, N, D] float32``: unsquashed action distribution.
  Deterministic anchors (TD3/DDPG) store ``log_std = DETERMINISTIC_LOG_STD`` (-20, finite) and
  samples equal to the mean; ``header["actor_kinds"]`` says which anchors are deterministic.
- ``samples [K, N, M, D] float32``.
- ``header``: 0-d string array holding JSON: format and version, task name and fingerprint, package
  versions, action bounds, actor kinds, seeds and recording settings, and the SHA-256 of the arrays.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from tqdm.auto import tqdm

from hti_rl import __version__
from hti_rl.actors import AnchorActor
from hti_rl.errors import AnchorError, FileFormatError, ObservationError, SpaceError
from hti_rl.io import RunLock, atomic_write, sha256_bytes
from hti_rl.runs import DEFAULT_ROOT, RunDir, package_versions, spec_hint, weight_label
from hti_rl.seeds import check_seed, dataset_streams
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage
from hti_rl.training.store import load_anchor_actor

FORMAT = "hti-rl-dataset"
FORMAT_VERSION = 1


# name -> (dtype, ndim), in checksum order
ARRAYS: dict[str, tuple[np.dtype, int]] = {
    "obs": (np.dtype(np.float32), 2),
    "weights": (np.dtype(np.float64), 1),
    "mean": (np.dtype(np.float32), 3),
    "log_std": (np.dtype(np.float32), 3),
    "samples": (np.dtype(np.float32), 4),
}


_BATCH = 1024  # states per actor evaluation


MAX_VALUE = 1e12
"""The largest magnitude a dataset may hold: squares and sums of float32 values near 3e38 overflow in the fit."""


VALUE_RANGE = {"log_std": (-50.0, 20.0)}  # a std of e^20 is already beyond any action bound


MAX_ARRAY_BYTES = 16 << 30
"""The largest array a dataset file may declare (its header is read before the array is allocated)."""


@dataclass(frozen=True)
class PolicyDataset:
    """Anchor action distributions at shared states.

    :param obs: ``[N, C]`` raw env observations.
    :param weights: ``[K]`` anchor weights.
    :param mean: ``[K, N, D]`` mean of each anchor's unsquashed action at each state.
    :param log_std: ``[K, N, D]`` its log standard deviation.
    :param samples: ``[K, N, M, D]`` samples of it.
    :param header: provenance (see the module docstring); ``checksum`` is filled in by :meth:`save`.
    """

    obs: np.ndarray
    weights: np.ndarray
    mean: np.ndarray
    log_std: np.ndarray
    samples: np.ndarray
    header: dict[str, Any]

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ARRAYS}

    def save(self, path: str | Path) -> None:
        """Write the dataset to ``path`` (.npz) atomically, with the arrays' checksum in the header (also set on ``self.header``)."""
        header = {**self.header, "checksum": checksum(self.arrays)}
        with atomic_write(path) as f:
            np.savez(f, header=np.array(json.dumps(header, sort_keys=True)), **self.arrays)
        self.header["checksum"] = header["checksum"]  # as a load would read it: fits made from this object name it

    @classmethod
    def load(cls, path: str | Path, spec: TaskSpec = None) -> "PolicyDataset":
        """Read and validate a dataset written by :meth:`save`. Never unpickles.

        :param path: the ``.npz`` file.
        :param spec: the task spec; when given, a dataset recorded for another task or spec is refused.
        :raises FileFormatError: missing, truncated or edited file, wrong keys, shapes or dtypes,
            non-finite values, a checksum mismatch, another format version, or another task.
        """
        path = Path(path)
        fix = f"re-run `hti-rl record {spec_hint(spec)} --force`"
        if not path.is_file():
            raise FileFormatError(f"{path} does not exist; record it with `hti-rl record {spec_hint(spec)}`.")
        _check_declared_sizes(path, fix)
        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise FileFormatError(f"{path} holds a single array, not an hti-rl dataset (.npz archive); {fix}.")
            with z:
                data = {name: z[name] for name in z.files}
        except FileFormatError:
            raise
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise FileFormatError(
                    f"{path} holds a pickled (object) array; hti-rl datasets hold numbers only and pickles are never "
                    f"loaded (they can run code). Do not load files from untrusted sources; {fix}."
                ) from None
            raise FileFormatError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); {fix}.") from exc
        except Exception as exc:  # a damaged zip or .npy header fails in many ways (SyntaxError, MemoryError, ...)
            raise FileFormatError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}); {fix}.") from exc
        header = _read_header(data, path, fix)
        _check_arrays(data, path, fix)
        if header.get("checksum") != checksum({name: data[name] for name in ARRAYS}):
            raise FileFormatError(f"{path}: the arrays do not match the checksum in the header (edited or corrupted file); {fix}.")
        for name in ARRAYS:
            if not np.all(np.isfinite(data[name])):
                raise FileFormatError(f"{path}: array '{name}' contains NaN or inf values; {fix}.")
            low, high = VALUE_RANGE.get(name, (-MAX_VALUE, MAX_VALUE))
            if data[name].size and (data[name].min() < low or data[name].max() > high):
                raise FileFormatError(f"{path}: array '{name}' holds values in [{data[name].min():.3g}, {data[name].max():.3g}], "
                                      f"outside [{low:g}, {high:g}], where the fit would overflow; {fix}.")
        if spec is not None and header.get("task_fingerprint") != spec.fingerprint():
            raise FileFormatError(
                f"{path} was recorded for task {header.get('task')!r} with another spec (fingerprint "
                f"{header.get('task_fingerprint')}, this spec has {spec.fingerprint()}); {fix}."
            )
        if spec is not None and (path.parent / "anchors").is_dir():  # in its run directory: are its anchors still those?
            stale = stale_anchors(header, spec, RunDir(path.parent))
            if stale:
                raise FileFormatError(f"{path} {stale}; {fix}.")
        return cls(**{name: data[name] for name in ARRAYS}, header=header)


def stale_anchors(header: dict[str, Any], spec: Any, run: RunDir) -> str | None:
    """Why a dataset with ``header`` no longer matches the anchors in ``run`` (None when it does)."""
    recorded = header.get("anchor_sha256")
    if not isinstance(recorded, dict):
        return "was recorded by an earlier hti-rl, without the hashes of the anchors it came from"
    current = run.anchor_digests(spec.anchors)
    changed = [label for label in current if recorded.get(label) != current[label]]
    if changed or set(recorded) != set(current):
        return (f"was recorded from other anchors than those now in {run.anchors} (changed since: "
                f"{', '.join('w=' + c for c in changed) or 'the set of weights'})")
    return None


def stale_reason(spec: Any, run_root: str | Path = "runs") -> str | None:
    """Why the task's ``dataset.npz`` must be recorded again (missing, unreadable, or its anchors
    changed since), or ``None`` when it is up to date."""
    try:
        PolicyDataset.load(RunDir.of(spec, run_root).dataset, spec)
    except FileFormatError as exc:
        return str(exc)
    return None


def recorded_checksum(path: str | Path) -> str | None:
    """The ``checksum`` in a dataset file's header (read without loading the arrays), or ``None``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"])) if "header" in z.files else {}
        return header.get("checksum") if isinstance(header, dict) else None
    except Exception:  # missing or damaged: not the file that was fitted on
        return None


def _check_declared_sizes(path: Path, fix: str) -> None:
    """Read each array's .npy header (shape, dtype) and refuse one over :data:`MAX_ARRAY_BYTES` before
    numpy allocates it (a 200-byte header can declare terabytes)."""
    import math
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read_header(f)
                size = math.prod(shape) * dtype.itemsize
                if size > MAX_ARRAY_BYTES:
                    raise FileFormatError(f"{path}: array {info.filename} declares shape {shape} of {dtype} ({size / 2**30:.3g} GiB), "
                                          f"over the limit of {MAX_ARRAY_BYTES >> 30} GiB; {fix}.")
    except FileFormatError:
        raise
    except Exception:  # not a zip of .npy files: np.load below says what it is
        return


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over each array's name, dtype, shape and bytes, in :data:`ARRAYS` order."""
    chunks = []
    for name in ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        chunks += [name.encode(), a.dtype.str.encode(), repr(a.shape).encode(), a.tobytes()]
    return sha256_bytes(*chunks)




def _read_header(data: dict[str, np.ndarray], path: Path, fix: str) -> dict[str, Any]:
    if "header" not in data or data["header"].shape != () or data["header"].dtype.kind != "U":
        raise FileFormatError(f"{path} has no JSON header; it is not an hti-rl dataset. {fix[0].upper() + fix[1:]}.")
    try:
        header = json.loads(str(data["header"]))
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{path}: the header is not valid JSON ({exc}); {fix}.") from exc
    if not isinstance(header, dict):
        raise FileFormatError(f"{path}: the header holds a {type(header).__name__}, not a dataset header; {fix}.")
    if header.get("format") != FORMAT:
        raise FileFormatError(f"{path} is not an hti-rl dataset (format {header.get('format')!r}); {fix}.")
    if header.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(
            f"{path} has dataset format version {header.get('format_version')!r}; this hti-rl ({__version__}) "
            f"reads version {FORMAT_VERSION}; {fix}."
        )
    return header


def _check_arrays(data: dict[str, np.ndarray], path: Path, fix: str) -> None:
    """Keys, dtypes, ranks, and consistent K, N, D, M across arrays."""
    missing = sorted(set(ARRAYS) - set(data))
    extra = sorted(set(data) - set(ARRAYS) - {"header"})
    if missing or extra:
        raise FileFormatError(f"{path}: missing arrays {missing}, unexpected arrays {extra}; {fix}.")
    for name, (dtype, ndim) in ARRAYS.items():
        a = data[name]
        if a.dtype != dtype or (a.ndim != ndim and not (name == "weights" and a.ndim == 2)):  # [K] or vectors [K, n]
            raise FileFormatError(f"{path}: array '{name}' is {a.dtype} with {a.ndim} dims, expected {dtype} with {ndim}; {fix}.")
    n, _ = data["obs"].shape
    k = data["weights"].shape[0]
    d = data["mean"].shape[2]
    m = data["samples"].shape[2]
    expected = {"mean": (k, n, d), "log_std": (k, n, d), "samples": (k, n, m, d)}
    for name, shape in expected.items():
        if data[name].shape != shape:
            raise FileFormatError(
                f"{path}: array '{name}' has shape {data[name].shape}, expected {shape} "
                f"(K={k} weights, N={n} states, M={m} samples, D={d} action dims); {fix}."
            )
    if n == 0 or k < 2 or m == 0 or d == 0:
        raise FileFormatError(f"{path}: empty dataset (K={k}, N={n}, M={m}, D={d}); {fix}.")


@stage
def record(spec: TaskSpec, run_root: str | Path = DEFAULT_ROOT, seed: int | None = None, progress: bool = True) -> PolicyDataset:
    """Roll out every anchor, keep the states, evaluate every anchor there, and save the dataset.

    :param spec: the task spec (anchors must be trained: ``hti-rl train-anchors``).
    :param run_root: root of the run directories.
    :param seed: seed of the rollouts, the subsampling and the samples; ``spec.seed`` when ``None``.
    :param progress: show a progress bar.
    :return: the dataset, also written to ``runs/<task>/dataset.npz``.
    :raises SpaceError: the env's action space is not a Box.
    :raises AnchorError: an anchor is missing.
    :raises ObservationError: the env produced NaN or inf observations.
    """
    seed = spec.seed if seed is None else check_seed(seed, "the recording seed")
    _check_action_space(spec)
    streams = dataset_streams(seed, len(spec.anchors) + 2)
    with RunLock(RunDir.of(spec, run_root).anchors, "hti-rl record"):
        digests = RunDir.of(spec, run_root).anchor_digests(spec.anchors)  # under the lock: the anchors that are read
        actors = [load_anchor_actor(spec, w, run_root) for w in spec.anchors]
        with tqdm(total=len(actors) * spec.record.episodes, unit="episode", desc="record", disable=not progress) as bar:
            visited = [rollout_states(spec, w, actor, spec.record.episodes, stream, bar) for w, actor, stream in zip(spec.anchors, actors, streams)]
    obs = subsample_states(np.concatenate(visited), spec.record.max_states, np.random.default_rng(streams[-2]))
    generator = torch.Generator().manual_seed(int(streams[-1].generate_state(1)[0]))
    mean, log_std, samples = zip(*(distribution_at(actor, obs, spec.record.samples, generator) for actor in actors))
    dataset = PolicyDataset(
        obs=obs,
        weights=np.asarray(spec.anchors, dtype=np.float64),
        mean=np.stack(mean),
        log_std=np.stack(log_std),
        samples=np.stack(samples),
        header={**_header(spec, actors, seed, states_visited=sum(len(v) for v in visited)), "anchor_sha256": digests},
    )
    dataset.save(RunDir.of(spec, run_root).dataset)
    return dataset


def _check_action_space(spec: TaskSpec) -> None:
    env = spec.make_env(spec.anchors[0])
    try:
        if not isinstance(env.action_space, spaces.Box):
            raise SpaceError(
                f"task {spec.name!r} has action space {env.action_space}; hti-rl records continuous (Box) "
                "actions only. Use an env with a Box action space."
            )
    finally:
        env.close()


@torch.no_grad()
def rollout_states(spec: TaskSpec, weight: float, actor: AnchorActor, episodes: int, stream: np.random.SeedSequence, bar: tqdm) -> np.ndarray:
    """Run ``episodes`` episodes of ``actor`` (sampled actions) at ``weight`` -> visited obs [T, C] float32."""
    env_seed, torch_seed = (int(s) for s in stream.generate_state(2))
    generator = torch.Generator().manual_seed(torch_seed)

    def act(obs: np.ndarray) -> np.ndarray:
        mean, log_std = actor.distribution(torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(-1))[None])
        y = mean if actor.kind == "deterministic" else mean + log_std.exp() * torch.randn(mean.shape, generator=generator)
        return actor.to_env_action(y)[0].numpy()

    return visit_states(spec, weight, episodes, env_seed, act, bar)


def visit_states(spec: TaskSpec, weight: float, episodes: int, seed: int, act: Callable[[np.ndarray], np.ndarray],
                 bar: tqdm | None = None) -> np.ndarray:
    """Run ``episodes`` episodes at ``weight``, reset with ``seed + i``, acting with ``act`` (raw observation ->
    env action) -> the visited observations [T, C] float32; :class:`ObservationError` on a non-finite one."""
    env = spec.make_env(weight, seed=seed)
    visited: list[np.ndarray] = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            done = False
            while not done:
                _check_finite(obs, spec, weight, episode, len(visited))
                visited.append(np.asarray(obs, dtype=np.float32).reshape(-1))
                obs, _, terminated, truncated, _ = env.step(act(obs))
                done = terminated or truncated
            if bar is not None:
                bar.update(1)
    finally:
        env.close()
    return np.stack(visited)


def _check_finite(obs: np.ndarray, spec: TaskSpec, weight: float, episode: int, step: int) -> None:
    if not np.all(np.isfinite(obs)):
        raise ObservationError(
            f"task {spec.name!r}: the env returned a non-finite observation {obs!r} (anchor w={weight_label(weight)}, "
            f"episode {episode}, {step} states recorded). Fix the env (or its wrappers) so that it stays finite."
        )


def subsample_states(obs: np.ndarray, max_states: int, rng: np.random.Generator) -> np.ndarray:
    """obs [T, C] -> at most ``max_states`` rows, drawn without replacement, in visit order."""
    if len(obs) <= max_states:
        return obs
    return obs[np.sort(rng.choice(len(obs), size=max_states, replace=False))]


@torch.no_grad()
def distribution_at(
    actor: AnchorActor, obs: np.ndarray, m: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """obs [N, C] -> (mean [N, D], log_std [N, D], samples [N, M, D]) float32."""
    means, log_stds = zip(*(actor.distribution(torch.as_tensor(obs[i : i + _BATCH])) for i in range(0, len(obs), _BATCH)))
    mean, log_std = torch.cat(means), torch.cat(log_stds)
    if actor.kind == "deterministic":
        samples = mean[:, None].expand(-1, m, -1)
    else:
        samples = mean[:, None] + log_std.exp()[:, None] * torch.randn((*mean.shape[:1], m, mean.shape[1]), generator=generator)
    return mean.numpy().astype(np.float32), log_std.numpy().astype(np.float32), samples.numpy().astype(np.float32)


def _header(spec: TaskSpec, actors: list[AnchorActor], seed: int, states_visited: int) -> dict[str, Any]:
    low, high = actors[0].action_low, actors[0].action_high
    for w, actor in zip(spec.anchors, actors):
        if not (torch.equal(actor.action_low, low) and torch.equal(actor.action_high, high)):
            raise AnchorError(
                f"anchor w={weight_label(w)} has action bounds {actor.action_low.tolist()}..{actor.action_high.tolist()}, "
                f"anchor w={weight_label(spec.anchors[0])} has {low.tolist()}..{high.tolist()}; all anchors must act in one env."
            )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": spec.name,
        "task_fingerprint": spec.fingerprint(),
        "versions": package_versions(),
        "action_low": low.tolist(),
        "action_high": high.tolist(),
        "actor_kinds": [a.kind for a in actors],
        "seed": seed,
        "episodes": spec.record.episodes,
        "max_states": spec.record.max_states,
        "states_visited": states_visited,
    }
