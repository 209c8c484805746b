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
from hti_rl.methods import registry
from hti_rl.seeds import MAX_SEED
from hti_rl.spec.fields import REQUIRED, Fields, read_yaml

KNOWN_METHODS = registry.names()  # on anchors from scratch
GRID_METHODS = registry.names(grid=True)  # on a task that weighs several components
SHARED_METHODS = registry.names(shared=True)  # on shared-start anchors
CONDITIONED = registry.names("peer")  # one weight-conditioned agent each, trained for it


@dataclass(frozen=True)
class Experiment:
    """An experiment spec, validated (``experiments/<name>.yaml``).

    :param name: the experiment's name (its file's stem); results go to ``experiments/<name>/``.
    :param path: the YAML file.
    :param task: the task spec's path (resolved).
    :param retrained_seeds: agents retrained from scratch at each held-out weight (≥ 2).
    :param eval_episodes: episodes per evaluation seed (≥ 10).
    :param eval_seeds: evaluation seeds; each gives ``eval_episodes`` episodes with its own reset seeds.
    :param methods: (on a grid task, those of ``GRID_METHODS``; the default drops the others) of ``surrogate`` (every CLOT variant), ``deployed`` (the first variant calibrated,
        :mod:`hti_rl.deploy.calibrate`: the best measured candidate at each weight), ``nearest``, ``linear``, ``regression``,
        ``cfm``, ``conditioned``/``conditioned_x2`` (one weight-conditioned agent trained with 1×/2× the
        anchors' total steps, :mod:`hti_rl.training.conditioned`), ``optimum`` (LQR tasks only: the exact Riccati policy).
    :param shared_start: methods fitted on shared-start anchors as well (:mod:`hti_rl.training.shared_start`: the
        spec's ``shared_start`` settings, else the defaults), rows ``shared/<method>``: ``surrogate`` (the
        first variant), ``param_interp`` (parameter interpolation, "rewarded soups"), or any baseline.
        The base fine-tuned at each held-out weight is row ``shared/fine-tuned``.
    :param refine: budget factors of the refining rows (:mod:`hti_rl.compare.refining`): ``refined@f`` for each f,
        ``nearest-finetune@F`` and ``scratch@F`` for the largest F; needs ``deployed`` among the methods. Empty: none.
    :param variants: CLOT variants, ``{name: {CLOTConfig field: value}}`` on top of the pipeline's defaults.
    :param w2_states: states of the dataset on which W2 is measured.
    :param w2_samples: action samples per state and method for W2.
    :param grid: weights on the return-vs-weight curves (plus the anchors and held-out weights).
    :param calibration: ``deployed``'s calibration settings, ``{per_interval, episodes}`` (``hti-rl calibrate``'s
        ``--per-interval`` and ``--episodes``; its defaults when unset). On a grid task the calibration's vectors
        are the product of the axes' grids, and they are also the points of the report's heat maps.
    :param seed: seeds the baselines' fits, the W2 states and samples.
    :param notes: markdown added to the report (what the numbers mean, investigations).
    """

    name: str
    path: Path
    task: Path
    retrained_seeds: int = 2
    eval_episodes: int = 10
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("surrogate", *registry.names("baseline"))
    shared_start: tuple[str, ...] = ()
    refine: tuple[float, ...] = ()
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"full": {}})
    w2_states: int = 300
    w2_samples: int = 32
    grid: int = 25
    calibration: dict[str, int] = field(default_factory=dict)
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
    top = Fields(path, read_yaml(path) or {})
    top.allow(tuple(f for f in Experiment.__dataclass_fields__ if f not in ("name", "path")))
    task = top.string("task")
    candidates = [path.parent / task, path.parent.parent / task]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise top.error("task", f"is {task!r}: no such file (looked in {path.parent} and {path.parent.parent}).")
    from hti_rl.spec.load import load_task

    task_spec = load_task(found)
    is_vector = task_spec.is_vector
    if not task_spec.held_out:
        raise top.error("task", f"is {task!r}, which has no held-out weights (`held_out` in {found}), so there is nothing to "
                                "compare; add held_out weights inside the anchor range.")
    defaults = {name: f.default for name, f in Experiment.__dataclass_fields__.items()}
    values: dict[str, Any] = {"task": found}
    for name, low in (("retrained_seeds", 2), ("eval_episodes", 10), ("w2_states", 10), ("w2_samples", 2), ("grid", 2), ("seed", 0)):
        values[name] = top.integer(name, default=defaults[name], minimum=low, maximum=MAX_SEED if name == "seed" else 10**7)
    if "notes" in top.raw:
        values["notes"] = top.string("notes")
    values["eval_seeds"] = top.integers("eval_seeds", default=defaults["eval_seeds"], maximum=2**31 - 1)
    if "param_interp" in (top.get("methods", None) or ()):
        raise top.error("methods", "lists param_interp, which needs anchors fine-tuned from a shared start: list it under "
                                   "`shared_start: [surrogate, param_interp]` instead.")
    default_methods = tuple(m for m in defaults["methods"] if m in GRID_METHODS) if is_vector else defaults["methods"]
    values["methods"] = top.names("methods", KNOWN_METHODS, default=default_methods)
    if is_vector:
        _check_grid_fields(top, values["methods"], task)
    values["shared_start"] = top.names("shared_start", SHARED_METHODS, default=(), empty=True)
    if "variants" in top.raw:
        values["variants"] = _read_variants(top)
    if "refine" in top.raw:
        values["refine"] = _read_refine(top, values["methods"])
    if "calibration" in top.raw:
        values["calibration"] = _read_calibration(top)
    return Experiment(name=path.stem, path=path, **values)


