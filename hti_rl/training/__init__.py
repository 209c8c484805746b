"""The training stage: SB3 agents at reward weights (anchors, retrained, conditioned, shared-start), imported agents, and loading them."""
