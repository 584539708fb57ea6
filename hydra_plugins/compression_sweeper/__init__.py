"""Hydra plugin: the project's Optuna 5 sweeper (`hydra/sweeper=optuna`).

The logic lives in compression.sweep."""
