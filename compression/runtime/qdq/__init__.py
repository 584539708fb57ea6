"""torch's static / QAT int8 model carried into ONNX as QDQ (`twin.export_qdq`): the float
stand-ins of torch.ao's quantized modules (`layers`), the traced rewrite that puts them in place
(`twin`), and the ONNX clean-up that leaves ORT int8 kernels to fuse (`graph`). Nothing is
imported here: the runtime package imports its public modules on start-up, and these need torch
(`from compression.runtime.qdq.twin import export_qdq` where it is used)."""
