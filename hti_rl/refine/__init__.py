"""Refining at a weight (``hti-rl refine``, ``hti-rl suggest``): a short training run from the candidate
deployed there, installed as a new anchor (docs/method.md §11)."""
