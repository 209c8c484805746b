"""hti-rl: change a reward weight after training.

Train Stable-Baselines3 policies at a few reward weights (anchors), record their action
distributions, fit a Conditional Lagrangian Optimal Transport (CLOT) surrogate, and deploy a
drop-in SB3 policy at any weight in between without retraining.
"""

__version__ = "0.1.0"
