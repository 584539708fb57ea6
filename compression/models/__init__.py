"""Models: the torch-free model config and registry (config.py), built-in architectures (build.py,
vit.py, charlm.py), the user's checkpoint (checkpoint.py) and the code fingerprints that key the
baseline cache (fingerprint.py).

Importing this package costs nothing: `compression.models.example_user_model`, the target that
`model=custom` and artifacts written before the package layout name, resolves on first use.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "example_user_model":
        from compression.models.build import example_user_model

        return example_user_model
    raise AttributeError(f"module 'compression.models' has no attribute {name!r}")
