"""The methods stage: drop-in SB3 policies at any weight (the CLOT surrogate, baselines, peers) and how each is fitted.

Each policy class registers itself with :class:`~hti_rl.methods.base.AnchoredPolicy` when its module is imported;
importing them here lets ``AnchoredPolicy.load`` read any hti-rl policy file (a scalar or grid surrogate, a
baseline, a peer) without its caller importing the class's module first.
"""

from hti_rl.methods import baselines, conditioned, grid, grid_surrogate, surrogate  # noqa: F401
