"""The surrogate file (``surrogate.zip``): a zip of ``header.json`` and a tensors-only ``payload.pt``.

Format version 2: the header's ``checksum`` is the SHA-256 of the header's canonical JSON (every
field but ``checksum``, keys sorted) followed by the payload's bytes, so that an edit of either part
is refused. Every header field is checked for type and range on load (:func:`check_header`) before
any of it is used; sizes are bounded before anything is read. Version 1 files (only the payload was
covered) are refused with the command that re-creates them.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from gymnasium import spaces

from hti_rl import __version__
from hti_rl.errors import FileFormatError
from hti_rl.io import atomic_write, sha256_bytes
from hti_rl.spec.fields import is_finite_number
from hti_rl.spec.load import name_problem
from hti_rl.weights import SCALES

FILE_FORMAT = "hti-rl-surrogate"
FILE_VERSION = 2
MAX_HEADER_BYTES = 1 << 20  # 1 MiB: a header is a few kB
MAX_PAYLOAD_BYTES = 1 << 30  # 1 GiB: anchors and CLOT nets of a MuJoCo task take a few MB
MAX_SPACE_SIZE = 1 << 16  # numbers in an observation or action space
FIX = "Re-create it with `hti-rl fit <spec> --force`."


def header_checksum(header: dict[str, Any], blob: bytes) -> str:
    """SHA-256 of ``header`` (without ``checksum``, canonical JSON) and the payload ``blob``."""
    body = {k: v for k, v in header.items() if k != "checksum"}
    return sha256_bytes(json.dumps(body, sort_keys=True).encode(), b"\0", blob)


def write_policy_file(path: str | Path, header: dict[str, Any], blob: bytes) -> None:
    """Write ``header`` (its ``checksum`` filled in) and ``blob`` as a surrogate zip, atomically."""
    header = {**header, "checksum": header_checksum(header, blob)}
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("header.json", json.dumps(header, indent=2, sort_keys=True))
        zf.writestr("payload.pt", blob)


def read_policy_file(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """Open a policy zip, check sizes, format, version, checksum and every header field -> (header, payload bytes).

    :raises FileFormatError: missing, oversized, truncated, edited, or another version's file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no surrogate file at {path}. Fit one with `hti-rl fit <spec>`.")
    if path.stat().st_size > MAX_HEADER_BYTES + MAX_PAYLOAD_BYTES + (1 << 16):
        raise FileFormatError(f"{path} is {path.stat().st_size} bytes, over the {MAX_PAYLOAD_BYTES >> 20} MiB a surrogate file may hold. {FIX}")
    try:
        with zipfile.ZipFile(path) as zf:
            header_bytes = _member(zf, "header.json", MAX_HEADER_BYTES, path)
            blob = _member(zf, "payload.pt", MAX_PAYLOAD_BYTES, path)
        header = json.loads(header_bytes)
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, RecursionError) as exc:
        raise FileFormatError(f"{path} is truncated or not a surrogate file ({type(exc).__name__}: {str(exc)[:200]}). {FIX}") from None
    if not isinstance(header, dict):
        raise FileFormatError(f"{path}: header.json holds a {type(header).__name__}, not a surrogate header. {FIX}")
    if header.get("format") != FILE_FORMAT:
        raise FileFormatError(f"{path} is not an hti-rl surrogate file (format {_short(header.get('format'))}). {FIX}")
    version = header.get("format_version")
    if version == 1:
        raise FileFormatError(f"{path} was written by an older hti-rl (surrogate format version 1), whose checksum does not "
                              f"cover the header; this hti-rl ({__version__}) reads version {FILE_VERSION}. {FIX}")
    if version != FILE_VERSION:
        raise FileFormatError(f"{path} has surrogate format version {_short(version)}; this hti-rl ({__version__}) reads version {FILE_VERSION}. {FIX}")
    if header.get("checksum") != header_checksum(header, blob):
        raise FileFormatError(f"{path} was modified after it was written (checksum mismatch of its header or payload). {FIX}")
    check_header(header, path)
    return header, blob


