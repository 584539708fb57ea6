"""The names torch.ao's int8 modes accept (engines, observers, dynamic layer kinds): plain
strings, so that checking a config reads them without importing torch (backends/torch_ao does)."""

ENGINES = ["x86", "fbgemm", "onednn", "qnnpack"]
AUTO = "auto"  # pick among AUTO_CANDIDATES by timing the converted model (pick_engine)
# QNNPACK targets ARM; on x86 CPUs it is not a contender, so `auto` does not try it.
AUTO_CANDIDATES = ["x86", "fbgemm", "onednn"]
DEFAULT_ENGINE = "x86"  # what `auto` falls back to where nothing was timed (a skeleton)

# Layer kinds `quantize_dynamic` has int8 kernels for (Conv has none: use static_int8), with
# their torch.nn class names.
DYNAMIC_LAYER_KINDS = {"linear": "Linear", "lstm": "LSTM", "gru": "GRU"}
OBSERVERS = ["minmax", "histogram", "percentile"]
