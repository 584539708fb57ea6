"""The deployable artifact: the safetensors file format and its safe loader (format.py), the
structural transforms the loader replays (transforms.py), and the byte-level coding of its
tensor streams (coding/)."""
