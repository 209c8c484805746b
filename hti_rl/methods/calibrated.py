"""The calibration a surrogate carries: checked against it, deployed by ``set_weight``, stored in its file (docs/method.md §10).

:class:`Calibrated` is mixed into :class:`~hti_rl.methods.surrogate.SurrogatePolicy` (a scalar weight) and
:class:`~hti_rl.methods.grid_surrogate.GridSurrogatePolicy` (a weight vector). Each of those provides
``digest()`` (what a calibration names), ``_checked_weight(weight)`` (its weight check) and, in its
``set_weight``, the actor of the candidate :meth:`Calibrated._candidate` picks.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hti_rl.errors import FileFormatError
from hti_rl.methods.calibration import FIX as CALIBRATION_FIX
from hti_rl.methods.calibration import SURROGATE, Calibration, Deployment


class Calibrated:
    """A surrogate's stored calibration and what it deploys; see the module docstring.

    :cvar plain_name: how messages name the plain policy (``surrogate``, ``grid surrogate``).
    """

    plain_name = "surrogate"

    def _init_calibration(self) -> None:
        """No calibration yet: the plain surrogate everywhere (call before the policy's first ``set_weight``)."""
        self._calibration: Calibration | None = None
        self._use_calibration = True
        self._deployed: tuple[str, Any] = (SURROGATE, None)
        self._stored_calibration: str | None = None  # kept unread with calibrated=False, and written back on save

    @property
    def calibration(self) -> Calibration | None:
        """The stored calibration (``None``: uncalibrated, or loaded with ``calibrated=False``)."""
        return self._calibration

    @property
    def use_calibration(self) -> bool:
        """Deploy the calibration's choices (default); ``False`` forces the plain surrogate at every weight."""
        return self._use_calibration

    @use_calibration.setter
    def use_calibration(self, value: bool) -> None:
        self._use_calibration = bool(value)
        self.set_weight(self.weight)

    @property
    def deployed(self) -> str:
        """The candidate deployed at the current weight: ``surrogate``, ``anchor:<w>`` or ``param_interp``."""
        return self._deployed[0]

    def attach_calibration(self, calibration: Calibration) -> None:
        """Deploy ``calibration``'s choices from now on (it is saved with the policy).

        :raises FileFormatError: the calibration was made for another spec, other anchors or another surrogate.
        """
        mismatch = calibration.matches(self.header.get("task_fingerprint"), self.weights, self.digest())
        if mismatch:
            raise FileFormatError(f"this calibration does not belong to this surrogate: {mismatch}. {CALIBRATION_FIX}")
        self._calibration = calibration
        self.set_weight(self.weight)

    def _candidate(self) -> str:
        """What to deploy at the current weight: the calibration's choice when there is one and it is used, else the surrogate."""
        calibration = getattr(self, "_calibration", None)  # None while the base constructor sets the first weight
        return calibration.deployed_at(self.weight)[0] if calibration is not None and self._use_calibration else SURROGATE

    def deployment(self, weight: Any = None) -> Deployment:
        """What is deployed at ``weight`` (default: the current weight), its estimated return with its 95% CI
        (from episodes that made no choice), and each anchor's estimate there.

        :raises WeightError: as ``set_weight``.
        """
        weight = self.weight if weight is None else self._checked_weight(weight)
        if self._calibration is None and self._stored_calibration is not None:
            return Deployment(weight, SURROGATE, "the plain surrogate, forced: the stored calibration was not read "
                              "(calibrated=False, --plain)", calibrated=False)
        if self._calibration is None:
            return Deployment(weight, SURROGATE, f"uncalibrated: the plain {self.plain_name}; `hti-rl calibrate <spec>` measures "
                              "every candidate and deploys the best", calibrated=False)
        found = self._calibration.deployment(weight)
        if not self._use_calibration:
            found = dataclasses.replace(found, candidate=SURROGATE, why="the plain surrogate, forced (calibration switched off)",
                                        estimate=None)
        return found

    def calibration_state(self) -> dict[str, str]:
        """The method-state entry that stores the calibration (as read, if it was left unread), or none."""
        stored = json.dumps(self._calibration.to_json()) if self._calibration is not None else self._stored_calibration
        return {} if stored is None else {"calibration": stored}  # optional: files without it load uncalibrated

    def read_calibration(self, state: dict[str, Any], calibrated: bool, task: Any) -> None:
        """Attach the calibration stored in ``state`` (``calibrated``), or keep it unread to be written back.

        :raises FileFormatError: it is damaged, of another version, or not this surrogate's.
        """
        stored = state.get("calibration")
        if stored is None:
            return
        if not calibrated:
            self._stored_calibration = str(stored)
            return
        where = f"the calibration of task {task!r}'s {self.plain_name}"
        try:
            raw = json.loads(stored)
        except (TypeError, ValueError) as exc:
            raise FileFormatError(f"{where} is not valid JSON ({exc}). {CALIBRATION_FIX}") from None
        self.attach_calibration(Calibration.from_json(raw, where))
