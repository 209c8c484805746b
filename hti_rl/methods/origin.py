"""Which task spec a policy file was fitted from: recorded at fit time, trusted at deploy time only where safe.

:func:`spec_reference` is what the fit stage writes into a surrogate's header (``spec_file``): the spec
file it was given, relative to the run root when it lies inside it (the demo's
``demo/spec/envs/demo.yaml``), else absolute. A header is data, so :func:`spec_of_policy` turns it into
a path only when that path exists, lies inside the run root the policy file sits in or inside the
repository's ``envs/`` (``../`` and links resolved first), names no code outside hti-rl (only a spec the
user passes with ``--spec``, or one shipped in ``envs/``, may), and loads to a spec of the fingerprint the
header records. Anything else is a :class:`~hti_rl.errors.SpecError` that names ``--spec``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hti_rl.errors import SpecError
from hti_rl.spec.load import load_task
from hti_rl.spec.task import TaskSpec

HEADER_KEY = "spec_file"


def shipped_envs() -> Path:
    """The repository's ``envs/`` folder (the specs that ship with hti-rl)."""
    return Path(__file__).resolve().parents[2] / "envs"


def spec_reference(spec: TaskSpec, run_root: str | Path) -> str:
    """The spec file of ``spec`` as a header records it: relative to ``run_root`` when inside it, else absolute."""
    path, root = Path(spec.path).resolve(), Path(run_root).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def run_root_of(policy_path: str | Path, task: str) -> Path | None:
    """The run root a policy file lies in: the parent of its nearest ancestor folder named ``task``
    (``<root>/<task>/surrogate.zip``, ``<root>/<task>/shared/…``, ``<root>/<task>/compare/…``), or ``None``."""
    for ancestor in list(Path(policy_path).resolve().parents)[:3]:
        if ancestor.name == task:
            return ancestor.parent
    return None


def spec_of_policy(policy_path: str | Path, header: dict[str, Any]) -> TaskSpec:
    """The task spec a policy file names in its header, when it is safe to use (see the module docstring).

    :param policy_path: the policy file (``runs/<task>/surrogate.zip``).
    :param header: its header (:func:`hti_rl.methods.base.read_policy_file`).
    :return: the spec, with the header's shared-start settings applied.
    :raises SpecError: no usable spec; the message says why and names ``--spec``.
    """
    task = str(header.get("task"))
    root = run_root_of(policy_path, task)
    named = header.get(HEADER_KEY)
    candidates: list[tuple[Path, str]] = []
    if isinstance(named, str) and named:
        path = Path(named)
        if not path.is_absolute() and root is not None:
            candidates.append((root / path, f"the spec it was fitted from ({named}, under {root})"))
        elif path.is_absolute():
            candidates.append((path, f"the spec it was fitted from ({named})"))
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", task):
        candidates.append((shipped_envs() / f"{task}.yaml", f"the shipped spec envs/{task}.yaml"))
    reasons = [] if isinstance(named, str) and named else ["its header names no spec file"]
    for path, what in candidates:
        reason = _unusable(path, root)
        if reason is None:
            spec = load_task(path)
            if header.get("shared_start"):  # fitted on shared-start anchors: the spec with the same settings
                spec = spec.with_shared_start(**header["shared_start"])
            if spec.fingerprint() == header.get("task_fingerprint"):
                return spec
            reason = f"it is another version of task {task!r} (fingerprint {spec.fingerprint()}, the file has {header.get('task_fingerprint')})"
        reasons.append(f"{what}: {reason}")
    raise SpecError(f"cannot tell which task spec {policy_path} was fitted with ({'; '.join(reasons)}). "
                    f"Pass the spec with --spec, e.g. --spec envs/{task}.yaml.")


def _unusable(path: Path, root: Path | None) -> str | None:
    """Why a spec path taken from a header may not be used, or ``None`` when it may."""
    if not path.is_file():
        return f"{path} does not exist"
    resolved = path.resolve()
    shipped = resolved.is_relative_to(shipped_envs())
    if not shipped and not (root is not None and resolved.is_relative_to(root.resolve())):
        return f"{path} lies outside the run root{f' {root}' if root else ''} and outside hti-rl's envs/, so it is not read"
    if not shipped:
        code = _named_code(resolved)
        if code:
            return f"{path} names code ({', '.join(code)}), which only a spec you pass yourself may do"
    return None


def _named_code(path: Path) -> list[str]:
    """The ``function`` components of a spec file whose module lies outside hti-rl (read as plain YAML)."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []  # load_task says what is wrong with it
    components = ((raw or {}).get("reward") or {}).get("components") if isinstance(raw, dict) else None
    refs = [entry.get("function") for entry in (components or {}).values() if isinstance(entry, dict)] if isinstance(components, dict) else []
    return [str(r) for r in refs if r is not None and not re.fullmatch(r"hti_rl(\.[A-Za-z0-9_]+)*:[A-Za-z0-9_.]+", str(r))]
