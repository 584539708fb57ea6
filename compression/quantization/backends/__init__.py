"""Quantization backends: the only modules that import a quantization library. torch_ao*.py
wrap `torch.ao.quantization` (FX graph mode static / QAT int8, dynamic int8, the fbgemm /
oneDNN / QNNPACK engines); torchao.py wraps the separate, optional `torchao` library. Nothing is
imported here, and the modes reach torch_ao lazily (`LazyModule`): a config check loads no torch."""