def _member(zf: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    """The bytes of member ``name``, refused before reading when its declared size is over ``limit``."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise FileFormatError(f"{path}: {name} declares {info.file_size} bytes, over the limit of {limit} bytes. {FIX}")
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileFormatError(f"{path}: {name} holds over {limit} bytes, the limit. {FIX}")
    return data


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------- header fields
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)




def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _weights_ok(v: Any) -> bool:
    if isinstance(v, list) and v and isinstance(v[0], list):  # a grid: anchor vectors (their grid is checked on load)
        return (2 <= len(v) <= 1024 and all(isinstance(p, list) and len(p) == len(v[0]) and 1 <= len(p) <= 8 for p in v)
                and all(is_finite_number(w) for p in v for w in p))
    return (isinstance(v, list) and 2 <= len(v) <= 1024 and all(is_finite_number(w) for w in v)
            and all(b > a for a, b in zip(v, v[1:])))


def _scale_ok(v: Any) -> bool:
    return v in SCALES or (isinstance(v, list) and 1 <= len(v) <= 8 and all(s in SCALES for s in v))


def _shared_start_ok(v: Any) -> bool:
    return (isinstance(v, dict) and set(v) == {"weight", "base_steps", "finetune_steps"} and is_finite_number(v["weight"])
            and all(_is_int(v[k]) and 1 <= v[k] < 2**63 for k in ("base_steps", "finetune_steps")))


# field -> (check, what is allowed); required fields first, then optional ones (None allowed where said)
REQUIRED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "hti_rl_version": (lambda v: isinstance(v, str), "a string"),
    "policy_class": (lambda v: isinstance(v, str) and v.isidentifier(), "a class name"),
    "weights": (_weights_ok, "a list of 2 to 1024 strictly increasing finite numbers (or of weight vectors)"),
    "weight_scale": (_scale_ok, f"one of {', '.join(SCALES)} (or a list of them, one per axis)"),
    "observation_space": (lambda v: isinstance(v, dict), "a Box description"),
    "action_space": (lambda v: isinstance(v, dict), "a Box description"),
    "task": (lambda v: isinstance(v, str) and name_problem(v) is None, "a task name (letters, digits, '_', '.', '-'; not '.' or '..')"),
    "task_fingerprint": (lambda v: isinstance(v, str) and len(v) <= 64, "a fingerprint string"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**63, "an integer in [0, 2^63)"),
}
OPTIONAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "method": (lambda v: isinstance(v, str), "a string"),
    "dataset_sha256": (_opt(lambda v: isinstance(v, str) and len(v) == 64), "a SHA-256 hex string or null"),
    "anchor_sha256": (_opt(lambda v: isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values())),
                      "null or a mapping of anchor hashes"),
    "versions": (lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "a mapping of version strings"),
    "shared_start": (_opt(_shared_start_ok), "null or {weight, base_steps, finetune_steps}"),
    "clot_config": (lambda v: isinstance(v, dict), "a mapping"),
    "fit_seconds": (lambda v: is_finite_number(v) and v >= 0, "a number ≥ 0"),
    "losses": (lambda v: isinstance(v, list) and all(is_finite_number(x) for x in v), "a list of numbers"),
    "compare_key": (lambda v: isinstance(v, str), "a string"),
    "budget_factor": (lambda v: is_finite_number(v) and v > 0, "a number > 0"),
    "weight_names": (lambda v: isinstance(v, list) and 1 <= len(v) <= 8 and all(isinstance(n, str) for n in v), "a list of names"),
}


def check_header(header: dict[str, Any], path: Path | str) -> None:
    """Every field's type and range; the spaces as Boxes of bounded size.

    :raises FileFormatError: naming the field, its value and what is allowed.
    """
    for table, required in ((REQUIRED, True), (OPTIONAL, False)):
        for key, (ok, allowed) in table.items():
            if key not in header:
                if required:
                    raise FileFormatError(f"{path}: header field `{key}` is missing. {FIX}")
                continue
            if not ok(header[key]):
                raise FileFormatError(f"{path}: header field `{key}` is {_short(header[key])}; expected {allowed}. {FIX}")
    vectors = isinstance(header["weights"][0], list)
    if vectors != isinstance(header["weight_scale"], list) or (vectors and len(header["weight_scale"]) != len(header["weights"][0])):
        raise FileFormatError(f"{path}: header fields `weights` and `weight_scale` disagree ({_short(header['weights'])}, "
                              f"{_short(header['weight_scale'])}): weight vectors need one scale per axis. {FIX}")
    if vectors and any(s == "log" and min(p[i] for p in header["weights"]) <= 0 for i, s in enumerate(header["weight_scale"])):
        raise FileFormatError(f"{path}: header field `weights` holds a weight ≤ 0 on a log axis. {FIX}")
    if not vectors and header["weight_scale"] == "log" and header["weights"][0] <= 0:
        raise FileFormatError(f"{path}: header field `weights` is {header['weights']}; a log weight scale needs weights > 0. {FIX}")
    for key in ("observation_space", "action_space"):
        try:
            box_from_json(header[key])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise FileFormatError(f"{path}: header field `{key}` is not a usable Box ({type(exc).__name__}: {str(exc)[:200]}). {FIX}") from None


def box_to_json(box: spaces.Box) -> dict[str, Any]:
    return {"low": box.low.tolist(), "high": box.high.tolist(), "shape": list(box.shape), "dtype": str(box.dtype)}


def box_from_json(d: Any) -> spaces.Box:
    """A Box from :func:`box_to_json`; its shape, dtype and bounds checked before any array is built.

    :raises ValueError: not such a description, over :data:`MAX_SPACE_SIZE` numbers, or low > high.
    """
    if not isinstance(d, dict) or set(d) != {"low", "high", "shape", "dtype"}:
        raise ValueError("expected the keys low, high, shape, dtype")
    shape, dtype = d["shape"], d["dtype"]
    if not (isinstance(shape, list) and 1 <= len(shape) <= 8 and all(_is_int(n) and n >= 1 for n in shape)):
        raise ValueError(f"shape {_short(shape)} is not a list of 1 to 8 positive integers")
    size = math.prod(shape)
    if size > MAX_SPACE_SIZE:
        raise ValueError(f"shape {shape} holds {size} numbers, over the limit of {MAX_SPACE_SIZE}")
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype {_short(dtype)} is not float32 or float64")
    bounds = []
    for key in ("low", "high"):
        flat = np.asarray(d[key], dtype=np.float64).reshape(-1) if isinstance(d[key], list) else None
        if flat is None or flat.size != size or np.isnan(flat).any():
            raise ValueError(f"{key} is not {size} numbers")
        bounds.append(flat.reshape(shape).astype(dtype))
    if np.any(bounds[0] > bounds[1]):
        raise ValueError("low exceeds high")
    return spaces.Box(low=bounds[0], high=bounds[1], dtype=np.dtype(dtype))
