"""Old import path of the torch.ao backend, now compression/quantization/backends/torch_ao.py
(renamed so it no longer reads like the separate `torchao` library's backend). Tests import
`compression.quantization._torch_ao` and patch its attributes, so this path is made the very
same module object: a patch through it reaches the code that reads it."""

import sys

from compression.quantization.backends import torch_ao

sys.modules[__name__] = torch_ao
