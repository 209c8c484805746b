"""Stage 1, the spec: task specs (envs/*.yaml) and their SB3 hyperparameters, validated into frozen dataclasses."""
