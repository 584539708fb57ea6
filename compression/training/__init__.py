"""Training: the loops on in-memory tensors (loop.py), the dense baseline trained once and cached
(baseline.py), and the quality metric a run is judged by (quality.py)."""
