"""Anchor quality: every anchor evaluated at every anchor weight, and the warnings a surrogate needs.

A surrogate can only be as good as its anchors. After training, each anchor is rolled out once
(``max(spec.eval_episodes, 10)`` deterministic episodes, the same reset seeds for every anchor) and
its per-episode *unweighted* component sums are re-weighed at every anchor weight
(:func:`hti_rl.evaluate.returns_at`): a K×K matrix for K rollout sets. Two checks read it. Because
every anchor starts from the same reset seeds, both compare two anchors *episode by episode* and flag a
pair when the 95% Student-t confidence interval of the mean per-episode difference excludes zero (the
start-state luck that dominates a single anchor's interval cancels in the difference):

- **beaten at its own weight**: anchor j's return at λ_i is above anchor i's own return at λ_i.
  Anchor i was trained to maximise exactly that return, so it failed to learn (or was unlucky).
- **not monotone** (``monotone_weighted_component: true`` in the spec, the default): for i < j, the
  per-episode sum of the weighted component of anchor j (trained at the higher weight) is below
  anchor i's. For optimal policies of ``r₀ + λ·c`` the expected sum of c never decreases as λ grows
  (compare each policy's objective at the other's weight); with a cost (c ≤ 0) it means a higher
  weight spends less of it. Undiscounted sums of discounted-objective policies can break this
  legitimately: turn the check off per task where they do.

Files (``runs/<task>/anchors/``): ``cross_eval.json`` (the matrix, the raw sums, the warnings, and
a hash of every anchor's ``meta.json``, so that a changed anchor makes it stale) and
``cross_eval.png`` (a heat map); TensorBoard logs go to ``runs/<task>/tb/cross_eval``.
:func:`require_good_anchors` is the gate ``hti-rl fit`` passes through.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hti_rl.errors import AnchorError, FileFormatError
from hti_rl.evaluate import ComponentReturns, mean_ci, returns_at, rollout_components
from hti_rl.io import RunLock, atomic_write, sha256_bytes, write_json
from hti_rl.runs import RunDir
from hti_rl.seeds import cross_eval_seed
from hti_rl.threads import stage
from hti_rl.training.store import load_anchor_actor

FORMAT = "hti-rl-cross-eval"


FORMAT_VERSION = 1


MIN_EPISODES = 10


CONFIDENCE = 0.95


logger = logging.getLogger(__name__)


def anchor_hashes(spec: Any, run_root: str | Path = "runs") -> dict[str, str | None]:
    """``{"w=<λ>": SHA-256 (16 hex) of its meta.json, or None when missing}`` for every anchor weight."""
    hashes = {}
    for weight in spec.anchors:
        meta = RunDir.of(spec, run_root).anchor(weight) / "meta.json"
        hashes[f"w={weight:g}"] = sha256_bytes(meta.read_bytes())[:16] if meta.exists() else None
    return hashes


@dataclass(frozen=True)
class CrossEval:
    """Every anchor's rollouts, re-weighed at every anchor weight.

    :param task: task name.
    :param task_fingerprint: the spec's fingerprint when evaluated.
    :param weights: anchor weights ``[K]`` (anchor i was trained at ``weights[i]``).
    :param components: component names, the last axis of ``sums``.
    :param weighted: the component multiplied by λ.
    :param fixed: fixed weights of the other components.
    :param sums: ``[K, E, n_components]`` per-episode unweighted component sums of anchor i.
    :param seed: base reset seed of the E episodes (the same for every anchor).
    :param anchors: ``{"w=<λ>": meta.json hash}`` of the anchors evaluated (see :func:`anchor_hashes`).
    :param monotone: whether the weighted component's sum must be non-decreasing in the anchor weight.
    """

    task: str
    task_fingerprint: str
    weights: tuple[float, ...]
    components: tuple[str, ...]
    weighted: str
    fixed: dict[str, float]
    sums: np.ndarray
    seed: int
    anchors: dict[str, str | None]
    monotone: bool = True

    @property
    def episodes(self) -> int:
        return int(self.sums.shape[1])

    def returns(self, anchor: int, weight: float) -> np.ndarray:
        """Episode returns ``[E]`` of anchor ``anchor`` (an index) at reward weight ``weight``."""
        lengths = np.zeros(self.episodes, dtype=np.int64)  # returns_at does not read them
        return returns_at(ComponentReturns(self.components, self.sums[anchor], lengths), self.weighted, self.fixed, weight)

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [K, K], ci [K, K])``: row i = anchor i, column j = evaluated at ``weights[j]``."""
        stats = [[mean_ci(self.returns(i, w), CONFIDENCE) for w in self.weights] for i in range(len(self.weights))]
        array = np.array(stats)
        return array[..., 0], array[..., 1]

    def weighted_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean [K], ci [K])`` of each anchor's per-episode sum of the unweighted weighted component."""
        column = self.components.index(self.weighted)
        array = np.array([mean_ci(self.sums[i, :, column], CONFIDENCE) for i in range(len(self.weights))])
        return array[:, 0], array[:, 1]

    def beaten(self) -> list[tuple[int, int, float, float]]:
        """``(i, j, mean, ci)`` for every anchor j whose return at λ_i beats anchor i's own there: the
        per-episode difference j − i has mean ``mean`` and 95% CI ``± ci`` above zero."""
        found = []
        for i, own in enumerate(self.weights):
            for j in range(len(self.weights)):
                if j != i:
                    mean, ci = mean_ci(self.returns(j, own) - self.returns(i, own), CONFIDENCE)
                    if mean - ci > 0:
                        found.append((i, j, float(mean), float(ci)))
        return found

    @property
    def warnings(self) -> list[str]:
        """One message per failed check (naming the anchors and the numbers); empty when all pass."""
        mean, ci = self.matrix()
        found = [
            f"anchor w={self.weights[i]:g} is beaten at its own weight λ={self.weights[i]:g} by anchor "
            f"w={self.weights[j]:g}: {mean[j, i]:.4g} ± {ci[j, i]:.3g} against its own {mean[i, i]:.4g} ± {ci[i, i]:.3g}; "
            f"episode by episode (same start states) it scores {diff:.4g} ± {diff_ci:.3g} more (95% CI over "
            f"{self.episodes} episodes)"
            for i, j, diff, diff_ci in self.beaten()
        ]
        if self.monotone:
            wmean, wci = self.weighted_sums()
            column = self.components.index(self.weighted)
            for i, low in enumerate(self.weights):
                for j in range(i + 1, len(self.weights)):
                    diff, diff_ci = mean_ci(self.sums[j, :, column] - self.sums[i, :, column], CONFIDENCE)
                    if diff + diff_ci < 0:
                        found.append(
                            f"the weighted component `{self.weighted}` is not monotone in the anchor weight: anchor "
                            f"w={self.weights[j]:g} sums {wmean[j]:.4g} ± {wci[j]:.3g} per episode, below anchor w={low:g}'s "
                            f"{wmean[i]:.4g} ± {wci[i]:.3g} (episode by episode {diff:.4g} ± {diff_ci:.3g}, 95% CI); an "
                            f"anchor trained at a higher weight should not have less of it (set "
                            f"monotone_weighted_component: false where this is expected)"
                        )
        return found

    # ------------------------------------------------------------------ file
    def to_json(self) -> dict[str, Any]:
        mean, ci = self.matrix()
        wmean, wci = self.weighted_sums()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "task_fingerprint": self.task_fingerprint,
            "weights": list(self.weights),
            "episodes": self.episodes,
            "seed": self.seed,
            "confidence": CONFIDENCE,
            "deterministic": True,
            "return_mean": mean.tolist(),
            "return_ci": ci.tolist(),
            "weighted": self.weighted,
            "weighted_sum_mean": wmean.tolist(),
            "weighted_sum_ci": wci.tolist(),
            "monotone_weighted_component": self.monotone,
            "warnings": self.warnings,
            "anchors": self.anchors,
            "components": list(self.components),
            "fixed": self.fixed,
            "sums": self.sums.tolist(),
        }

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_json` atomically."""
        write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "CrossEval":
        """Read a ``cross_eval.json``.

        :raises FileFormatError: missing, not JSON, another format or version, or inconsistent arrays.
        """
        path = Path(path)
        fix = "run `hti-rl check-anchors <spec> --force` to write it again"
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FileFormatError(f"{path} cannot be read ({exc}); {fix}.") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise FileFormatError(f"{path} is not an hti-rl cross-evaluation of version {FORMAT_VERSION}; {fix}.")
        try:
            cross = cls(
                task=str(raw["task"]),
                task_fingerprint=str(raw["task_fingerprint"]),
                weights=tuple(float(w) for w in raw["weights"]),
                components=tuple(raw["components"]),
                weighted=str(raw["weighted"]),
                fixed={str(k): float(v) for k, v in raw["fixed"].items()},
                sums=np.asarray(raw["sums"], dtype=np.float64),
                seed=int(raw["seed"]),
                anchors=dict(raw["anchors"]),
                monotone=bool(raw["monotone_weighted_component"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FileFormatError(f"{path} misses or mangles field {exc}; {fix}.") from exc
        k, n = len(cross.weights), len(cross.components)
        if cross.sums.ndim != 3 or cross.sums.shape[0] != k or cross.sums.shape[2] != n or cross.weighted not in cross.components:
            raise FileFormatError(f"{path}: sums of shape {cross.sums.shape} do not fit {k} anchors and components {cross.components}; {fix}.")
        return cross


def cross_evaluate(spec: Any, run_root: str | Path = "runs", episodes: int | None = None) -> CrossEval:
    """Roll out every anchor once and keep its per-episode component sums.

    :param spec: the task spec; all its anchors must be trained.
    :param run_root: root of the run directories.
    :param episodes: deterministic episodes per anchor; ``max(spec.eval_episodes, 10)`` when ``None``.
    :raises AnchorError: an anchor is missing or belongs to another version of the spec.
    """
    episodes = int(episodes or max(spec.eval_episodes, MIN_EPISODES))
    seed = cross_eval_seed(spec)
    hashes = anchor_hashes(spec, run_root)
    sums, names = [], None
    for weight in spec.anchors:
        actor = load_anchor_actor(spec, weight, run_root)
        result = rollout_components(actor, lambda w=weight: spec.make_env(w), episodes, seed, deterministic=True)
        names = result.names
        sums.append(result.sums)
    return CrossEval(
        task=spec.name,
        task_fingerprint=spec.fingerprint(),
        weights=tuple(spec.anchors),
        components=tuple(names),
        weighted=spec.reward.weighted,
        fixed=dict(spec.reward.fixed),
        sums=np.stack(sums),
        seed=seed,
        anchors=hashes,
        monotone=spec.monotone_weighted_component,
    )


def stale_reason(spec: Any, run_root: str | Path = "runs") -> str | None:
    """Why ``cross_eval.json`` must be computed again (missing, unreadable, another spec or episode
    count, an anchor's ``meta.json`` changed since), or ``None`` when it is up to date."""
    path = RunDir.of(spec, run_root).cross_eval
    if not path.exists():
        return f"{path} does not exist"
    try:
        cross = CrossEval.load(path)
    except FileFormatError as exc:
        return str(exc)
    if cross.task_fingerprint != spec.fingerprint() or cross.weights != tuple(spec.anchors):
        return f"{path} was written for another version of task {spec.name!r}"
    if cross.episodes != max(spec.eval_episodes, MIN_EPISODES):
        return f"{path} has {cross.episodes} episodes per anchor, the spec asks for {max(spec.eval_episodes, MIN_EPISODES)}"
    changed = [w for w, h in anchor_hashes(spec, run_root).items() if cross.anchors.get(w) != h]
    if changed:
        return f"anchors {', '.join(changed)} changed after {path} was written"
    return None


@stage
def check_anchors(spec: Any, run_root: str | Path = "runs", force: bool = False, log_warnings: bool = True) -> CrossEval:
    """Cross-evaluate the anchors (unless ``cross_eval.json`` is up to date) and write the results.

    Writes ``cross_eval.json`` and ``cross_eval.png`` atomically and logs the matrix to TensorBoard
    (``runs/<task>/tb/cross_eval``), holding the anchors' run lock while it evaluates.

    :param spec: the task spec; all its anchors must be trained.
    :param run_root: root of the run directories.
    :param force: evaluate again even when the file is up to date.
    :param log_warnings: log each failed check (``logging`` warning of ``hti_rl.quality``).
    :return: the cross-evaluation, checked with the spec's ``monotone_weighted_component``.
    :raises AnchorError: an anchor is missing or belongs to another version of the spec.
    :raises RunLockedError: anchors of this task are being trained or recorded.
    """
    path = RunDir.of(spec, run_root).cross_eval
    if force or stale_reason(spec, run_root) is not None:
        with RunLock(RunDir.of(spec, run_root).anchors, "hti-rl check-anchors"):
            cross = cross_evaluate(spec, run_root)
            cross.save(path)
            figure = heatmap(cross)
            with atomic_write(path.with_suffix(".png")) as f:
                figure.savefig(f, format="png", dpi=120)
            _log_tensorboard(cross, RunDir.of(spec, run_root).tb("cross_eval"), figure)
    else:
        cross = dataclasses.replace(CrossEval.load(path), monotone=spec.monotone_weighted_component)
    if log_warnings:
        for message in cross.warnings:
            logger.warning("anchor check: %s", message)
    return cross


def require_good_anchors(spec: Any, run_root: str | Path = "runs", accept: bool = False) -> CrossEval:
    """The gate before a surrogate is fitted: anchors that fail the check are refused.

    Reuses ``cross_eval.json`` when it is up to date, else runs :func:`check_anchors`.

    :param spec: the task spec.
    :param run_root: root of the run directories.
    :param accept: on failed checks, log a warning and go on (``hti-rl fit --accept-anchors``).
    :return: the cross-evaluation.
    :raises AnchorError: a check failed and ``accept`` is false; the message lists the failures and the fixes.
    """
    cross = check_anchors(spec, run_root, log_warnings=False)
    if not cross.warnings:
        return cross
    listed = "\n".join(f"  - {message}" for message in cross.warnings)
    if accept:
        logger.warning("anchors of task %r failed the quality check, used anyway (--accept-anchors):\n%s", spec.name, listed)
        return cross
    where = getattr(spec, "path", None) or "envs/<task>.yaml"
    raise AnchorError(
        f"the anchors of task {spec.name!r} failed the quality check ({RunDir.of(spec, run_root).cross_eval}):\n{listed}\n"
        f"Fix: retrain them with more steps (n_timesteps) or more seeds per anchor (e.g. seeds_per_anchor: 3) in {where} "
        f"and run `hti-rl train-anchors {where} --force`; or pass --accept-anchors to fit on them anyway."
    )


def heatmap(cross: CrossEval) -> Any:
    """A matplotlib figure of the matrix: colour = return relative to the column's best and worst
    anchor (columns differ in scale), text = mean ± CI, own-weight cells outlined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    mean, ci = cross.matrix()
    spread = mean.max(axis=0) - mean.min(axis=0)
    relative = (mean - mean.min(axis=0)) / np.where(spread > 0, spread, 1.0)
    k = len(cross.weights)
    figure = Figure(figsize=(1.6 * k + 2.0, 1.0 * k + 1.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(relative, cmap="RdYlGn", vmin=0.0, vmax=1.0)
    labels = [f"{w:g}" for w in cross.weights]
    ax.set_xticks(range(k), labels)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("evaluated at weight λ")
    ax.set_ylabel("anchor trained at weight")
    ax.set_title(f"{cross.task}: return, mean ± 95% CI ({cross.episodes} episodes)", fontsize=9)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{mean[i, j]:.4g}\n± {ci[i, j]:.2g}", ha="center", va="center", fontsize=7)
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, linewidth=2))
    figure.colorbar(image, ax=ax, label="worst → best anchor in the column")
    figure.tight_layout()
    return figure


def _log_tensorboard(cross: CrossEval, log_dir: Path, figure: Any) -> None:
    """Each anchor's return against the weight index, the heat map and the warnings."""
    from torch.utils.tensorboard import SummaryWriter

    mean, _ = cross.matrix()
    writer = SummaryWriter(str(log_dir))
    try:
        for i, weight in enumerate(cross.weights):
            for j in range(len(cross.weights)):
                writer.add_scalar(f"cross_eval/anchor_w={weight:g}", mean[i, j], global_step=j)
        writer.add_figure("cross_eval/heatmap", figure, close=False)
        writer.add_text("cross_eval/warnings", "\n".join(f"- {m}" for m in cross.warnings) or "none")
    finally:
        writer.close()


def print_report(cross: CrossEval, console: Any = None) -> None:
    """Print the matrix as a rich table (own-weight cells bold, red where beaten; the best anchor
    of each column green) followed by the warnings.

    :param console: a ``rich.console.Console``; a new one on stdout when ``None``.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    mean, ci = cross.matrix()
    wmean, wci = cross.weighted_sums()
    table = Table(title=f"{cross.task}: anchors (rows) at anchor weights (columns), return mean ± 95% CI, {cross.episodes} episodes")
    table.add_column("anchor w")
    for w in cross.weights:
        table.add_column(f"at λ={w:g}", justify="right")
    table.add_column(f"Σ {cross.weighted} / episode", justify="right")
    best = mean.argmax(axis=0)
    beaten = {i for i, *_ in cross.beaten()}
    for i, w in enumerate(cross.weights):
        cells = []
        for j in range(len(cross.weights)):
            style = "green" if best[j] == i else ""
            if i == j:
                style = "bold red" if i in beaten else f"bold {style}".strip()
            text = f"{mean[i, j]:.4g} ± {ci[i, j]:.2g}"
            cells.append(f"[{style}]{text}[/]" if style else text)
        table.add_row(f"{w:g}", *cells, f"{wmean[i]:.4g} ± {wci[i]:.2g}")
    console.print(table)
    for message in cross.warnings:
        console.print(f"[bold red]warning:[/] {escape(message)}", highlight=False)
    if not cross.warnings:
        console.print("anchor check passed: no anchor is beaten at its own weight" + (", weighted component monotone" if cross.monotone else ""))
