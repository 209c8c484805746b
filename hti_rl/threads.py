"""One torch thread per process for every pipeline stage, unless the user asks for more.

hti-rl's networks are small: a thread per core gains nothing on them, and where the cores are shared
(other stages, other users, parallel anchor training) spinning OpenMP threads slow torch many times
over. Measured on 2 cores: a 100-step CLOT fit took 5.3 s on one thread and 29.9 s on two while other
work ran; the demo's fit 24 s on one thread, 203 s on two under load. Set ``HTI_RL_THREADS=n`` to give
the stages n threads.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from hti_rl.errors import HTIError

ENV = "HTI_RL_THREADS"
F = TypeVar("F", bound=Callable[..., Any])


def stage_threads() -> int:
    """The torch threads a stage runs on: ``$HTI_RL_THREADS``, else 1.

    :raises HTIError: ``HTI_RL_THREADS`` is not an integer >= 1.
    """
    value = os.environ.get(ENV, "1")
    if not value.strip().isdigit() or int(value) < 1:
        raise HTIError(f"{ENV}={value!r}: must be an integer >= 1 (the torch threads per process; unset it for 1).")
    return int(value)


@contextmanager
def torch_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block on ``threads`` torch threads (default :func:`stage_threads`), then restore the count."""
    import torch

    before = torch.get_num_threads()
    n = stage_threads() if threads is None else threads
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def stage(fn: F) -> F:
    """Decorate a pipeline stage to run on :func:`stage_threads` torch threads."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch_threads():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
