"""Every seed hti-rl derives, in one place.

A run takes one seed, the task spec's ``seed``; every other seed is a reproducible function of it and
of a key that keeps the streams apart (anchors, seed selection, cross-evaluation, retrained agents,
evaluation, conditioned agents, the shared start, the calibration's two episode sets). The same spec seed gives the same seeds, and so
the same numbers, on every run.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from hti_rl.errors import HTIError


class TaskSpec(Protocol):
    """What a seed derives from: the task spec's ``seed`` (a :class:`hti_rl.spec.task.TaskSpec`)."""

    seed: int

# Keys of the streams; anchors use their index (small numbers), so these sit at the top of the range.
SELECTION = 2**32 - 1  # episodes that score the seeds of an anchor
CROSS_EVAL = 2**32 - 2  # cross-evaluation episodes
RETRAIN = 2**32 - 3  # agents retrained from scratch at held-out weights
EVAL = 2**32 - 4  # evaluation episodes of ``hti-rl compare``
CONDITIONED = 2**32 - 5  # weight-conditioned agents
BASE = 2**32 - 6  # the shared start and its fine-tunes
CALIBRATE = 2**32 - 7  # the calibration's choosing and estimating episodes
REFINE = 2**32 - 8  # refining runs, their distillation and the dataset's growth
WEIGHT_DRAWS = 0x57  # WeightInObservation's weight draws, apart from the env's own use of a reset seed


MAX_SEED = 2**32 - 1
"""The largest seed a run takes (NumPy's legacy seeding, which SB3 uses, stops there)."""


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int in [0, MAX_SEED], else :class:`~hti_rl.errors.HTIError` naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise HTIError(f"{what} must be an integer in [0, {MAX_SEED}], got {str(seed)[:40]}.")
    return int(seed)


def derive(*keys: int) -> int:
    """A seed in [0, 2**31) from integer keys, through ``np.random.SeedSequence``."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0] % 2**31)


def anchor_seed(spec: TaskSpec, index: int, seed_index: int = 0) -> int:
    """Training seed of anchor ``index`` (its seed ``seed_index``); seed 0 is the single-seed anchor's."""
    return derive(spec.seed, index, *([seed_index] if seed_index else []))


def selection_seed(spec: TaskSpec) -> int:
    """Base reset seed of the episodes that score the seeds of an anchor (episode i: seed + i)."""
    return derive(spec.seed, SELECTION)


def cross_eval_seed(spec: TaskSpec) -> int:
    """Base reset seed of the cross-evaluation episodes (episode i: seed + i), the same for every anchor."""
    return derive(spec.seed, CROSS_EVAL)


def retrain_seed(spec: TaskSpec, held_out_index: int, seed_index: int) -> int:
    """Training seed of retrained agent ``seed_index`` at held-out weight ``held_out_index``."""
    return derive(spec.seed, RETRAIN, held_out_index, seed_index)


def eval_seed(spec: TaskSpec, index: int) -> int:
    """Base reset seed of evaluation seed ``index`` of ``hti-rl compare`` (episode i: base + i)."""
    return derive(spec.seed, EVAL, index)


def conditioned_seed(spec: TaskSpec, factor: float) -> int:
    """Training seed of the weight-conditioned agent with budget factor ``factor``."""
    return derive(spec.seed, CONDITIONED, int(round(factor * 1000)))


def base_seed(spec: TaskSpec) -> int:
    """Training seed of the shared start (the base agent)."""
    return derive(spec.seed, BASE)


def finetune_seed(spec: TaskSpec, weight_bits: int) -> int:
    """Seed of the shared start's fine-tune at the weight whose float64 bits are ``weight_bits``."""
    return derive(spec.seed, BASE, weight_bits)


def refine_seed(spec: TaskSpec, weight: float, role: int) -> int:
    """Seed of a refining run at ``weight`` (``role``: 0 the refine, 1 the nearest anchor's fine-tune, 2 from
    scratch, 3 distillation, 4 the dataset's new states; a budget's thousandths added to roles 0-2)."""
    bits = int(np.float64(weight).view(np.uint64) % 2**32)
    return derive(spec.seed, REFINE, bits, role)


def calibration_seeds(seed: int, episodes: int) -> tuple[int, int]:
    """Base reset seeds ``(choose, estimate)`` of the calibration's two episode sets (``hti-rl calibrate``).

    Episode i of a set is reset with ``base + i``; the ranges ``[base, base + episodes)`` of the two sets
    never overlap (the estimating base is re-derived, deterministically, until they do not).

    :param seed: the calibration's seed (the spec's seed by default).
    :param episodes: episodes per set.
    """
    choose = derive(seed, CALIBRATE, 0)
    attempt = 1
    while True:
        estimate = derive(seed, CALIBRATE, attempt)
        if estimate + episodes <= choose or choose + episodes <= estimate:
            return choose, estimate
        attempt += 1


def dataset_streams(seed: int, n: int) -> list[np.random.SeedSequence]:
    """``n`` independent streams for recording a dataset with ``seed`` (one per anchor, and two more)."""
    return np.random.SeedSequence(seed).spawn(n)
