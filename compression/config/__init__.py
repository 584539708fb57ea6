"""The run's configuration without torch: `RunConfig`, the typed and validated view of a composed
Hydra config (run.py), and the generator of the YAML files that mirror the config dataclasses
(confgen.py, `python -m compression.config.confgen`)."""
