"""Typed reads from one YAML mapping; every error names the file and the field (the one validator of specs and experiments)."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import yaml

from hti_rl.errors import SpecError

REQUIRED: Any = object()


class Fields:
    """Typed reads from one YAML mapping; every error names the file and the field."""

    def __init__(self, file: Path, raw: Any, where: str = ""):
        self.file, self.where = file, where
        if not isinstance(raw, dict):
            raise SpecError(f"{file}: {'field `' + where.rstrip('.') + '`' if where else 'the spec'} must be a mapping, got {raw!r}.")
        self.raw = raw

    def error(self, key: str, message: str) -> SpecError:
        return SpecError(f"{self.file}: field `{self.where}{key}` {message}")

    def allow(self, keys: tuple[str, ...]) -> None:
        unknown = sorted(set(self.raw) - set(keys), key=str)
        if unknown:
            hint = difflib.get_close_matches(str(unknown[0]), keys, n=1)
            raise self.error(
                str(unknown[0]),
                f"is unknown{f' (did you mean `{hint[0]}`?)' if hint else ''}; allowed fields: {', '.join(keys)}.",
            )

    def get(self, key: str, default: Any) -> Any:
        if key in self.raw:
            return self.raw[key]
        if default is REQUIRED:
            raise self.error(key, "is missing; add it.")
        return default

    def string(self, key: str, default: Any = REQUIRED) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"is {value!r}; give a non-empty string.")
        return value

    def choice(self, key: str, allowed: tuple[str, ...], default: Any = REQUIRED) -> str:
        value = self.get(key, default)
        if value not in allowed:
            raise self.error(key, f"is {value!r}; choose one of {', '.join(allowed)}.")
        return value

    def integer(self, key: str, default: Any = REQUIRED, minimum: int | None = None) -> Any:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
            raise self.error(key, f"is {value!r}; give an integer ≥ {minimum}.")
        return value

    def boolean(self, key: str, default: Any = REQUIRED) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"is {value!r}; give true or false.")
        return value

    def floats(self, key: str) -> tuple[float, ...]:
        value = self.get(key, REQUIRED)
        if not isinstance(value, list) or not all(is_number(v) and math.isfinite(v) for v in value):
            raise self.error(key, f"is {value!r}; give a list of finite numbers, e.g. [0.1, 1, 10].")
        return tuple(float(v) for v in value)

    def integers(self, key: str, default: Any = REQUIRED) -> tuple[int, ...]:
        """A non-empty list of distinct integers."""
        value = self.get(key, default)
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value) \
                or len(set(value)) != len(value):
            raise self.error(key, f"is {value!r}; give a non-empty list of distinct integers.")
        return tuple(value)

    def names(self, key: str, allowed: tuple[str, ...], default: Any = REQUIRED, empty: bool = False) -> tuple[str, ...]:
        """A list of names from ``allowed`` (duplicates dropped, order kept)."""
        value = self.get(key, default)
        if not isinstance(value, (list, tuple)) or (not value and not empty) or any(v not in allowed for v in value):
            raise self.error(key, f"is {value!r}; give a {'' if empty else 'non-empty '}list of {', '.join(allowed)}.")
        return tuple(dict.fromkeys(value))

    def mapping(self, key: str, default: Any = REQUIRED) -> dict[str, Any]:
        value = self.get(key, default)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise self.error(key, f"is {value!r}; give a mapping with string keys.")
        return dict(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document in ``path``, parsed safely.

    :param what: what the file is, for the message (e.g. "task spec").
    :raises SpecError: the file is missing or is not valid YAML.
    """
    if not path.is_file():
        raise SpecError(f"{what} {path} does not exist.")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc}); fix the syntax.") from None
