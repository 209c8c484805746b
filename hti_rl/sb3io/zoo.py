"""rl-zoo3 run folders read as data: the env id, env kwargs and hyperparameters a run recorded, never executed.

rl-zoo3's ``train.py`` writes ``<run>/<env>/args.yml`` (its command line, ``env_kwargs`` included) and
``config.yml`` (the hyperparameters) with ``yaml.dump``, so they carry Python tags such as
``!!python/object/apply:collections.OrderedDict``, which ``yaml.safe_load`` refuses and ``yaml.unsafe_load``
would execute. :class:`ZooLoader` reads every tag as the plain data beneath it (an ``OrderedDict``'s list of
pairs becomes a dict; any other tagged node its mapping, list or scalar): no name in the file is imported
or called. :func:`contradictions` compares what a run recorded with the task it is imported into.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hti_rl.errors import AnchorError

log = logging.getLogger("hti_rl.training.importing")  # warnings of an import, under the importer's name

MAX_BYTES = 1_000_000  # rl-zoo3 writes a few kB; a larger file is not one of its records


class ZooLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads unknown tags (rl-zoo3's ``!!python/...``) as plain data, never as objects."""


def _plain(loader: ZooLoader, suffix: str, node: yaml.Node) -> Any:
    """Any tagged node -> its plain content; ``python/object/apply:…OrderedDict`` of pairs -> a dict."""
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        items = loader.construct_sequence(node, deep=True)
        if str(suffix).endswith("OrderedDict") and len(items) == 1 and isinstance(items[0], list) \
                and all(isinstance(p, list) and len(p) == 2 for p in items[0]):
            return {str(k): v for k, v in items[0]}
        return items
    return loader.construct_scalar(node)


ZooLoader.add_multi_constructor("tag:yaml.org,2002:python/", _plain)
ZooLoader.add_multi_constructor("!", _plain)
ZooLoader.add_constructor(None, lambda loader, node: _plain(loader, "", node))


def read_yaml(path: Path) -> Any:
    """A YAML file written by rl-zoo3, as plain data (see :class:`ZooLoader`).

    :raises AnchorError: too large, unreadable or not YAML.
    """
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise AnchorError(f"{path} has {size} bytes; an rl-zoo3 record has a few thousand. Give the run folder rl-zoo3 wrote.")
    try:
        return yaml.load(path.read_text(), Loader=ZooLoader)  # noqa: S506  (ZooLoader is a SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AnchorError(f"{path} cannot be read as rl-zoo3's YAML ({type(exc).__name__}: {exc}).") from None


@dataclass(frozen=True)
class ZooRun:
    """What an rl-zoo3 run recorded about itself.

    :param folder: the folder holding ``args.yml`` / ``config.yml``.
    :param env_id: the ``--env`` it trained on (``None`` when not recorded).
    :param algo: the ``--algo``.
    :param env_kwargs: the ``--env-kwargs`` (and a ``config.yml`` ``env_kwargs`` entry, which rl-zoo3 also honours).
    :param hyperparams: ``config.yml`` as a dict.
    """

    folder: Path
    env_id: str | None
    algo: str | None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    hyperparams: dict[str, Any] = field(default_factory=dict)


def read_zoo_run(run_folder: Path, model_stem: str | None = None) -> ZooRun | None:
    """The records of an rl-zoo3 run folder (``logs/<algo>/<env>_<n>/``), or ``None`` when it has none.

    :param run_folder: the run folder.
    :param model_stem: the model's file name without ``.zip``; its records lie in ``run_folder/<stem>/``.
    :raises AnchorError: a record is unreadable or not a mapping.
    """
    folders = ([run_folder / model_stem] if model_stem else []) + sorted(p.parent for p in run_folder.glob("*/args.yml"))
    folder = next((f for f in folders if (f / "args.yml").is_file() or (f / "config.yml").is_file()), None)
    if folder is None:
        return None
    records = {}
    for name in ("args.yml", "config.yml"):
        data = read_yaml(folder / name) if (folder / name).is_file() else {}
        if not isinstance(data, dict):
            raise AnchorError(f"{folder / name} holds a {type(data).__name__}, not rl-zoo3's mapping of settings.")
        records[name] = data
    args, config = records["args.yml"], records["config.yml"]
    env_kwargs = {**_mapping(config.get("env_kwargs")), **_mapping(args.get("env_kwargs"))}
    env = args.get("env")
    return ZooRun(folder, str(env) if env is not None else None, args.get("algo"), env_kwargs, config)


