"""rl-zoo3 hyperparameter entries (``agents/<algo>.yml``): validated against the SB3 algorithm and parsed
without ``eval``.

An entry holds the run settings rl-zoo3 adds (``n_timesteps``, ``n_envs``, ``normalize``) and keyword
arguments of the algorithm's constructor. :func:`parse_agent` checks every key against the
constructor's signature, turns ``lin_<x>`` schedules into callables and parses ``policy_kwargs``
strings with :func:`parse_expression` (literals, ``dict(...)``, torch activations and optimisers only).
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

import torch
from stable_baselines3.common.utils import LinearSchedule

from hti_rl.errors import SpecError
from hti_rl.spec.algorithms import ALGOS
from hti_rl.spec.fields import is_finite_number, is_number

ZOO_KEYS = ("n_timesteps", "n_envs", "normalize")
"""rl-zoo3 keys that configure the run rather than the algorithm's constructor."""


SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
"""Keys whose value may be an rl-zoo3 schedule ``lin_<x>`` (linear from x to 0 over training)."""


def parse_agent(agent: dict[str, Any], algo: str, n_timesteps: int | None, where: str) -> dict[str, Any]:
    """An rl-zoo3 entry -> ``{"n_timesteps", "n_envs", "normalize", "algo_kwargs"}``; errors name ``where``."""
    accepted = [p for p in inspect.signature(ALGOS[algo].__init__).parameters if p not in ("self", "env")]
    algo_kwargs: dict[str, Any] = {"policy": "MlpPolicy"}
    run: dict[str, Any] = {"n_timesteps": n_timesteps, "n_envs": 1, "normalize": False}
    for key, value in agent.items():
        if key not in ZOO_KEYS and key not in accepted:
            raise SpecError(f"{where}: field `{key}` is not a {ALGOS[algo].__name__} argument; allowed: {', '.join(ZOO_KEYS + tuple(accepted))}.")
        try:
            if key in SCHEDULE_KEYS and isinstance(value, str) and value.startswith("lin_"):
                value = LinearSchedule(start=float(value[4:]), end=0.0, end_fraction=1.0)
            elif key in ("policy_kwargs", "replay_buffer_kwargs", "normalize") and isinstance(value, str):
                value = parse_expression(value)
        except ValueError as exc:
            raise SpecError(f"{where}: field `{key}` is {value!r}: {exc}") from None
        if key == "n_timesteps":
            if n_timesteps is None:
                run["n_timesteps"] = value
        elif key in ZOO_KEYS:
            run[key] = value
        else:
            algo_kwargs[key] = value
    if "policy_kwargs" in algo_kwargs:
        try:
            check_policy_kwargs(algo_kwargs["policy_kwargs"])
        except ValueError as exc:
            raise SpecError(f"{where}: field `policy_kwargs` {exc}") from None
    if run["n_timesteps"] is None:
        raise SpecError(f"{where}: field `n_timesteps` is missing; add it there or in the task spec.")
    for key in ("n_timesteps", "n_envs"):
        value = run[key]
        if not is_finite_number(value) or not 1 <= value <= 2**62 or not float(value).is_integer():
            raise SpecError(f"{where}: field `{key}` is {str(value)[:40]}; give an integer ≥ 1 and ≤ 2^62.")
        run[key] = int(value)
    if not isinstance(run["normalize"], (bool, dict)):
        raise SpecError(f"{where}: field `normalize` is {run['normalize']!r}; give true, false or a dict of VecNormalize arguments.")
    return {**run, "algo_kwargs": algo_kwargs}


MAX_WIDTH = 16384
"""The widest hidden layer a policy may have (a 16384-wide layer already holds 268M weights when stacked)."""


MAX_LAYER_WEIGHTS = 2**26
"""The most weights one layer of a policy may hold (256 MB of float32): checked before anything is built."""


def check_policy_kwargs(kwargs: Any) -> None:
    """``policy_kwargs`` is a mapping whose ``net_arch`` (a list of widths, or ``{pi: [...], vf: [...], qf: [...]}``)
    holds integers in [1, :data:`MAX_WIDTH`], with at most :data:`MAX_LAYER_WEIGHTS` weights between two layers.

    :raises ValueError: what is wrong, for a message that names where it came from.
    """
    if not isinstance(kwargs, dict):
        raise ValueError(f"is a {type(kwargs).__name__}; give a mapping, e.g. dict(net_arch=[64, 64]).")
    arch = kwargs.get("net_arch")
    if arch is None:
        return
    stacks = list(arch.values()) if isinstance(arch, dict) else [arch]
    for stack in stacks:
        if not isinstance(stack, (list, tuple)) or len(stack) > 64 or \
                not all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_WIDTH for w in stack):
            raise ValueError(f"has net_arch {str(arch)[:200]}; give lists of at most 64 layer widths, each an integer in [1, {MAX_WIDTH}].")
        if any(a * b > MAX_LAYER_WEIGHTS for a, b in zip(stack, stack[1:])):
            raise ValueError(f"has net_arch {str(arch)[:200]}, with a layer of over {MAX_LAYER_WEIGHTS} weights; use narrower layers.")


_MODULE_ALIASES = {"nn": "nn", "th.nn": "nn", "torch.nn": "nn", "optim": "optim", "th.optim": "optim", "torch.optim": "optim"}


def parse_expression(text: str) -> Any:
    """Evaluate an rl-zoo3 hyperparameter string without ``eval``.

    Accepts literals (numbers, strings, True/False/None, lists, tuples, dicts), ``dict(key=value, ...)``,
    torch activation classes (``nn.ReLU``, ``th.nn.Tanh``, ``torch.nn.GELU``) and optimizer classes
    (``th.optim.Adam``), nested freely::

        parse_expression("dict(activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))")

    :param text: the expression.
    :raises ValueError: anything else, naming the part that is not allowed.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a Python expression ({exc.msg})") from None
    return _convert(tree.body)


def _convert(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_convert(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_convert(k): _convert(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) and isinstance(node.operand, ast.Constant):
        value = _convert(node.operand)
        if is_number(value):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if all(kw.arg is not None for kw in node.keywords):
            return {kw.arg: _convert(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Attribute):
        module = _MODULE_ALIASES.get(ast.unparse(node.value))
        cls = getattr(getattr(torch, module), node.attr, None) if module else None
        if module == "nn" and node.attr in torch.nn.modules.activation.__all__:
            return cls
        if module == "optim" and inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer):
            return cls
    raise ValueError(
        f"`{ast.unparse(node)}` is not allowed; use literals, dict(...), nn.<activation> or th.optim.<optimizer>."
    )


