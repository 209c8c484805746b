"""Stage 0, the envs: Gymnasium wrappers that weigh reward components, and hti-rl's own analytic LQR task. Knows nothing of specs."""
