"""The CLOT surrogate at any weight vector inside a grid of anchors (docs/method.md §12).

The scalar CLOT core is reused unchanged. On a grid of n1 × n2 anchors, one scalar CLOT model is fitted
along axis 1 on every row (the anchors at one λ2 = b_j, ``rows[j]``) and one along axis 2 on every column
(``columns[i]``). At a weight vector in the cell [a_i, a_i+1] × [b_j, b_j+1] with local times (s1, s2):

1. on the cell's two edges along axis 1, the rows move the corner draws to s1:
   r_0 = rows[j](y_ij → y_i+1,j; s1) and r_1 = rows[j+1](y_i,j+1 → y_i+1,j+1; s1);
2. between r_0 and r_1 along axis 2, the two bracketing columns' paths at s2, mixed by s1:
   y = (1 − s1)·columns[i](r_0 → r_1; s2) + s1·columns[i+1](r_0 → r_1; s2).

On every edge of the cell this is the scalar surrogate along that edge (s2 ∈ {0, 1}: the row's path;
s1 ∈ {0, 1}: the column's), so it is exact at the anchors, continuous across cells, and on a one-axis
grid it is the scalar surrogate itself. Deterministic prediction moves the corners' means; stochastic
prediction moves four draws with one shared noise (the W2-optimal coupling of diagonal Gaussians).
Once calibrated (``hti-rl calibrate``), the policy deploys the calibration's choice at each weight vector,
as :class:`~hti_rl.methods.surrogate.SurrogatePolicy` does at a scalar weight.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from hti_rl.actors import AnchorActor
from hti_rl.clot import CLOTConfig, CLOTData, CLOTModel, fit_clot
from hti_rl.dataset import PolicyDataset
from hti_rl.errors import FileFormatError, SpecError
from hti_rl.methods.calibrated import Calibrated
from hti_rl.methods.calibration import Calibration, anchor_name, state_digest
from hti_rl.methods.grid import GridPolicy, grid_arguments
from hti_rl.spec.task import TaskSpec
from hti_rl.threads import stage

MAX_AXES = 2


class GridSurrogatePolicy(Calibrated, GridPolicy):
    """hti-rl's policy at any weight vector of a 1- or 2-axis grid: scalar CLOT paths along the rows, then
    along the columns between the results (module docstring).

    :param rows: one CLOT model per axis-2 anchor (per axis-1 line of anchors), fitted over axis 1's times.
    :param columns: one CLOT model per axis-1 anchor, fitted over axis 2's times (none on a 1-axis grid).
    :param calibration: the stored calibration (``hti-rl calibrate``), or ``None``: the plain surrogate everywhere.
    :param base: the :class:`GridPolicy` arguments.

    Example::

        policy = AnchoredPolicy.load("runs/lqr2w/surrogate.zip")
        policy.set_weight((0.3, 3.0))
        action, _ = policy.predict(obs, deterministic=True)
    """

    plain_name = "grid surrogate"

    def __init__(self, *args: Any, rows: Sequence[CLOTModel], columns: Sequence[CLOTModel], calibration: Calibration | None = None,
                 **base: Any):
        self._init_calibration()
        super().__init__(*args, **base)
        shape = self.grid.shape
        expected = (1, 0) if len(shape) == 1 else (shape[1], shape[0])
        if len(shape) > MAX_AXES or (len(rows), len(columns)) != expected:
            raise FileFormatError(f"a grid surrogate on a {self.grid.shape_text()} grid needs {expected[0]} row and {expected[1]} "
                                  f"column CLOT models, got {len(rows)} and {len(columns)}; refit it with `hti-rl fit`.")
        for kind, models, a in (("row", rows, 0), ("column", columns, len(shape) - 1)):
            axis = self.grid.axes[a]
            for i, model in enumerate(models):
                model.check_times(list(axis.times), f"those of the {self.grid.names[a]} axis ({kind} model {i}; its anchors "
                                                    f"{list(axis.anchors)} on the {axis.scale} scale)")
        self.rows = nn.ModuleList(rows)
        self.columns = nn.ModuleList(columns)
        if calibration is not None:
            self.attach_calibration(calibration)

    # ------------------------------------------------------------ calibration (the rest: methods/calibrated.py)
    def digest(self) -> str:
        """The identity of this surrogate's parameters (CLOT models and anchor actors) that a calibration names."""
        return state_digest({"rows": [m.state() for m in self.rows], "columns": [m.state() for m in self.columns],
                             "actors": [a.state() for a in self.actors]})

    def _checked_weight(self, weight: Any) -> tuple[float, ...]:
        return self.grid.check(weight, self.allow_extrapolation)

    def set_weight(self, weight: Any) -> None:
        """Deploy at the weight vector: the calibration's choice there when calibrated (an anchor, or the surrogate).

        :raises WeightError: as :meth:`GridPolicy.set_weight`.
        """
        super().set_weight(weight)
        candidate = self._candidate()
        names = [anchor_name(w) for w in self.weights]
        self._deployed = (candidate, self.actors[names.index(candidate)] if candidate in names else None)

    def _predict(self, observation: Tensor, deterministic: bool = False) -> Tensor:
        """obs [B, C] -> env actions [B, D]: the deployed anchor's, else the grid surrogate's."""
        actor = self._deployed[1]
        if actor is not None:
            obs = observation.float().reshape(observation.shape[0], -1)
            return actor.to_env_action(self.anchor_draw(actor, obs, deterministic)[0])
        return super()._predict(observation, deterministic)

    def _inside(self, obs: Tensor, x: Tensor, index: tuple[int, ...], s: tuple[float, ...], deterministic: bool) -> Tensor:
        y = self.corners(obs, index, deterministic)
        if self.grid.dim == 1:
            return along(self.rows[0], y[(0,)], y[(1,)], x, s[0])
        i, j = index
        s1, s2 = s
        r0 = along(self.rows[j], y[(0, 0)], y[(1, 0)], x, s1)
        r1 = along(self.rows[j + 1], y[(0, 1)], y[(1, 1)], x, s1)
        if s2 == 0.0:
            return r0
        if s2 == 1.0:
            return r1
        out = None
        for column, share in ((i, 1.0 - s1), (i + 1, s1)):
            if share != 0.0:
                part = share * along(self.columns[column], r0, r1, x, s2)
                out = part if out is None else out + part
        return out

    def method_state(self) -> dict[str, Any]:
        return {"rows": [m.state() for m in self.rows], "columns": [m.state() for m in self.columns], **self.calibration_state()}

    @classmethod
    def from_method_state(cls, state: dict[str, Any], **base: Any) -> "GridSurrogatePolicy":
        """Rebuild; ``base["calibrated"]`` (default true) reads the stored calibration, false ignores it.

        :raises FileFormatError: the stored calibration is damaged, of another version, or not this surrogate's.
        """
        calibrated = bool(base.pop("calibrated", True))
        policy = cls(rows=[CLOTModel.from_state(m) for m in state["rows"]],
                     columns=[CLOTModel.from_state(m) for m in state["columns"]], **base)
        policy.read_calibration(state, calibrated, base.get("header", {}).get("task"))
        return policy


