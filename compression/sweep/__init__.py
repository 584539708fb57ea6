"""Optuna sweeps for Hydra: search space, study, samplers, the sweep loop, results.

Used through `hydra/sweeper=optuna` (conf/hydra/sweeper/optuna.yaml); the Hydra plugin class in
hydra_plugins/compression_sweeper only delegates to `compression.sweep.sweeper.OptunaSweep`.
"""
