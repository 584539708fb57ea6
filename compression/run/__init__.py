"""One run: the pipeline that reads top to bottom (pipeline.py) and the Python API on top of it
(api.py: `compress`, `load`)."""