def along(model: CLOTModel, y0: Tensor, y1: Tensor, x: Tensor, s: float) -> Tensor:
    """The point at local time ``s`` of ``model``'s path from y0 to y1 at x: ``CLOTModel.push`` in endpoint mode
    with the local time given rather than found from a time (no search: the weight's cell is known, and the
    graph exports to ONNX). y0, y1 [B, D], x [B, C] -> [B, D]; exactly y0 at s = 0 and y1 at s = 1."""
    z0, z1 = model.standardise(y0), model.standardise(y1)
    knots = model.path_net(z0, z1, x)
    b, _ = model.basis(torch.full((y0.shape[0],), float(s)))
    return y0 + model.y_scale * (s * (z1 - z0) + torch.einsum("bn,bnd->bd", b, knots))


def check_grid_config(spec: TaskSpec, config: CLOTConfig) -> None:
    """:raises SpecError: more than 2 weight axes, or a CLOT mode other than endpoint."""
    if spec.grid.dim > MAX_AXES:
        raise SpecError(f"{spec.path}: the CLOT surrogate composes at most {MAX_AXES} weight axes, and this task weighs "
                        f"{spec.grid.dim} ({', '.join(spec.grid.names)}); weigh at most 2 components, or use the grid "
                        "baselines (multilinear, nearest, regression).")
    if config.mode != "endpoint":
        raise SpecError(f"a grid surrogate moves between given ends, so it needs CLOT mode 'endpoint', not {config.mode!r}; "
                        "drop `--set mode=...`.")


@stage
def fit_grid_policy(
    spec: TaskSpec,
    dataset: PolicyDataset,
    actors: list[AnchorActor],
    config: CLOTConfig,
    log_dir: str | None = None,
    progress: bool = True,
) -> GridSurrogatePolicy:
    """Fit one scalar CLOT model per grid row and column and wrap them with the anchor actors (not saved).

    :param spec: a task (a scalar task gives the 1-axis grid: one model, the scalar surrogate's).
    :param dataset: the anchors' dataset, anchors in grid order (obs [N, C], samples [K, N, M, D]).
    :param actors: one anchor actor per grid point, in grid order.
    :param config: CLOT settings, shared by every model (same seed).
    :param log_dir: TensorBoard directory; each model logs to ``row<j>`` / ``column<i>`` below it.
    """
    check_grid_config(spec, config)
    grid = spec.grid
    base = grid_arguments(spec, dataset, actors, config.seed, "clot")
    x = torch.from_numpy((dataset.obs - base["x_mean"]) / base["x_std"])
    samples = torch.from_numpy(dataset.samples)
    started = time.perf_counter()

    def one(times: Sequence[float], y: Tensor, name: str) -> CLOTModel:
        data = CLOTData(x=x, times=torch.tensor(times, dtype=torch.float32), y=y)
        return fit_clot(data, config, log_dir=None if log_dir is None else f"{log_dir}/{name}", progress=progress)

    if grid.dim == 1:
        rows, columns = [one(grid.axes[0].times, samples, "row0")], []
    else:
        cube = samples.reshape(*grid.shape, *samples.shape[1:])  # [n1, n2, N, M, D]
        rows = [one(grid.axes[0].times, cube[:, j], f"row{j}") for j in range(grid.shape[1])]
        columns = [one(grid.axes[1].times, cube[i], f"column{i}") for i in range(grid.shape[0])]
    base["header"].update(clot_config=dataclasses.asdict(config), fit_seconds=round(time.perf_counter() - started, 2))
    return GridSurrogatePolicy(rows=rows, columns=columns, **base)