def _check_grid_fields(top: Fields, methods: tuple[str, ...], task: str) -> None:
    """On a task that weighs several components: only methods that run on a grid; no shared start, no refining rows."""
    off_grid = [m for m in methods if m not in GRID_METHODS]
    if off_grid:
        raise top.error("methods", f"lists {', '.join(off_grid)}, which the task {task!r} cannot run: it weighs several components, "
                                   f"and on a grid the methods are {', '.join(GRID_METHODS)} (docs/method.md §12).")
    for name, what in (("shared_start", "shared-start anchors"), ("refine", "refining")):
        if top.raw.get(name):
            raise top.error(name, f"is set, but {what} on a weight grid is not built yet (the task {task!r} weighs several "
                                  "components); drop the field.")


def _read_calibration(top: Fields) -> dict[str, int]:
    """``calibration``: ``{per_interval, episodes}``, each checked as ``hti-rl calibrate`` checks it."""
    from hti_rl.deploy.calibrate import DEFAULT_EPISODES, DEFAULT_PER_INTERVAL, MAX_EPISODES, MAX_PER_INTERVAL

    inner = Fields(top.file, top.get("calibration", REQUIRED), where="calibration.")
    inner.allow(("per_interval", "episodes"))
    return {"per_interval": inner.integer("per_interval", default=DEFAULT_PER_INTERVAL, minimum=1, maximum=MAX_PER_INTERVAL),
            "episodes": inner.integer("episodes", default=DEFAULT_EPISODES, minimum=2, maximum=MAX_EPISODES)}


def _read_variants(top: Fields) -> dict[str, dict[str, Any]]:
    """``variants``: ``{name: {CLOTConfig field: value}}``, each checked by building its config."""
    from hti_rl.methods.surrogate import clot_config

    raw = top.get("variants", REQUIRED)
    if not isinstance(raw, dict) or not raw or not all(isinstance(o, dict) for o in (x or {} for x in raw.values())):
        raise top.error("variants", f"is {raw!r}; map variant names to CLOT overrides, e.g. {{full: {{}}, euclidean: {{metric: euclidean}}}}.")
    variants = {}
    for name, overrides in raw.items():
        try:
            clot_config(overrides or {})
        except SpecError as exc:
            raise top.error(f"variants.{name}", f"is not a valid CLOT setting: {exc}") from None
        variants[str(name)] = dict(overrides or {})
    return variants


def _read_refine(top: Fields, methods: tuple[str, ...]) -> tuple[float, ...]:
    """``refine``: distinct budget factors in (0, MAX_BUDGET_FACTOR], with ``deployed`` among the methods (where refining starts)."""
    from hti_rl.training.warm_start import MAX_BUDGET_FACTOR

    raw = top.get("refine", REQUIRED)
    ok = isinstance(raw, list) and raw and all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= MAX_BUDGET_FACTOR
                                              for f in raw) and len(set(raw)) == len(raw)
    if not ok:
        raise top.error("refine", f"is {raw!r}; give distinct budget factors in (0, {MAX_BUDGET_FACTOR:g}], e.g. [0.1, 0.25].")
    if "deployed" not in methods:
        raise top.error("refine", "needs `deployed` among the methods: refining starts from what it deploys.")
    return tuple(float(f) for f in raw)
