"""CLOT: Conditional Lagrangian Optimal Transport, the method of docs/method.md §5, in pure torch.

Knows nothing of reinforcement learning: x is a condition, y an output, times the anchors' coordinate.
"""

from hti_rl.clot.fit import CLOTConfig, CLOTData, fit_clot
from hti_rl.clot.model import CLOTModel

__all__ = ["CLOTConfig", "CLOTData", "CLOTModel", "fit_clot"]