def _mapping(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def contradictions(run: ZooRun, env_id: str, env_kwargs: dict[str, Any], weight_kwarg: str | None, weight: float) -> list[str]:
    """Where an rl-zoo3 run's records contradict the anchor it is imported as, one message each.

    :param run: the run's records.
    :param env_id: the task's env id.
    :param env_kwargs: the task's env kwargs.
    :param weight_kwarg: the env kwarg that sets the reward weight inside the env (the task's
        ``weight_env_kwarg``), or ``None``.
    :param weight: the anchor weight the user declared.
    """
    where = f"the rl-zoo3 run in {run.folder}"
    found = []
    if run.env_id is not None and run.env_id != env_id:
        found.append(f"{where} trained on {run.env_id}, the task's env is {env_id}")
    for key, value in sorted(run.env_kwargs.items()):
        if key == weight_kwarg:
            if not (_number(value) and math.isclose(float(value), weight, rel_tol=1e-6, abs_tol=1e-12)):
                found.append(f"{where} trained with {key}={value!r} (--env-kwargs), but it is declared as the anchor at "
                             f"weight {weight:g}: import it at weight {value!r}, or give the agent trained at {weight:g}")
        elif key not in env_kwargs:
            found.append(f"{where} trained with {key}={value!r} (--env-kwargs), which the task's env_kwargs do not set")
        elif env_kwargs[key] != value:
            found.append(f"{where} trained with {key}={value!r} (--env-kwargs), the task's env uses {key}={env_kwargs[key]!r}")
    if weight_kwarg and weight_kwarg not in run.env_kwargs:
        found.append(f"{where} did not set {weight_kwarg} (--env-kwargs), so it trained at its env's default weight, "
                     f"not necessarily the declared {weight:g}")
    return found


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def zoo_records(spec: Any, weight: float, folder: Path, stem: str, where: str) -> dict[str, Any]:
    """An rl-zoo3 run's env id and env kwargs (read as data, :mod:`hti_rl.sb3io.zoo`) and where they contradict
    the task or the declared weight, each logged as a warning; empty when the folder has no records."""
    try:
        run = read_zoo_run(folder, stem)
    except AnchorError as exc:
        raise AnchorError(f"{where}: {exc}") from None
    if run is None:
        return {}
    found = contradictions(run, spec.env_id, dict(spec.env_kwargs), getattr(spec, "weight_env_kwarg", None), weight)
    for message in found:
        log.warning("%s: %s", where, message)
    return {"zoo": {"records": str(run.folder), "env": run.env_id, "algo": run.algo, "env_kwargs": json_safe(run.env_kwargs)},
            "warnings": found}


def json_safe(value: Any) -> Any:
    """Plain YAML data as JSON can hold it (keys as strings, anything else as its repr)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def find_zoo_files(folder: Path, where: str = "anchor") -> tuple[Path, Path | None]:
    """An rl-zoo3 run folder (or an hti-rl anchor folder) -> (model zip, vecnormalize.pkl or None).

    The final model ``<env>.zip`` (else ``model.zip``, else ``best_model.zip``); checkpoints
    (``rl_model_*_steps.zip``) are never picked. VecNormalize: ``<env>/vecnormalize.pkl``, else one in the folder.
    """
    zips = sorted(p for p in folder.glob("*.zip") if not p.name.startswith("rl_model_"))
    final = [p for p in zips if p.name != "best_model.zip"]
    if len(final) > 1 and (folder / "model.zip") in final:
        final = [folder / "model.zip"]
    if len(final) > 1:
        raise AnchorError(f"{where}: {folder} holds several models ({', '.join(p.name for p in final)}); give the .zip to import.")
    chosen = final[0] if final else (folder / "best_model.zip" if (folder / "best_model.zip") in zips else None)
    if chosen is None:
        raise AnchorError(f"{where}: no SB3 model (.zip) in {folder}; give an rl-zoo3 run folder (logs/<algo>/<env>_<n>) or the model's .zip.")
    for candidate in (folder / chosen.stem / "vecnormalize.pkl", folder / "vecnormalize.pkl", *sorted(folder.glob("*/vecnormalize.pkl"))):
        if candidate.is_file():
            return chosen, candidate
    return chosen, None
