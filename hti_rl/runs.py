"""RunDir: every path under ``<run root>/<task>/``, and the provenance written beside each artefact.

Layout (``<task>/shared/`` holds the same for shared-start anchors)::

    anchors/.lock                 held while anchors train, import, record or are checked
    anchors/w=<λ>/                one anchor: model.zip, vecnormalize.pkl, meta.json (written last)
    anchors/w=<λ>/seeds/<i>/      seed i's run with seeds_per_anchor > 1
    anchors/base/                 the shared start (shared-start runs only)
    anchors/cross_eval.json       every anchor evaluated at every anchor weight
    dataset.npz                   the recorded policy dataset
    surrogate.zip                 the fitted surrogate
    retrained/w=<λ>/seed=<i>/     agents retrained from scratch at held-out weights (compare)
    conditioned/f=<F>/            weight-conditioned peers (compare)
    finetuned/w=<λ>/              the shared start fine-tuned at held-out weights (compare)
    compare/<method>.zip          methods fitted by compare
    calibration/<name>/           a surrogate's calibration (``surrogate``: surrogate.zip's): anchors.json,
                                  w=<λ>.json per grid weight, calibration.png
    tb/                           every TensorBoard log of the task

Weights name folders through :func:`weight_label` (``f"{λ:g}"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hti_rl import __version__
from hti_rl.errors import AnchorError

if TYPE_CHECKING:
    from hti_rl.spec.task import TaskSpec

DEFAULT_ROOT = "runs"
"""The run root when none is given (``--run-root``)."""


def weight_label(weight: float) -> str:
    """How a weight names a folder: ``f"{λ:g}"`` (``w=0.1``, ``w=10``)."""
    return f"{weight:g}"


@dataclass(frozen=True)
class RunDir:
    """The run directory of one task: ``<root>/<task>`` (``<root>/<task>/shared`` for shared-start anchors).

    :param path: the directory itself.

    Example::

        run = RunDir.of(spec, "runs")
        run.anchor(0.1) / "model.zip"     # runs/lqr1d/anchors/w=0.1/model.zip
    """

    path: Path

    @classmethod
    def of(cls, spec: TaskSpec, root: str | Path = DEFAULT_ROOT) -> "RunDir":
        """The run directory of ``spec`` under ``root``."""
        path = Path(root) / spec.name
        return cls(path / "shared" if spec.shared_start else path)

    # anchors
    @property
    def anchors(self) -> Path:
        """``anchors/``: the directory locked while anchors train."""
        return self.path / "anchors"

    def anchor(self, weight: float) -> Path:
        """``anchors/w=<λ>``."""
        return self.anchors / f"w={weight_label(weight)}"

    def seed(self, weight: float, seed_index: int) -> Path:
        """``anchors/w=<λ>/seeds/<i>``: seed i's run when ``seeds_per_anchor`` > 1."""
        return self.anchor(weight) / "seeds" / str(seed_index)

    def is_finished(self, weight: float) -> bool:
        """Whether the anchor at ``weight`` has finished (its ``meta.json`` exists)."""
        return (self.anchor(weight) / "meta.json").exists()

    @property
    def base(self) -> Path:
        """``anchors/base``: the shared start."""
        return self.anchors / "base"

    @property
    def cross_eval(self) -> Path:
        """``anchors/cross_eval.json``."""
        return self.anchors / "cross_eval.json"

    # stages
    @property
    def dataset(self) -> Path:
        """``dataset.npz``."""
        return self.path / "dataset.npz"

    @property
    def surrogate(self) -> Path:
        """``surrogate.zip``."""
        return self.path / "surrogate.zip"

    def tb(self, name: str | None = None) -> Path:
        """``tb/`` or ``tb/<name>``: the task's one TensorBoard root."""
        return self.path / "tb" if name is None else self.path / "tb" / name

    # comparison agents and methods
    @property
    def retrained_root(self) -> Path:
        """``retrained/``: the directory locked while retrained agents train."""
        return self.path / "retrained"

    def retrained(self, weight: float, seed_index: int) -> Path:
        """``retrained/w=<λ>/seed=<i>``."""
        return self.retrained_root / f"w={weight_label(weight)}" / f"seed={seed_index}"

    @property
    def conditioned_root(self) -> Path:
        """``conditioned/``: the directory locked while conditioned agents train."""
        return self.path / "conditioned"

    def conditioned(self, factor: float) -> Path:
        """``conditioned/f=<F>``."""
        return self.conditioned_root / f"f={factor:g}"

    @property
    def finetuned_root(self) -> Path:
        """``finetuned/``: the directory locked while the shared start is fine-tuned at held-out weights."""
        return self.path / "finetuned"

    def finetuned(self, weight: float) -> Path:
        """``finetuned/w=<λ>``."""
        return self.finetuned_root / f"w={weight_label(weight)}"

    def calibration(self, name: str = "surrogate") -> Path:
        """``calibration/<name>/``: the calibration of ``surrogate.zip`` (``surrogate``) or of a compare method."""
        return self.path / "calibration" / name.replace("/", "-")

    def calibration_point(self, weight: float, name: str = "surrogate") -> Path:
        """``calibration/<name>/w=<λ>.json``: the candidates' returns at one grid weight."""
        return self.calibration(name) / f"w={weight_label(weight)}.json"

    def method(self, name: str) -> Path:
        """``compare/<method>.zip`` (``/`` in a variant's name becomes ``-``)."""
        return self.path / "compare" / f"{name.replace('/', '-')}.zip"


# ----------------------------------------------------------------------------- provenance
def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour an artefact depends on."""
    import gymnasium
    import stable_baselines3

    return {
        "hti_rl": __version__,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
    }


def read_meta(directory: Path) -> dict[str, Any] | None:
    """``directory/meta.json`` (written last by a finished job), or ``None`` when it does not exist."""
    path = directory / "meta.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AnchorError(f"{path} is not valid JSON ({exc}); delete the file and re-run `hti-rl train-anchors`.") from exc


def spec_hint(spec: TaskSpec) -> str:
    """The spec file to name in a message (``envs/<task>.yaml`` when unknown)."""
    return str(getattr(spec, "path", None) or "envs/<task>.yaml")
