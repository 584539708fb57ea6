"""SparseLinear, the CSR layer `pruning.sparse_kernel=true` swaps in (see sparse_kernel.py).
A helper module apart from sparse_kernel.py because a class deriving from nn.Module needs torch
when it is made, and discovering the pruning methods (a config check) must not import torch."""

from __future__ import annotations

import warnings
from typing import Any

from compression.core.lazy import nn, torch
from compression.measure import stands_in_for_prunable


def _csr(weight: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.detach().to_sparse_csr()
        return torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(),
                                       csr.values(), csr.shape)


@stands_in_for_prunable
class SparseLinear(nn.Module):
    """y = x W^T + b with W in CSR form. Its state dict holds the dense `weight` (and `bias`)
    like nn.Linear's, so it saves, loads and is measured like one; `weight()` returns the dense
    weight (a method, as quantized layers have, because it is computed)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bias = nn.Parameter(torch.zeros(out_features), requires_grad=False) if bias else None
        # The CSR parts are buffers (counted in memory) but not state: the state is `weight`.
        self._set_weight(torch.zeros(out_features, in_features))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SparseLinear:
        m = cls(linear.in_features, linear.out_features, linear.bias is not None)
        m._set_weight(linear.weight)
        if linear.bias is not None:
            m.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        return m

    def _set_weight(self, weight: torch.Tensor) -> None:
        dtype = self.bias.dtype if self.bias is not None else torch.float32
        csr = _csr(weight.detach().to(dtype))
        self.register_buffer("crow_indices", csr.crow_indices(), persistent=False)
        self.register_buffer("col_indices", csr.col_indices(), persistent=False)
        self.register_buffer("values", csr.values(), persistent=False)
        self._matrix = csr

    def _apply(self, fn: Any, recurse: bool = True) -> SparseLinear:
        """.to() / .double() / ... convert the buffers; the CSR view is rebuilt on them."""
        super()._apply(fn, recurse)
        self._matrix = torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values,
                                               (self.out_features, self.in_features))
        return self

    def weight(self) -> torch.Tensor:
        return self._matrix.to_dense()

    def memory_bytes(self) -> int:
        """What this layer holds: the CSR tensors and the bias (its state dict's dense weight
        exists only while saving)."""
        return sum(t.numel() * t.element_size()
                   for t in (*self.buffers(recurse=False), *self.parameters(recurse=False)))

    @property
    def nnz(self) -> int:
        return self.values.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        cols = x.reshape(-1, self.in_features).t()  # (in, B): CSR (out, in) @ dense (in, B)
        if self.bias is None:
            y = self._matrix @ cols
        else:
            y = torch.addmm(self.bias[:, None], self._matrix, cols)
        return y.t().reshape(*lead, self.out_features)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list, unexpected_keys: list,
                              error_msgs: list) -> None:
        key = prefix + "weight"
        if key in state_dict:
            weight = state_dict[key]
            if tuple(weight.shape) != (self.out_features, self.in_features):
                error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{tuple(weight.shape)}, the shape in current model is "
                                  f"{(self.out_features, self.in_features)}.")
            else:
                self._set_weight(weight)
        else:
            missing_keys.append(key)
        rest = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def __deepcopy__(self, memo: dict) -> SparseLinear:
        """A copy whose CSR view shares storage with its own buffers (a plain deepcopy would
        copy the view separately). Hooks are not copied."""
        twin = SparseLinear(self.in_features, self.out_features, self.bias is not None)
        memo[id(self)] = twin
        twin._set_weight(self.weight())
        if self.bias is not None:
            twin.bias = nn.Parameter(self.bias.detach().clone(), requires_grad=False)
        twin.train(self.training)
        return twin

    def extra_repr(self) -> str:
        density = self.nnz / max(1, self.in_features * self.out_features)
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, density={density:.3f}")
