"""The one list of methods: every name ``hti-rl compare`` and the CLI accept, and what each is.

A method is fitted from the recorded dataset and the anchor actors (the surrogate and the baselines),
calibrated from a fitted surrogate (``deployed``, :mod:`hti_rl.deploy.calibrate`), trained as its own
agent (the weight-conditioned peers), or known in closed form (the LQR optimum).
Adding a baseline is one entry here plus its class and fit function in :mod:`hti_rl.methods.baselines`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from hti_rl.methods.base import AnchoredPolicy
from hti_rl.methods.baselines import (
    CFMPolicy,
    LinearPolicy,
    NearestPolicy,
    ParameterInterpolation,
    RegressionPolicy,
    fit_cfm,
    fit_linear,
    fit_nearest,
    fit_param_interp,
    fit_regression,
)
from hti_rl.methods.conditioned import ConditionedPolicy
from hti_rl.methods.grid import (
    fit_grid_multilinear,
    fit_grid_nearest,
    fit_grid_regression,
)
from hti_rl.methods.surrogate import SurrogatePolicy


@dataclass(frozen=True)
class Method:
    """One method.

    :param name: its name in experiment specs and reports.
    :param kind: ``surrogate`` (CLOT, fitted per variant), ``deployed`` (the first variant calibrated: the
        best measured candidate at each weight), ``baseline`` (fitted from the dataset and anchors), ``peer``
        (an agent trained for it) or ``reference`` (known exactly; LQR only).
    :param policy: the policy class, or ``None`` for a reference.
    :param fit: ``fit(spec, dataset, actors, seed) -> policy`` for a baseline.
    :param on_scratch: may run on anchors trained from scratch (``methods:`` of an experiment).
    :param on_shared: may run on shared-start anchors (``shared_start:`` of an experiment).
    :param budget_factor: a peer's training budget, in units of the anchors' total steps.
    :param on_grid: may run on a task that weighs several components (docs/method.md §12).
    :param fit_grid: a baseline's fit on such a task (same arguments as ``fit``).
    """

    name: str
    kind: Literal["surrogate", "deployed", "baseline", "peer", "reference"]
    policy: type[AnchoredPolicy] | None = None
    fit: Callable[..., AnchoredPolicy] | None = None
    on_scratch: bool = True
    on_shared: bool = False
    budget_factor: float | None = None
    on_grid: bool = False
    fit_grid: Callable[..., AnchoredPolicy] | None = None


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("surrogate", "surrogate", SurrogatePolicy, on_shared=True, on_grid=True),
    Method("deployed", "deployed", SurrogatePolicy, on_grid=True),
    Method("nearest", "baseline", NearestPolicy, fit_nearest, on_shared=True, on_grid=True, fit_grid=fit_grid_nearest),
    Method("linear", "baseline", LinearPolicy, fit_linear, on_shared=True, on_grid=True, fit_grid=fit_grid_multilinear),
    Method("regression", "baseline", RegressionPolicy, fit_regression, on_shared=True, on_grid=True, fit_grid=fit_grid_regression),
    Method("cfm", "baseline", CFMPolicy, fit_cfm, on_shared=True),
    Method("param_interp", "baseline", ParameterInterpolation, fit_param_interp, on_scratch=False, on_shared=True),
    Method("conditioned", "peer", ConditionedPolicy, budget_factor=1.0, on_grid=True),
    Method("conditioned_x2", "peer", ConditionedPolicy, budget_factor=2.0, on_grid=True),
    Method("optimum", "reference", on_grid=True),
)}
"""Every method by name."""


def names(kind: str | None = None, shared: bool = False, grid: bool = False) -> tuple[str, ...]:
    """Method names, in registry order: of one ``kind``, runnable on shared-start (``shared``) or
    from-scratch anchors, and (``grid``) on a task that weighs several components."""
    return tuple(m.name for m in METHODS.values()
                 if (kind is None or m.kind == kind) and (m.on_shared if shared else m.on_scratch) and (m.on_grid or not grid))
