"""The spec stage: task specs (envs/*.yaml) and their SB3 hyperparameters, validated into frozen dataclasses."""
