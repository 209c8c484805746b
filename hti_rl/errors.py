"""Errors meant for users: each names the bad value, what is allowed, and the fix."""


class HTIError(ValueError):
    """Base class of every error hti-rl raises on bad input or a bad file."""


class SpecError(HTIError):
    """A task spec (envs/*.yaml) or config file is invalid; the message names the file and field."""


class WeightError(HTIError):
    """A reward weight is NaN, infinite or outside the anchor range."""


class ObservationError(HTIError):
    """An observation has the wrong shape, dtype, or non-finite values."""


class SpaceError(HTIError):
    """An observation or action space is unsupported or does not match the task."""


class FileFormatError(HTIError):
    """A file written by hti-rl is truncated, edited, from another task, or from another version."""


class AnchorError(HTIError):
    """Anchor models are missing, unusable, or failed the quality check."""


class RunLockedError(HTIError):
    """Another hti-rl process holds the lock on a run directory."""
