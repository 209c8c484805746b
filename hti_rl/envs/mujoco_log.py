"""MuJoCo's warnings, handled once per process: the known deprecation silenced, no log file in the user's folder.

MuJoCo's default warning handler prints every warning to the terminal and appends it to
``MUJOCO_LOG.TXT`` in the working directory. With mujoco 4.0 and Gymnasium 1.4 every HalfCheetah or Hopper
env prints ``compiler attribute 'settotalmass' is deprecated …`` when its model compiles, ten or more times
per command. :func:`quiet_mujoco` installs a handler instead (``mujoco.set_mju_user_warning``): the known
deprecations (:data:`KNOWN`) go to this module's logger at DEBUG level, and any other warning becomes a
Python ``RuntimeWarning`` (shown once per message by Python's default filter). Nothing is written to disk.
"""

from __future__ import annotations

import logging
import sys
import warnings

logger = logging.getLogger(__name__)

KNOWN = ("compiler attribute 'settotalmass' is deprecated",)
"""Beginnings of MuJoCo warnings that are known, harmless and not the user's to fix (Gymnasium's model files)."""


_installed = False


def handle_warning(message: str) -> None:
    """MuJoCo's warning hook: a known deprecation is logged at DEBUG, anything else is a ``RuntimeWarning``."""
    text = str(message).strip()
    if text.startswith(KNOWN):
        logger.debug("MuJoCo: %s", text)
    else:
        warnings.warn(f"MuJoCo: {text}", RuntimeWarning, stacklevel=2)


def quiet_mujoco(env_entry_point: object = None) -> bool:
    """Install :func:`handle_warning` as MuJoCo's warning handler, once per process, when the env needs MuJoCo.

    :param env_entry_point: the env's registered entry point; MuJoCo is imported only when it names a
        MuJoCo env (``…mujoco…``) or is already imported.
    :return: whether the handler is installed.
    """
    global _installed
    if _installed:
        return True
    if "mujoco" not in sys.modules and "mujoco" not in str(env_entry_point):
        return False
    try:
        import mujoco
    except ImportError:  # gym.make will say that the env needs it
        return False
    mujoco.set_mju_user_warning(handle_warning)
    _installed = True
    return True
