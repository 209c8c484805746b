"""Typed reads from one YAML mapping; every error names the file and the field (the one validator of specs and experiments)."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from hti_rl.errors import SpecError

REQUIRED: Any = object()


MAX_INT = 2**62
"""The largest integer a spec field takes (step counts, sizes); seeds are below 2**32."""


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

    def integer(self, key: str, default: Any = REQUIRED, minimum: int | None = None, maximum: int = MAX_INT) -> Any:
        value = self.get(key, default)
        if value is None and default is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum) or value > maximum:
            shown = f"{value!r}" if not isinstance(value, int) or abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
            raise self.error(key, f"is {shown}; give an integer{f' ≥ {minimum}' if minimum is not None else ''} and ≤ {maximum}.")
        return value

    def boolean(self, key: str, default: Any = REQUIRED) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"is {value!r}; give true or false.")
        return value

    def floats(self, key: str) -> tuple[float, ...]:
        value = self.get(key, REQUIRED)
        if not isinstance(value, list) or not all(is_finite_number(v) for v in value):
            raise self.error(key, f"is {_short(value)}; give a list of finite numbers, e.g. [0.1, 1, 10].")
        return tuple(float(v) for v in value)

    def integers(self, key: str, default: Any = REQUIRED, minimum: int = 0, maximum: int = MAX_INT) -> tuple[int, ...]:
        """A non-empty list of distinct integers in [minimum, maximum]."""
        value = self.get(key, default)
        if not isinstance(value, (list, tuple)) or not value or len(set(value)) != len(value) \
                or not all(isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= maximum for v in value):
            raise self.error(key, f"is {_short(value)}; give a non-empty list of distinct integers in [{minimum}, {maximum}].")
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


MAX_YAML_BYTES = 1 << 20
"""The largest spec or hyperparameters file read (1 MiB; specs are a few hundred bytes)."""


MAX_YAML_NODES = 100_000
"""The most values a YAML file may expand to, aliases counted each time they are used."""


def read_yaml(path: Path, needed_by: Path | None = None) -> Any:
    """Read a YAML file safely: at most :data:`MAX_YAML_BYTES`, UTF-8, ``yaml.safe_load``, and at most
    :data:`MAX_YAML_NODES` values once every alias is expanded (an alias bomb of a few hundred bytes
    expands to billions, and every later copy or hash of it would hang).

    :raises SpecError: naming the file and the limit or the fault.
    """
    import yaml

    by = f" (needed by {needed_by})" if needed_by is not None else ""
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise SpecError(f"{path}: {size} bytes, over the limit of {MAX_YAML_BYTES} bytes for a spec file{by}.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}){by}; save the file as UTF-8.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({exc}){by}; fix the syntax.") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to read{by}.") from None
    count = _expanded_size(raw, {}, set())
    if count > MAX_YAML_NODES:
        raise SpecError(f"{path}: expands to over {MAX_YAML_NODES} values once its aliases (*name) are expanded{by}; "
                        "write the values out, or use fewer aliases.")
    return raw


def _expanded_size(value: Any, sizes: dict[int, int], open_: set[int]) -> int:
    """Values in ``value`` with every shared sub-object counted each time it appears (memoised, so a bomb costs
    its distinct nodes only); a cycle counts as unbounded."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key in sizes:
        return sizes[key]
    if key in open_:
        return MAX_YAML_NODES + 1
    open_.add(key)
    total = 1
    for child in (value.items() if isinstance(value, dict) else value):
        parts = child if isinstance(value, dict) else (child,)
        for part in parts:
            total += _expanded_size(part, sizes, open_)
            if total > MAX_YAML_NODES:
                break
        if total > MAX_YAML_NODES:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A number that is finite as a float (an integer like 10**400 is not: it overflows)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."
