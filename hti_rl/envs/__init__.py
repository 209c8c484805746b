"""The envs stage (first in the flow): Gymnasium wrappers that weigh reward components, and hti-rl's own analytic LQR task. Knows nothing of specs."""
