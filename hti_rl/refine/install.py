"""Install a refined agent as a new anchor: its files in ``anchors/w=<λ>/``, its weight in ``refined.json``,
and the dataset grown by that anchor alone (no other anchor is rolled out again)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hti_rl.dataset import PolicyDataset, distribution_at, rollout_states, subsample_states
from hti_rl.errors import FileFormatError
from hti_rl.io import RunLock, atomic_write, sha256_file, write_json
from hti_rl.runs import RunDir, package_versions, read_meta, spec_hint, weight_label
from hti_rl.seeds import refine_seed
from hti_rl.spec.task import TaskSpec
from hti_rl.training.jobs import IMPORT_ONLY_FILES
from hti_rl.training.store import add_refined_anchor, load_anchor_actor


def install_anchor(spec: TaskSpec, weight: float, agent: Path, provenance: dict[str, Any], run_root: str | Path) -> TaskSpec:
    """Copy the finished agent in ``agent`` to ``anchors/w=<λ>/`` with a ``meta.json`` naming where it came
    from (``meta["refined"]``), and add λ to ``refined.json``.

    :return: the spec with the new anchor among its anchors (same fingerprint).
    """
    run = RunDir.of(spec, run_root)
    trained = read_meta(agent) or {}
    target = run.anchor(weight)
    with RunLock(run.anchors, "hti-rl refine (installing the refined anchor)"):
        target.mkdir(parents=True, exist_ok=True)
        (target / "meta.json").unlink(missing_ok=True)  # unfinished until the new meta is written
        for name in ("model.zip", "vecnormalize.pkl", *IMPORT_ONLY_FILES):
            (target / name).unlink(missing_ok=True)
        for name in ("model.zip", "vecnormalize.pkl"):
            if (agent / name).exists():
                with open(agent / name, "rb") as src, atomic_write(target / name) as dst:
                    shutil.copyfileobj(src, dst)
        meta = {"task": spec.name, "task_fingerprint": spec.fingerprint(), "weight": float(weight),
                "algo": trained.get("algo", spec.algo), "steps": trained.get("steps"), "seed": trained.get("seed"),
                "normalize": (target / "vecnormalize.pkl").exists(), "wall_time_s": trained.get("wall_time_s"),
                "versions": package_versions(),
                "refined": {**provenance, "agent": str(agent), "model_sha256": sha256_file(target / "model.zip")}}
        write_json(target / "meta.json", meta)
        return add_refined_anchor(spec, weight, run_root)


def grow_dataset(spec: TaskSpec, weight: float, run_root: str | Path, progress: bool = True) -> PolicyDataset:
    """Add the anchor at ``weight`` to ``runs/<task>/dataset.npz``: roll out that anchor alone, keep its share of
    states (the dataset's states per anchor), evaluate every anchor there and the new one at every state.

    :param spec: the spec with the new anchor among its anchors.
    :raises FileFormatError: no dataset, one of another spec, or one whose other anchors changed since.
    """
    run = RunDir.of(spec, run_root)
    fix = f"record it again with `hti-rl record {spec_hint(spec)} --force`"
    old = PolicyDataset.load(run.dataset)
    if weight in old.weights.tolist():
        if (old.header.get("anchor_sha256") or {}).get(weight_label(weight)) == run.anchor_digests([weight])[weight_label(weight)]:
            return old  # already grown by this very anchor
        old = _without(old, weight)  # an anchor replaced (refine --force): its rows go, the states stay
    if old.header.get("task_fingerprint") != spec.fingerprint():
        raise FileFormatError(f"{run.dataset} was recorded for another spec of task {spec.name!r}; {fix}.")
    recorded = old.header.get("anchor_sha256") or {}
    current = run.anchor_digests(old.weights.tolist())
    if any(recorded.get(label) != digest for label, digest in current.items()):
        raise FileFormatError(f"{run.dataset} was recorded from other anchors than those now in {run.anchors}; {fix}.")
    index = list(spec.anchors).index(weight)
    with RunLock(run.anchors, "hti-rl refine (growing the dataset)"):
        actors = [load_anchor_actor(spec, w, run_root) for w in spec.anchors]
        stream = np.random.SeedSequence(refine_seed(spec, weight, 4))
        with tqdm(total=spec.record.episodes, unit="episode", desc="record the new anchor", disable=not progress) as bar:
            visited = rollout_states(spec, weight, actors[index], spec.record.episodes, stream, bar)
        rng = np.random.default_rng(stream.spawn(1)[0])
        new_obs = subsample_states(visited, max(1, round(len(old.obs) / len(old.weights))), rng)
        generator = torch.Generator().manual_seed(int(stream.generate_state(1)[0]))
        m = old.samples.shape[2]
        parts = [distribution_at(actors[i], new_obs, m, generator) for i in range(len(spec.anchors)) if i != index]
        new_anchor = distribution_at(actors[index], np.concatenate([old.obs, new_obs]), m, generator)
        digests = run.anchor_digests(spec.anchors)
    arrays = {}
    for j, name in enumerate(("mean", "log_std", "samples")):
        rows = [np.concatenate([getattr(old, name)[i], part[j]]) for i, part in enumerate(parts)]
        rows.insert(index, new_anchor[j])
        arrays[name] = np.stack(rows)
    header = {**old.header, "anchor_sha256": digests, "actor_kinds": [a.kind for a in actors],
              "states_visited": int(old.header.get("states_visited", 0)) + len(visited),
              "grown": [*old.header.get("grown", []), {"weight": weight_label(weight), "states_added": int(len(new_obs))}]}
    header.pop("checksum", None)
    dataset = PolicyDataset(obs=np.concatenate([old.obs, new_obs]), weights=np.asarray(spec.anchors, dtype=np.float64), header=header, **arrays)
    dataset.save(run.dataset)
    return dataset


def _without(data: PolicyDataset, weight: float) -> PolicyDataset:
    """``data`` without the anchor at ``weight`` (its rows of mean, log_std and samples; every state kept)."""
    keep = [i for i, w in enumerate(data.weights.tolist()) if w != weight]
    header = {**data.header, "anchor_sha256": {k: v for k, v in (data.header.get("anchor_sha256") or {}).items() if k != weight_label(weight)}}
    return PolicyDataset(obs=data.obs, weights=data.weights[keep], mean=data.mean[keep], log_std=data.log_std[keep],
                         samples=data.samples[keep], header=header)
