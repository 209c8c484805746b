"""RunDir: every path under ``<run root>/<task>/``, and the provenance written beside each artefact.

Layout (``<task>/shared/`` holds the same for shared-start anchors)::

    anchors/.lock                 held while anchors train, import, record or are checked
    anchors/w=<λ>/                one anchor: model.zip, vecnormalize.pkl, meta.json (written last);
                                  an imported one also actor.pt and vecnormalize.json
    anchors/w=<λ>/seeds/<i>/      seed i's run with seeds_per_anchor > 1
    anchors/base/                 the shared start (shared-start runs only)
    finetuned/w=<λ>/              the shared start fine-tuned at held-out weights (shared-start runs, compare)
    anchors/cross_eval.json       every anchor evaluated at every anchor weight
    dataset.npz                   the recorded policy dataset
    surrogate.zip                 the fitted surrogate
    retrained/w=<λ>/seed=<i>/     agents retrained from scratch at held-out weights (compare)
    conditioned/f=<F>/            weight-conditioned peers (compare)
    compare/<method>.zip          methods fitted by compare
    calibration/<name>/           a surrogate's calibration (``surrogate``: surrogate.zip's): anchors.json,
                                  w=<λ>.json per grid weight, calibration.png
    tb/                           every TensorBoard log of the task

Weights name folders through :func:`weight_label`: ``f"{λ:g}"`` where that reads back as λ exactly,
else the shortest exact form (``w=1.000001``, not ``w=1``), so that two weights never share a folder. A
folder of an earlier hti-rl named ``w=<λ:g>`` is still found when its ``meta.json`` records exactly λ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from hti_rl import __version__
from hti_rl.errors import AnchorError
from hti_rl.io import sha256_bytes, sha256_file
from hti_rl.weights import exact

if TYPE_CHECKING:
    from hti_rl.spec.task import TaskSpec

DEFAULT_ROOT = "runs"
"""The run root when none is given (``--run-root``)."""


def weight_label(weight: float | Sequence[float]) -> str:
    """How a weight names a folder, unique per float: ``f"{λ:g}"`` (``w=0.1``, ``w=10``) where it reads
    back as λ, else ``repr(λ)``, the shortest string that does (``w=1.000001``); a weight vector joins its
    entries' labels with commas (``w=0.1,10``)."""
    if isinstance(weight, (tuple, list)):
        return ",".join(exact(float(w)) for w in weight)
    return exact(weight)


def weight_dir(root: Path, weight: float, inner: str = "") -> Path:
    """``root/w=<label>/inner``; an earlier hti-rl's ``root/w=<λ:g>/inner`` when only it exists and its
    ``meta.json`` records exactly ``weight``."""
    path = root / f"w={weight_label(weight)}" / inner
    if isinstance(weight, (tuple, list)):  # weight vectors came after the legacy names
        return path
    legacy = root / f"w={weight:g}" / inner
    if legacy != path and not path.exists() and _recorded_weight(legacy) == weight:
        return legacy
    return path


def _recorded_weight(directory: Path) -> float | None:
    try:
        weight = json.loads((directory / "meta.json").read_text()).get("weight")
    except (OSError, ValueError, AttributeError):
        return None
    return float(weight) if isinstance(weight, (int, float)) and not isinstance(weight, bool) else None


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
        return weight_dir(self.anchors, weight)

    def anchor_digests(self, weights: tuple[float, ...] | list[float]) -> dict[str, str | None]:
        """``{label: digest}`` of every anchor's files (:func:`anchor_digest`); ``None`` where unfinished."""
        return {weight_label(w): anchor_digest(self.anchor(w)) for w in weights}

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
        return weight_dir(self.retrained_root, weight, f"seed={seed_index}")

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
        return weight_dir(self.finetuned_root, weight)

    def calibration(self, name: str = "surrogate") -> Path:
        """``calibration/<name>/``: the calibration of ``surrogate.zip`` (``surrogate``) or of a compare method."""
        return self.path / "calibration" / name.replace("/", "-")

    def calibration_point(self, weight: float, name: str = "surrogate") -> Path:
        """``calibration/<name>/w=<λ>.json``: the candidates' returns at one grid weight."""
        return self.calibration(name) / f"w={weight_label(weight)}.json"

    # refining
    @property
    def refined_file(self) -> Path:
        """``refined.json``: the anchor weights ``hti-rl refine`` added (:func:`hti_rl.training.store.with_refined_anchors`)."""
        return self.path / "refined.json"

    def refine(self, weight: float, name: str) -> Path:
        """``refine/w=<λ>/<name>``: one refining run at λ (``f=0.25``, or a comparison row's name)."""
        return weight_dir(self.path / "refine", weight, name.replace("/", "-"))

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


ANCHOR_FILES = ("model.zip", "vecnormalize.pkl", "vecnormalize.json", "actor.pt")


def anchor_digest(directory: Path) -> str | None:
    """SHA-256 of what a finished agent acts by: the contents of its files (:data:`ANCHOR_FILES` that
    exist; a zip by its members, so that the same model saved twice hashes alike) and its ``meta.json``'s
    weight and import record; ``None`` without a ``meta.json``. What a later stage records of its input."""
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    parts = [json.dumps({"weight": meta.get("weight"), "imported": meta.get("imported")}, sort_keys=True).encode()]
    for name in ANCHOR_FILES:
        if (directory / name).is_file():
            parts.append(f"{name}:{_zip_digest(directory / name) if name.endswith('.zip') else sha256_file(directory / name)}".encode())
    return sha256_bytes(b"\n".join(parts))


def _zip_digest(path: Path) -> str:
    """SHA-256 over a zip's member names and contents (not its timestamps); the file's bytes if it is no zip."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return sha256_bytes(*(f"{i.filename}:{i.CRC}:{i.file_size}".encode() for i in sorted(zf.infolist(), key=lambda i: i.filename)))
    except (zipfile.BadZipFile, OSError):
        return sha256_file(path)


def read_meta(directory: Path) -> dict[str, Any] | None:
    """``directory/meta.json`` (written last by a finished job), or ``None`` when it does not exist."""
    path = directory / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnchorError(f"{path} is not valid JSON ({exc}); delete the file and re-run `hti-rl train-anchors`.") from None
    if not isinstance(meta, dict):
        raise AnchorError(f"{path} holds a {type(meta).__name__}, not an agent's meta data; delete the file and re-run `hti-rl train-anchors`.")
    for key in ("imported", "shared_start"):  # read with .get() further on: an object or null, nothing else
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise AnchorError(f"{path}: field `{key}` is {repr(meta[key])[:80]}, not an object or null; "
                              "delete the file and re-run `hti-rl train-anchors` (or `hti-rl import-anchors`).")
    return meta


def spec_hint(spec: TaskSpec) -> str:
    """The spec file to name in a message (``envs/<task>.yaml`` when unknown)."""
    return str(getattr(spec, "path", None) or "envs/<task>.yaml")
