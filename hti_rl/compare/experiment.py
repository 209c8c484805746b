"""Experiment specs (``experiments/<name>.yaml``): what ``hti-rl compare`` runs, validated.

An experiment names a task spec, how many agents to retrain from scratch at every held-out weight, the
evaluation episodes and seeds, the methods (on anchors from scratch and on shared-start anchors), the
CLOT variants (the ablations) and the W2 settings. :func:`load_experiment` checks every field; each
:class:`~hti_rl.errors.SpecError` starts with the file and names the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from hti_rl.errors import SpecError
from hti_rl.seeds import MAX_SEED
from hti_rl.spec.fields import read_yaml

BASELINES = ("nearest", "linear", "regression", "cfm")


CONDITIONED = ("conditioned", "conditioned_x2")  # peers: one weight-conditioned agent, budget factor 1 and 2 (hti_rl.conditioned)


KNOWN_METHODS = ("surrogate", *BASELINES, *CONDITIONED, "optimum")


SHARED_METHODS = ("surrogate", "param_interp", *BASELINES)  # methods that can run on shared-start anchors


@dataclass(frozen=True)
class Experiment:
    """An experiment spec, validated (``experiments/<name>.yaml``).

    :param name: the experiment's name (its file's stem); results go to ``experiments/<name>/``.
    :param path: the YAML file.
    :param task: the task spec's path (resolved).
    :param retrained_seeds: agents retrained from scratch at each held-out weight (≥ 2).
    :param eval_episodes: episodes per evaluation seed (≥ 10).
    :param eval_seeds: evaluation seeds; each gives ``eval_episodes`` episodes with its own reset seeds.
    :param methods: of ``surrogate`` (every CLOT variant), ``nearest``, ``linear``, ``regression``,
        ``cfm``, ``conditioned``/``conditioned_x2`` (one weight-conditioned agent trained with 1×/2× the
        anchors' total steps, :mod:`hti_rl.conditioned`), ``optimum`` (LQR tasks only: the exact Riccati policy).
    :param shared_start: methods fitted on shared-start anchors as well (:mod:`hti_rl.shared_start`: the
        spec's ``shared_start`` settings, else the defaults), rows ``shared/<method>``: ``surrogate`` (the
        first variant), ``param_interp`` (parameter interpolation, "rewarded soups"), or any baseline.
        The base fine-tuned at each held-out weight is row ``shared/fine-tuned``.
    :param variants: CLOT variants, ``{name: {CLOTConfig field: value}}`` on top of the pipeline's defaults.
    :param w2_states: states of the dataset on which W2 is measured.
    :param w2_samples: action samples per state and method for W2.
    :param grid: weights on the return-vs-weight curves (plus the anchors and held-out weights).
    :param seed: seeds the baselines' fits, the W2 states and samples.
    :param notes: markdown added to the report (what the numbers mean, investigations).
    """

    name: str
    path: Path
    task: Path
    retrained_seeds: int = 2
    eval_episodes: int = 10
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("surrogate", *BASELINES)
    shared_start: tuple[str, ...] = ()
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"full": {}})
    w2_states: int = 300
    w2_samples: int = 32
    grid: int = 25
    seed: int = 0
    notes: str = ""

    def method_names(self) -> list[str]:
        """Every method evaluated on the anchors from scratch: ``clot/<variant>`` for each variant, then the others."""
        names = []
        for m in self.methods:
            names += [f"clot/{v}" for v in self.variants] if m == "surrogate" else [m]
        return names

    def shared_method_names(self) -> list[str]:
        """Every method fitted on the shared-start anchors (without the ``shared/`` prefix of its row)."""
        return [f"clot/{next(iter(self.variants))}" if m == "surrogate" else m for m in self.shared_start]


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment spec.

    :raises SpecError: a missing file, unknown or missing field, or a bad value; the message starts with
        the file and names the field.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such experiment spec.")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: must be a mapping of fields, got {type(raw).__name__}.")

    def bad(name: str, why: str) -> SpecError:
        return SpecError(f"{path}: field `{name}` {why}")

    allowed = {f for f in Experiment.__dataclass_fields__ if f not in ("name", "path")}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise bad(unknown[0], f"is not an experiment field; known: {', '.join(sorted(allowed))}.")
    if "task" not in raw:
        raise bad("task", "is missing: the task spec, e.g. `task: envs/lqr2d.yaml`.")
    candidates = [path.parent / str(raw["task"]), path.parent.parent / str(raw["task"])]
    task = next((c for c in candidates if c.is_file()), None)
    if task is None:
        raise bad("task", f"= {raw['task']!r}: no such file (looked in {path.parent} and {path.parent.parent}).")
    from hti_rl.spec.load import load_task

    if not load_task(task).held_out:
        raise bad("task", f"= {raw['task']!r} has no held-out weights (`held_out` in {task}), so there is nothing to compare; "
                          "add held_out weights inside the anchor range.")
    values: dict[str, Any] = {"task": task}
    for name, low in (("retrained_seeds", 2), ("eval_episodes", 10), ("w2_states", 10), ("w2_samples", 2), ("grid", 2), ("seed", 0)):
        if name in raw:
            v = raw[name]
            if not isinstance(v, int) or isinstance(v, bool) or v < low or v > (MAX_SEED if name == "seed" else 10**7):
                raise bad(name, f"= {str(v)[:40]}: must be an integer ≥ {low} and ≤ {MAX_SEED if name == 'seed' else 10**7}.")
            values[name] = v
    if "notes" in raw:
        if not isinstance(raw["notes"], str):
            raise bad("notes", "must be a string (markdown for the report).")
        values["notes"] = raw["notes"]
    if "eval_seeds" in raw:
        v = raw["eval_seeds"]
        if not isinstance(v, list) or not v or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in v) \
                or len(set(v)) != len(v):
            raise bad("eval_seeds", f"= {str(v)[:200]}: must be a non-empty list of distinct integers in [0, 2^31).")
        values["eval_seeds"] = tuple(v)
    if "methods" in raw:
        v = raw["methods"]
        if isinstance(v, list) and "param_interp" in v:
            raise bad("methods", "lists param_interp, which needs anchors fine-tuned from a shared start: list it under "
                                 "`shared_start: [surrogate, param_interp]` instead.")
        if not isinstance(v, list) or not v or any(m not in KNOWN_METHODS for m in v):
            raise bad("methods", f"= {v!r}: must be a non-empty list of {', '.join(KNOWN_METHODS)}.")
        values["methods"] = tuple(dict.fromkeys(v))
    if "shared_start" in raw:
        v = raw["shared_start"]
        if not isinstance(v, list) or any(m not in SHARED_METHODS for m in v):
            raise bad("shared_start", f"= {v!r}: must be a list of {', '.join(SHARED_METHODS)} (methods fitted on shared-start anchors).")
        values["shared_start"] = tuple(dict.fromkeys(v))
    if "variants" in raw:
        from hti_rl.methods.surrogate import clot_config

        v = raw["variants"]
        if not isinstance(v, dict) or not v or not all(isinstance(o, dict) for o in (x or {} for x in v.values())):
            raise bad("variants", f"= {v!r}: must map variant names to CLOT overrides, e.g. {{full: {{}}, euclidean: {{metric: euclidean}}}}.")
        variants = {}
        for name, overrides in v.items():
            try:
                clot_config(overrides or {})
            except SpecError as exc:
                raise bad(f"variants.{name}", f"is not a valid CLOT setting: {exc}") from None
            variants[str(name)] = dict(overrides or {})
        values["variants"] = variants
    return Experiment(name=path.stem, path=path, **values)
